"""Shadow page tables: the only page tables Unicorn ever walks.

The real CPU always runs with paging on, on tables the monitor owns, so that the monitor hole
(supervisor-only in every shadow) is out of the guest's reach whatever the guest does; QEMU,
and so Unicorn, does not enforce segment limits, so segment truncation alone would not do.
While the guest's own paging is off, the shadow maps guest RAM one to one.

plex86 discovers the guest's page tables on demand: the shadow starts empty, every first
access to a page faults into the monitor, which walks the guest's tables (guest_paging.walk),
updates the guest's accessed/dirty bits as the processor would, and fills one shadow entry.
A page whose dirty bit is clear is mapped read-only so that the first write faults too and the
monitor can set D. Pages holding the guest's descriptor tables are mapped read-only too, so
that the monitor notices when the guest rewrites a descriptor. Faults the guest must see are
returned to the caller to reflect.

There is one shadow root per privilege view. The guest kernel (virtual ring 0) and guest user
code (virtual ring 3) both run at real CPL 3, so the ring-0 root maps every page the guest
maps, user-accessible; the ring-3 root maps only the guest's user pages, so that a user access
to a supervisor page faults exactly as it would on bare metal. Like a TLB, the shadow is
flushed on CR3 writes and changes of CR0.PG/CR0.WP/CR4.PSE, and one entry is dropped by
INVLPG. The top page directory entry maps the monitor hole, supervisor-only, in every root.
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from .descriptors import MONITOR_HOLE
from .guest_paging import FRAME, P, U, W, PageFault, Translation, ad_updates, walk

PAGE = 4096
HOLE_PDE = MONITOR_HOLE >> 22


class ShadowFull(Exception):
    """The pool of shadow page tables is exhausted."""


@dataclass
class ShadowStats:
    fills: int = 0
    dirty: int = 0
    flushes: int = 0
    invlpgs: int = 0
    reflects: int = 0


@dataclass
class ShadowRoot:
    """One shadow page directory and the shadow page tables hanging off it."""

    pd_addr: int
    tables: dict[int, int] = field(default_factory=dict)   # PDE index -> shadow PT address


class ShadowMmu:
    def __init__(self, hole: memoryview, ram: memoryview, ram_size: int, *, pool_offset: int,
                 pool_pages: int, root_offsets: tuple[int, int], hole_pt_offset: int,
                 emit: Callable[..., None], flush_tlb: Callable[[], None]) -> None:
        self._hole = hole
        self._ram = ram
        self._ram_size = ram_size
        self._emit = emit
        self._flush_tlb = flush_tlb
        self._free = [MONITOR_HOLE + pool_offset + i * PAGE for i in range(pool_pages)]
        self.roots = (ShadowRoot(MONITOR_HOLE + root_offsets[0]),
                      ShadowRoot(MONITOR_HOLE + root_offsets[1]))
        self.stats = ShadowStats()
        # The monitor's own page table: the hole, identity-mapped, supervisor read/write.
        hole_pt = MONITOR_HOLE + hole_pt_offset
        for i in range(1024):
            self._put(hole_pt + 4 * i, (MONITOR_HOLE + i * PAGE) | P | W)
        for root in self.roots:
            self._clear_page(root.pd_addr)
            self._put(root.pd_addr + 4 * HOLE_PDE, hole_pt | P | W)
        self.paging = False
        self.cr3 = 0
        self.wp = False
        self.pse = False
        self.protected: frozenset[int] = frozenset()

    # -- raw access ---------------------------------------------------------------------
    def _put(self, addr: int, value: int) -> None:
        struct.pack_into("<I", self._hole, addr - MONITOR_HOLE, value)

    def _get(self, addr: int) -> int:
        return struct.unpack_from("<I", self._hole, addr - MONITOR_HOLE)[0]

    def _clear_page(self, addr: int) -> None:
        off = addr - MONITOR_HOLE
        self._hole[off:off + PAGE] = bytes(PAGE)

    def read_guest_u32(self, paddr: int) -> int:
        if paddr + 4 > self._ram_size:
            return 0xFFFFFFFF  # open bus: a page-table entry outside RAM reads all ones
        return struct.unpack_from("<I", self._ram, paddr)[0]

    def _write_guest_u32(self, paddr: int, value: int) -> None:
        if paddr + 4 <= self._ram_size:
            struct.pack_into("<I", self._ram, paddr, value)

    # -- configuration --------------------------------------------------------------------
    def root(self, ring3: bool) -> ShadowRoot:
        return self.roots[1 if ring3 else 0]

    def configure(self, paging: bool, cr3: int, wp: bool, pse: bool, eip: int,
                  cause: str) -> None:
        """A new CR3 or paging mode: like a TLB, drop every shadow entry."""
        self.paging, self.cr3, self.wp, self.pse = paging, cr3, wp, pse
        self.flush(eip, cause)

    def flush(self, eip: int, cause: str) -> None:
        for root in self.roots:
            for index, table in root.tables.items():
                self._put(root.pd_addr + 4 * index, 0)
                self._free.append(table)
            root.tables.clear()
        self.stats.flushes += 1
        self._flush_tlb()
        self._emit("flush", eip, cr3=self.cr3, cause=cause)

    def invlpg(self, vaddr: int, eip: int) -> None:
        index = vaddr >> 22
        for root in self.roots:
            table = root.tables.get(index)
            if table is not None:
                self._put(table + 4 * ((vaddr >> 12) & 0x3FF), 0)
        self.stats.invlpgs += 1
        self._flush_tlb()
        self._emit("invlpg", eip, vaddr=vaddr)

    # -- faults ---------------------------------------------------------------------------
    def guest_walk(self, vaddr: int, write: bool, user: bool) -> Translation | PageFault:
        if not self.paging:
            return Translation.identity(vaddr)
        return walk(self.read_guest_u32, self.cr3, vaddr, write=write, user=user, wp=self.wp,
                    pse=self.pse)

    def access(self, vaddr: int, write: bool, user: bool) -> Translation | PageFault:
        """Walk for an access and update the guest's A/D bits as the processor does."""
        t = self.guest_walk(vaddr, write, user)
        if isinstance(t, PageFault):
            return t
        for addr, value in ad_updates(t, write):
            self._write_guest_u32(addr, value)
        if write and not t.dirty:
            self.stats.dirty += 1
        return t

    def protect(self, frames: frozenset[int], eip: int) -> None:
        """Map these guest frames read-only in the shadow (the guest's descriptor tables), so
        that a guest write to them faults and can be noticed."""
        if frames != self.protected:
            self.protected = frames
            self.flush(eip, "protect")

    def allow_write_once(self, vaddr: int, ring3: bool) -> None:
        """Make one protected page writable for the single instruction that writes it."""
        self._set_writable(vaddr, ring3, True)

    def reprotect(self, vaddr: int, ring3: bool) -> None:
        self._set_writable(vaddr, ring3, False)

    def _set_writable(self, vaddr: int, ring3: bool, writable: bool) -> None:
        table = self.root(ring3).tables.get(vaddr >> 22)
        if table is None:
            return
        addr = table + 4 * ((vaddr >> 12) & 0x3FF)
        entry = self._get(addr)
        if entry & P:
            self._put(addr, (entry | W) if writable else (entry & ~W))
            self._flush_tlb()

    def handle_fault(self, vaddr: int, write: bool, ring3: bool, eip: int
                     ) -> PageFault | ProtectedWrite | None:
        """A #PF at real CPL 3 under the shadow. Returns the fault to reflect, a
        ProtectedWrite when the guest may write but the page holds its descriptor tables, or
        None when the shadow was filled and the instruction can restart."""
        t = self.guest_walk(vaddr, write, ring3)
        if isinstance(t, PageFault):
            self.stats.reflects += 1
            self._emit("reflect", eip, vaddr=vaddr, error=t.error_code)
            return t
        was_dirty = t.dirty
        t = self.access(vaddr, write, ring3)
        assert isinstance(t, Translation)
        if write and not was_dirty:
            self._emit("dirty", eip, vaddr=vaddr, paddr=t.paddr & FRAME)
        self._fill(vaddr, t, write or was_dirty, ring3, eip)
        if write and t.paddr & FRAME in self.protected:
            return ProtectedWrite(vaddr, t.paddr)
        return None

    def _fill(self, vaddr: int, t: Translation, dirty: bool, ring3: bool, eip: int) -> None:
        frame = t.paddr & FRAME
        if frame + PAGE > self._ram_size:
            raise OutsideRam(vaddr, frame)
        root = self.root(ring3)
        index = vaddr >> 22
        table = root.tables.get(index)
        if table is None:
            if not self._free:
                raise ShadowFull()
            table = self._free.pop()
            self._clear_page(table)
            root.tables[index] = table
            self._put(root.pd_addr + 4 * index, table | P | W | U)
        writable = dirty and t.writable(ring3, self.wp) and frame not in self.protected
        self._put(table + 4 * ((vaddr >> 12) & 0x3FF), frame | P | U | (W if writable else 0))
        self.stats.fills += 1
        self._emit("fill", eip, vaddr=vaddr & FRAME, paddr=frame,
                   perm=("rw" if writable else "ro") + ("" if ring3 else "-k"))

    def shadow_entry(self, vaddr: int, ring3: bool) -> int | None:
        """The shadow PTE mapping ``vaddr`` in a view (None if there is no shadow table)."""
        table = self.root(ring3).tables.get(vaddr >> 22)
        return None if table is None else self._get(table + 4 * ((vaddr >> 12) & 0x3FF))


@dataclass(frozen=True)
class ProtectedWrite:
    """A permitted guest write to a page holding its GDT or LDT."""

    vaddr: int
    paddr: int


class OutsideRam(Exception):
    """The guest's page tables map a page that is not guest RAM."""

    def __init__(self, vaddr: int, paddr: int) -> None:
        super().__init__(f"guest page tables map {vaddr:#x} to physical {paddr:#x}, outside "
                         "guest RAM")
        self.vaddr = vaddr
        self.paddr = paddr

