"""Shadow page tables: the only page tables Unicorn ever walks.

The real CPU always runs with paging on, on tables the VMM owns, so that the VMM hole
(supervisor-only in every shadow) is out of the guest's reach whatever the guest does; QEMU,
and so Unicorn, does not enforce segment limits, so segment truncation alone would not do.
While the guest's own paging is off, the shadow maps guest RAM one to one.

plex86 discovers the guest's page tables on demand: the shadow starts empty, every first
access to a page faults into the VMM, which walks the guest's tables (guest_paging.walk),
updates the guest's accessed/dirty bits as the processor would, and fills one shadow entry.
A page whose dirty bit is clear is mapped read-only so that the first write faults too and the
VMM can set D. Faults the guest must see are returned to the caller to reflect.

Shadows of recently used address spaces (by guest CR3) are kept, so switching back is cheap.
That is only correct if no shadow entry goes stale, so every guest page a shadow was built from
(page directories and page tables) is mapped read-only, and a guest write to one faults. A
plain store (pt_store.py) is carried out by the VMM, which then drops only the shadow
entries built from the entries it changed (guest_store: a PTE's one translation, a PDE's
4 MiB). For any other instruction, and when the guest stores to a table several times with no
use of it between (clearing or filling it), the VMM gives the page up (release): it drops
every shadow built from it, so it needs no protection until a shadow is built from it again.
Only a page that stays protected even then (the current page directory) is let written by
one instruction, after which the shadow entries built from it are dropped.
(Descriptor tables are watched byte-exactly instead: descriptor_watch.py.) A CR3 write thus never needs to
drop anything; changes of CR0.PG/CR0.WP/CR4.PSE drop everything.

Each address space has one shadow root per privilege view. The guest kernel (virtual ring 0)
and guest user code (virtual ring 3) both run at real CPL 3, so the ring-0 root maps every page
the guest maps, user-accessible; the ring-3 root maps only the guest's user pages, so that a
user access to a supervisor page faults exactly as it would on bare metal. The top page
directory entry maps the VMM hole, supervisor-only, in every root.
"""
from __future__ import annotations

import enum
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass, field

from .descriptors import VMM_HOLE
from .guest_paging import FRAME, P, U, W, PageFault, Translation, ad_updates, walk

PAGE = 4096
HOLE_PDE = VMM_HOLE >> 22
ALIAS_LINEAR = 0xFFFFF000   # the hole's last page, borrowed by ShadowMmu.alias
MAX_SPACES = 8
WRITE_FLOOD = 3          # stores to a page table with no use of it between: give the page up
IDENTITY = -1            # the address-space key while guest paging is off


class PtOp(str, enum.Enum):
    """The ``op`` of the ``pt`` events this MMU publishes (docs/events.md), for the front
    ends that name them (the monitor's ``catch pt OP``)."""

    FILL = "fill"
    DIRTY = "dirty"
    FLUSH = "flush"
    ZAP = "zap"
    INVLPG = "invlpg"
    REFLECT = "reflect"


class ShadowFull(Exception):
    """The pool of shadow pages is exhausted."""


class OutsideRam(Exception):
    """The guest touched a page that is not guest RAM."""

    def __init__(self, vaddr: int, paddr: int, paging: bool) -> None:
        super().__init__(f"guest page tables map {vaddr:#x} to physical {paddr:#x}, outside "
                         "guest RAM" if paging else
                         f"guest access to physical {vaddr:#x}, outside guest RAM")
        self.vaddr = vaddr
        self.paddr = paddr


@dataclass(frozen=True)
class ProtectedWrite:
    """A permitted guest write to a page the VMM keeps read-only (a page table or
    directory a shadow was built from)."""

    vaddr: int
    paddr: int


@dataclass
class ShadowStats:
    fills: int = 0
    dirty: int = 0
    flushes: int = 0
    invlpgs: int = 0
    reflects: int = 0
    switches: int = 0
    reused: int = 0
    zaps: int = 0


@dataclass(frozen=True)
class ShadowLookup:
    """Where one view's shadow maps a virtual address: its page-directory entry (address in
    the hole, value) and, when a shadow page table hangs off it, its page-table entry."""

    pde_addr: int
    pde: int
    pte_addr: int | None
    pte: int | None


@dataclass
class ShadowRoot:
    """One shadow page directory and the shadow page tables hanging off it."""

    pd_addr: int
    tables: dict[int, int] = field(default_factory=dict)   # PDE index -> shadow PT address


@dataclass
class AddressSpace:
    """The shadows of one guest address space (one CR3), and the guest pages they came from."""

    key: int                                   # guest page-directory frame, or IDENTITY
    roots: tuple[ShadowRoot, ShadowRoot]       # ring-0 view, ring-3 view
    # guest page-table frame -> (view, PDE index) of the shadow tables built from it
    sources: dict[int, set[tuple[int, int]]] = field(default_factory=dict)


@dataclass(frozen=True)
class AddressSpaceState:
    key: int
    roots: tuple[tuple[int, tuple[tuple[int, int], ...]], ...]   # (pd_addr, (index, table)...)
    sources: tuple[tuple[int, frozenset[tuple[int, int]]], ...]


@dataclass(frozen=True)
class ShadowMmuState:
    """The MMU's bookkeeping (the shadow tables themselves are in the hole, saved with it)."""

    paging: bool
    cr3: int
    wp: bool
    pse: bool
    spaces: tuple[AddressSpaceState, ...]     # least recently used first
    space: int                                # the current space's key
    writable: tuple[tuple[int, frozenset[int]], ...]
    protected: frozenset[int]
    stores: tuple[tuple[int, int], ...]
    free: tuple[int, ...]
    stats: tuple[int, ...]


def _saved_space(space: AddressSpace) -> AddressSpaceState:
    return AddressSpaceState(
        space.key, tuple((root.pd_addr, tuple(root.tables.items())) for root in space.roots),
        tuple((frame, frozenset(users)) for frame, users in space.sources.items()))


def _restored_space(state: AddressSpaceState) -> AddressSpace:
    ring0, ring3 = (ShadowRoot(pd_addr, dict(tables)) for pd_addr, tables in state.roots)
    return AddressSpace(state.key, (ring0, ring3),
                        {frame: set(users) for frame, users in state.sources})


class ShadowMmu:
    # wiring and constants fixed when the machine is built
    NOT_SAVED = frozenset({"hole", "ram", "ram_size", "emit", "flush_tlb", "hole_pt"})

    def __init__(self, hole: memoryview, ram: memoryview, ram_size: int, *, pool_offset: int,
                 pool_pages: int, hole_pt_offset: int, emit: Callable[..., None],
                 flush_tlb: Callable[[], None]) -> None:
        self._hole = hole
        self._ram = ram
        self._ram_size = ram_size
        self._emit = emit
        self._flush_tlb = flush_tlb
        self._free = [VMM_HOLE + pool_offset + i * PAGE for i in range(pool_pages)]
        self.stats = ShadowStats()
        # The VMM's own page table: the hole, identity-mapped, supervisor read/write.
        self._hole_pt = VMM_HOLE + hole_pt_offset
        for i in range(1024):
            self._put(self._hole_pt + 4 * i, (VMM_HOLE + i * PAGE) | P | W)
        self.paging = False
        self.cr3 = 0
        self.wp = False
        self.pse = False
        self._spaces: OrderedDict[int, AddressSpace] = OrderedDict()
        self._writable: dict[int, set[int]] = {}   # guest frame -> shadow PTEs mapping it RW
        self._protected: frozenset[int] = frozenset()
        self._stores: dict[int, int] = {}   # protected frame -> stores since a fill used it
        self.space = self._space(IDENTITY)

    def save(self) -> ShadowMmuState:
        return ShadowMmuState(
            self.paging, self.cr3, self.wp, self.pse,
            tuple(_saved_space(space) for space in self._spaces.values()), self.space.key,
            tuple((frame, frozenset(ptes)) for frame, ptes in self._writable.items()),
            self._protected, tuple(self._stores.items()), tuple(self._free),
            astuple(self.stats))

    def restore(self, state: ShadowMmuState) -> None:
        """Take ``state``'s bookkeeping; the caller restores the hole (the shadow tables) and
        flushes Unicorn's TLB."""
        self.paging, self.cr3, self.wp, self.pse = state.paging, state.cr3, state.wp, state.pse
        self._spaces = OrderedDict((s.key, _restored_space(s)) for s in state.spaces)
        self.space = self._spaces[state.space]
        self._writable = {frame: set(ptes) for frame, ptes in state.writable}
        self._protected = state.protected
        self._stores = dict(state.stores)
        self._free = list(state.free)
        self.stats = ShadowStats(*state.stats)

    @contextmanager
    def alias(self, frame: int, ring3: bool) -> Iterator[int]:
        """Map guest ``frame`` user-readable at ALIAS_LINEAR in the current root for the
        duration of a Unicorn call that takes a *linear* address for what is physical memory
        (ctl_remove_cache translates its start through the CPU's page tables at CPL 3, and an
        unmapped address corrupts Unicorn's exception state). Nothing guest runs meanwhile."""
        pd_entry = self.root(ring3).pd_addr + 4 * HOLE_PDE
        pte = self._hole_pt + 4 * ((ALIAS_LINEAR >> 12) & 0x3FF)
        saved_pde, saved_pte = self._get(pd_entry), self._get(pte)
        self._put(pd_entry, saved_pde | U)
        self._put(pte, frame | P | U)
        self._flush_tlb()
        try:
            yield ALIAS_LINEAR
        finally:
            self._put(pte, saved_pte)
            self._put(pd_entry, saved_pde)
            self._flush_tlb()

    # -- raw access ---------------------------------------------------------------------
    def _put(self, addr: int, value: int) -> None:
        struct.pack_into("<I", self._hole, addr - VMM_HOLE, value)

    def _get(self, addr: int) -> int:
        return struct.unpack_from("<I", self._hole, addr - VMM_HOLE)[0]

    def _clear_page(self, addr: int) -> None:
        off = addr - VMM_HOLE
        self._hole[off:off + PAGE] = bytes(PAGE)

    def read_guest_u32(self, paddr: int) -> int:
        if paddr + 4 > self._ram_size:
            return 0xFFFFFFFF  # open bus: a page-table entry outside RAM reads all ones
        return struct.unpack_from("<I", self._ram, paddr)[0]

    def _write_guest_u32(self, paddr: int, value: int) -> None:
        if paddr + 4 <= self._ram_size:
            struct.pack_into("<I", self._ram, paddr, value)

    def _alloc(self) -> int:
        if not self._free:
            raise ShadowFull()
        page = self._free.pop()
        self._clear_page(page)
        return page

    # -- address spaces -------------------------------------------------------------------
    def _space(self, key: int) -> AddressSpace:
        """The cached shadows of ``key``, made (evicting the least recently used) if needed."""
        space = self._spaces.get(key)
        if space is not None:
            self._spaces.move_to_end(key)
            return space
        while len(self._spaces) >= MAX_SPACES or len(self._free) < 2:
            if not self._spaces:
                raise ShadowFull()
            self._drop_space(next(iter(self._spaces.values())))
        roots = (ShadowRoot(self._alloc()), ShadowRoot(self._alloc()))
        for root in roots:
            self._put(root.pd_addr + 4 * HOLE_PDE, self._hole_pt | P | W)
        space = AddressSpace(key, roots)
        self._spaces[key] = space
        return space

    def _drop_space(self, space: AddressSpace) -> None:
        self._clear_tables(space)
        for root in space.roots:
            self._free.append(root.pd_addr)
        del self._spaces[space.key]

    def _clear_tables(self, space: AddressSpace) -> None:
        for root in space.roots:
            for index, table in root.tables.items():
                self._put(root.pd_addr + 4 * index, 0)
                self._free.append(table)
            root.tables.clear()
        space.sources.clear()

    def root(self, ring3: bool) -> ShadowRoot:
        return self.space.roots[1 if ring3 else 0]

    @property
    def cached_spaces(self) -> int:
        return len(self._spaces)

    def configure(self, paging: bool, cr3: int, wp: bool, pse: bool, eip: int,
                  cause: str) -> None:
        """A CR3 write or a paging-mode change. The architecture flushes the TLB here; the
        shadows are kept coherent by write protection, so a CR3 write only switches to the
        address space's cached shadow, and a mode change (whose shadows would differ) drops
        them all."""
        dropped = (paging, wp, pse) != (self.paging, self.wp, self.pse) or cause in ("boot",)
        if dropped:
            for space in list(self._spaces.values()):
                self._drop_space(space)
        self.paging, self.cr3, self.wp, self.pse = paging, cr3, wp, pse
        key = cr3 & FRAME if paging else IDENTITY
        reused = key in self._spaces
        self.space = self._space(key)
        self.stats.switches += 1
        self.stats.reused += reused
        if not reused:
            self.stats.flushes += 1
        if dropped or not reused:
            # (switching to a cached space changes no protection: the protected frames are
            # those of every cached space, current or not)
            self._refresh_protection()
        self._flush_tlb()
        self._emit("flush", eip, cr3=cr3, cause=cause, cached=int(reused))

    def flush(self, eip: int, cause: str) -> None:
        """Drop every shadow of every address space (the pool ran out)."""
        for space in list(self._spaces.values()):
            if space is not self.space:
                self._drop_space(space)
        self._clear_tables(self.space)
        self.stats.flushes += 1
        self._refresh_protection()
        self._flush_tlb()
        self._emit("flush", eip, cr3=self.cr3, cause=cause, cached=0)

    def invlpg(self, vaddr: int, eip: int) -> None:
        """Drop the page's shadow entries. Unicorn's TLB (which has no single-page flush)
        only ever holds translations the shadow has, and every zap flushes it: so when no
        view had a present entry for the page, there is nothing to flush (most of Linux's
        INVLPGs: text_poke and early_memremap clear mappings that were never touched)."""
        index = vaddr >> 22
        present = False
        for root in self.space.roots:
            table = root.tables.get(index)
            if table is not None:
                addr = table + 4 * ((vaddr >> 12) & 0x3FF)
                present = present or bool(self._get(addr) & P)
                self._put(addr, 0)
        self.stats.invlpgs += 1
        if present:
            self._flush_tlb()
        self._emit("invlpg", eip, vaddr=vaddr, flushed=int(present))

    # -- write protection -----------------------------------------------------------------
    def _protected_frames(self) -> frozenset[int]:
        frames: set[int] = set()
        for space in self._spaces.values():
            if space.key != IDENTITY:
                frames.add(space.key)
            frames.update(space.sources)
        return frozenset(frames)

    def _refresh_protection(self) -> None:
        """Recompute the protected frames (every change of spaces, sources or descriptor
        frames ends here) and downgrade shadow entries that map one of them writable."""
        self._protected = self._protected_frames()
        changed = False
        for frame in self._protected & self._writable.keys():
            for pte_addr in self._writable.pop(frame):
                entry = self._get(pte_addr)
                if entry & P and entry & W and entry & FRAME == frame:
                    self._put(pte_addr, entry & ~W)
                    changed = True
        if changed:
            self._flush_tlb()

    def allow_write_once(self, vaddr: int, ring3: bool) -> None:
        """Make one protected page writable for the single instruction that writes it."""
        self._set_writable(vaddr, ring3, True)

    def after_protected_write(self, vaddr: int, paddr: int, ring3: bool, eip: int) -> None:
        """The guest wrote a protected page: drop every shadow entry built from it."""
        self._set_writable(vaddr, ring3, False)
        self._zap_frame(paddr & FRAME, vaddr, eip)

    def guest_store(self, paddr: int, data: bytes, eip: int) -> bool:
        """A guest store (emulated by the VMM, pt_store.py) to a protected page, within one
        page: write it to guest RAM and drop only the shadow entries built from the entries it
        changed. A changed PTE can only change the one translation it makes, in each place its
        page table is used (address space, view, directory index): that shadow entry is
        cleared. A changed PDE drops the shadow tables of its 4 MiB in that address space.
        Returns whether a present shadow entry went (Unicorn's TLB was then flushed)."""
        frame = paddr & FRAME
        first = (paddr & 0xFFF) >> 2
        count = (((paddr & 0xFFF) + len(data) - 1) >> 2) - first + 1
        get, put, ram = self._get, self._put, self._ram
        base = frame + 4 * first
        old = struct.unpack_from(f"<{count}I", ram, base)
        ram[paddr:paddr + len(data)] = data
        new = struct.unpack_from(f"<{count}I", ram, base)
        flush = False
        for space in self._spaces.values():
            sources = space.sources.get(frame)
            if space.key == frame:
                for i, before, after in zip(range(first, first + count), old, new):
                    if before == after:
                        continue
                    dropped = False
                    for view, root in enumerate(space.roots):
                        table = root.tables.pop(i, None)
                        if table is None:
                            continue
                        put(root.pd_addr + 4 * i, 0)
                        self._free.append(table)
                        dropped = True
                        built_from = space.sources.get(before & FRAME)
                        if built_from is not None:
                            built_from.discard((view, i))
                            if not built_from:
                                del space.sources[before & FRAME]
                    if dropped:
                        flush = True
                        self.stats.zaps += 1
                        self._emit("zap", eip, vaddr=i << 22, paddr=frame, source="table")
                sources = space.sources.get(frame)   # (this page may map itself)
            if not sources:
                continue
            indexes: dict[int, list[int]] = {}
            for view, index in sources:
                table = space.roots[view].tables.get(index)
                if table is not None:
                    indexes.setdefault(index, []).append(table)
            for i, before, after in zip(range(first, first + count), old, new):
                if before == after:
                    continue
                for index, tables in indexes.items():
                    cleared = False
                    for table in tables:
                        addr = table + 4 * i
                        if get(addr) & P:
                            cleared = True
                            put(addr, 0)
                    if cleared:
                        flush = True
                        self.stats.zaps += 1
                        self._emit("zap", eip, vaddr=(index << 22) | (i << 12), paddr=frame,
                                   source="entry")
        if flush:
            self._flush_tlb()
        return flush

    def write_flood(self, frame: int) -> bool:
        """Count a guest store to a protected frame. True once WRITE_FLOOD of them came with
        no fill walking through the frame between: the guest is rewriting the table (filling
        a new one, clearing an old one) rather than changing a mapping it uses, and dropping
        what was built from the page (release) is cheaper than a fault per store."""
        count = self._stores.get(frame, 0) + 1
        self._stores[frame] = count
        return count > WRITE_FLOOD

    def release(self, frame: int, vaddr: int, eip: int) -> bool:
        """Stop protecting ``frame`` if it can be: drop every shadow built from it (the
        cached address spaces whose directory it is, other than the current one, and the
        shadow tables built from it as a page table). Returns whether it is now writable: a
        page the guest rewrites wholesale (clearing or copying it with REP STOS/MOVS, most
        often a freed page table being reused) then takes one fault, not one per store."""
        if frame == self.space.key:
            return False
        self._stores.pop(frame, None)
        for space in list(self._spaces.values()):
            if space.key == frame:
                self._drop_space(space)
                self.stats.zaps += 1
                self._emit("zap", eip, vaddr=vaddr, paddr=frame, source="directory")
        self._zap_frame(frame, vaddr, eip)
        return frame not in self._protected

    def host_wrote(self, paddr: int, length: int, eip: int) -> list[int]:
        """The host (a debugger, a device's DMA) wrote guest RAM behind the shadow's back:
        zap what was built from the protected frames in the range; returns those frames."""
        touched = [frame for frame in range(paddr & FRAME, paddr + length, 4096)
                   if frame in self._protected]
        for frame in touched:
            self._zap_frame(frame, frame, eip)
        return touched

    def _zap_frame(self, frame: int, vaddr: int, eip: int) -> None:
        for space in list(self._spaces.values()):
            if space.key == frame:
                self._clear_tables(space)
                self.stats.zaps += 1
                self._emit("zap", eip, vaddr=vaddr, paddr=frame, source="directory")
                continue
            for view, index in space.sources.pop(frame, ()):
                root = space.roots[view]
                table = root.tables.pop(index, None)
                if table is not None:
                    self._put(root.pd_addr + 4 * index, 0)
                    self._free.append(table)
                    self.stats.zaps += 1
                    self._emit("zap", eip, vaddr=index << 22, paddr=frame, source="table")
        self._refresh_protection()
        self._flush_tlb()

    def _set_writable(self, vaddr: int, ring3: bool, writable: bool) -> None:
        table = self.root(ring3).tables.get(vaddr >> 22)
        if table is None:
            return
        addr = table + 4 * ((vaddr >> 12) & 0x3FF)
        entry = self._get(addr)
        if entry & P:
            self._put(addr, (entry | W) if writable else (entry & ~W))
            self._flush_tlb()

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

    def handle_fault(self, vaddr: int, write: bool, ring3: bool, eip: int
                     ) -> PageFault | ProtectedWrite | None:
        """A #PF at real CPL 3 under the shadow. Returns the fault to reflect, a
        ProtectedWrite when the guest may write but the page is kept read-only, or None when
        the shadow was filled and the instruction can restart."""
        t = self.guest_walk(vaddr, write, ring3)
        if isinstance(t, PageFault):
            self.stats.reflects += 1
            self._emit("reflect", eip, vaddr=vaddr, error=t.error_code)
            return t
        was_dirty = t.dirty
        for addr, value in ad_updates(t, write):     # as access() does, without walking again
            self._write_guest_u32(addr, value)
        if write and not was_dirty:
            self.stats.dirty += 1
            self._emit("dirty", eip, vaddr=vaddr, paddr=t.paddr & FRAME)
        if self._fill(vaddr, t, write or was_dirty, ring3, eip) or not write:
            return None
        return ProtectedWrite(vaddr, t.paddr)

    def _fill(self, vaddr: int, t: Translation, dirty: bool, ring3: bool, eip: int) -> bool:
        """Fill the shadow entry for ``vaddr``; returns whether it was mapped writable."""
        frame = t.paddr & FRAME
        if frame + PAGE > self._ram_size:
            raise OutsideRam(vaddr, frame, self.paging)
        view = 1 if ring3 else 0
        root = self.space.roots[view]
        index = vaddr >> 22
        table = root.tables.get(index)
        if table is None:
            table = self._alloc()
            root.tables[index] = table
            self._put(root.pd_addr + 4 * index, table | P | W | U)
        if not t.large and t.pde_addr is not None:
            source = t.pde & FRAME
            if self._stores:
                self._stores.pop(source, None)
            if source not in self.space.sources:
                self.space.sources[source] = set()
                self._refresh_protection()
            self.space.sources[source].add((view, index))
        writable = dirty and t.writable(ring3, self.wp) and frame not in self._protected
        pte_addr = table + 4 * ((vaddr >> 12) & 0x3FF)
        self._put(pte_addr, frame | P | U | (W if writable else 0))
        if writable:
            self._writable.setdefault(frame, set()).add(pte_addr)
        self.stats.fills += 1
        self._emit("fill", eip, vaddr=vaddr & FRAME, paddr=frame,
                   perm=("rw" if writable else "ro") + ("" if ring3 else "-k"))
        return writable

    def shadow_entry(self, vaddr: int, ring3: bool) -> int | None:
        """The shadow PTE mapping ``vaddr`` in a view (None if there is no shadow table)."""
        table = self.root(ring3).tables.get(vaddr >> 22)
        return None if table is None else self._get(table + 4 * ((vaddr >> 12) & 0x3FF))

    def shadow_lookup(self, vaddr: int, ring3: bool) -> ShadowLookup:
        """The shadow entries for ``vaddr`` in a view, for showing them (``pt walk``)."""
        root = self.root(ring3)
        index = vaddr >> 22
        pde_addr = root.pd_addr + 4 * index
        table = root.tables.get(index)
        if table is None:
            return ShadowLookup(pde_addr, self._get(pde_addr), None, None)
        pte_addr = table + 4 * ((vaddr >> 12) & 0x3FF)
        return ShadowLookup(pde_addr, self._get(pde_addr), pte_addr, self._get(pte_addr))
