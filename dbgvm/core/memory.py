"""Guest memory: RAM, the VMM hole, the shadow MMU, and every way to reach them.

Guest RAM is one mmap'd buffer mapped at guest-physical 0 with ``mem_map_ptr``, the VMM
hole (shadow page tables, the VMM's GDTs, the trampoline) another, mapped at 0xFFC00000;
the VMM reads both without API calls. Three kinds of access:

- *as the guest kernel* (``read_linear``/``write_linear``): through the guest's paging as a
  supervisor access, setting A/D bits; faults are raised as GuestFault for the guest;
- *physical* (``read_physical``/``write_physical``): from outside the instruction stream (a
  debugger, device DMA), keeping translated code, the shadow and the descriptor copies
  coherent with what was written;
- *as a debugger* (``translate``/``read_virtual``/``write_virtual``): through the guest's
  page tables without touching A/D bits, failing with DebugError.
"""
from __future__ import annotations

import ctypes
import mmap
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from unicorn import UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_PROT_ALL, Uc

from .descriptors import VMM_HOLE
from .faults import GuestFault, GuestStop, Vector
from .stops import StopReason
from .guest_paging import PageFault
from .shadow_mmu import ShadowMmu
from .vcpu import CR0_PG

if TYPE_CHECKING:
    from .cpu_context import VmmContext

VMM_HOLE_SIZE = 4 << 20
HOLE_PAGE_TABLE = 0x62000                  # maps the hole itself, supervisor-only
SHADOW_POOL = 0x100000                     # shadow page directories and tables: 3 MiB
SHADOW_POOL_PAGES = (VMM_HOLE_SIZE - SHADOW_POOL) // 4096


class DebugError(ValueError):
    """A debugger request that cannot be carried out (the message says why)."""


def pages(linear: int, size: int) -> Iterator[tuple[int, int, int]]:
    """Split a linear range at page boundaries: (address, offset in the range, length)."""
    done = 0
    while done < size:
        chunk = min(size - done, 4096 - ((linear + done) & 0xFFF))
        yield linear + done, done, chunk
        done += chunk


def check_range(vaddr: int, size: int) -> None:
    """A 32-bit guest has no address at or above 4 GiB: never wrap one to a low address."""
    if vaddr < 0 or size < 0 or vaddr + size > 1 << 32:
        raise DebugError(f"address range {vaddr:#x}+{size} is outside the 32-bit address space")


class GuestMemory:
    def __init__(self, uc: Uc, ram_size: int, owner: "VmmContext",
                 emit_pt: Callable[..., None]) -> None:
        self._uc = uc
        self._owner = owner
        self.ram_size = ram_size
        self._ram_map = mmap.mmap(-1, ram_size)
        self.ram = memoryview(self._ram_map)
        uc.mem_map_ptr(0, ram_size, UC_PROT_ALL,
                       ctypes.addressof(ctypes.c_char.from_buffer(self._ram_map)))
        self._hole_map = mmap.mmap(-1, VMM_HOLE_SIZE)
        self.hole = memoryview(self._hole_map)
        uc.mem_map_ptr(VMM_HOLE, VMM_HOLE_SIZE, UC_PROT_ALL,
                       ctypes.addressof(ctypes.c_char.from_buffer(self._hole_map)))
        self.mmu = ShadowMmu(self.hole, self.ram, ram_size, pool_offset=SHADOW_POOL,
                             pool_pages=SHADOW_POOL_PAGES, hole_pt_offset=HOLE_PAGE_TABLE,
                             emit=emit_pt,
                             flush_tlb=lambda: uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE))

    # -- as the guest kernel ------------------------------------------------------------------
    def physical(self, linear: int, size: int, write: bool) -> int:
        """Guest-physical address of ``size`` bytes at ``linear`` (within one page when paging
        is on), as a supervisor access; faults are raised as GuestFault."""
        if linear + size > VMM_HOLE:
            raise GuestFault(Vector.GP, 0)  # as the truncated segment limit makes it natively
        if self._owner.vcpu.cr0 & CR0_PG:
            t = self.mmu.access(linear, write, user=False)
            if isinstance(t, PageFault):
                raise GuestFault(Vector.PF, t.error_code, cr2=linear)
            paddr = t.paddr
        else:
            paddr = linear
        if paddr + size > self.ram_size:
            raise GuestStop(StopReason.BAD_MEMORY,
                            f"monitor access to physical {paddr:#x}+{size} outside guest RAM "
                            f"({self.ram_size >> 20} MiB)")
        return paddr

    def _pieces(self, linear: int, size: int) -> Iterator[tuple[int, int, int]]:
        """Split a linear range at page boundaries when paging is on."""
        if not self._owner.vcpu.cr0 & CR0_PG:
            return iter(((linear, 0, size),))
        return pages(linear, size)

    def read_linear(self, linear: int, size: int) -> bytes:
        """Guest linear memory as the guest kernel would read it (faults raised as GuestFault)."""
        out = bytearray()
        for addr, _, chunk in self._pieces(linear, size):
            paddr = self.physical(addr, chunk, False)
            out += self.ram[paddr:paddr + chunk]
        return bytes(out)

    def write_linear(self, linear: int, data: bytes) -> None:
        for addr, offset, chunk in self._pieces(linear, len(data)):
            self.write_physical(self.physical(addr, chunk, True), data[offset:offset + chunk])

    # -- physical -----------------------------------------------------------------------------
    def read_physical(self, paddr: int, size: int) -> bytes:
        if paddr < 0 or paddr + size > self.ram_size:
            raise ValueError(f"physical range {paddr:#x}+{size} is outside guest RAM")
        return bytes(self.ram[paddr:paddr + size])

    def write_physical(self, paddr: int, data: bytes) -> None:
        """A write from outside the guest's instruction stream (debugger, device DMA). It
        keeps the machine coherent as a guest store would: translated code on those bytes is
        dropped, and shadow entries built from a guest page table or descriptor page written
        here are zapped (the descriptor tables re-validated)."""
        if paddr < 0 or paddr + len(data) > self.ram_size:
            raise ValueError(f"physical range {paddr:#x}+{len(data)} is outside guest RAM")
        if not data:
            return
        self.ram[paddr:paddr + len(data)] = data
        # Unicorn translates the start of the range it invalidates as a *linear* address
        # through the CPU's page tables (and an unmapped one corrupts its exception state).
        # RAM is one block at guest-physical 0, so the range stays contiguous after that.
        owner = self._owner
        ring3 = owner.vcpu.cpl == 3
        entry = self.mmu.shadow_entry(paddr, ring3)
        if entry is not None and entry & 1 and (entry ^ paddr) & ~0xFFF == 0:
            self._uc.ctl_remove_cache(paddr, paddr + len(data))   # mapped one to one already
        else:
            offset = paddr & 0xFFF
            with self.mmu.alias(paddr - offset, ring3) as linear:
                self._uc.ctl_remove_cache(linear + offset, linear + offset + len(data))
        if self.mmu.host_wrote(paddr, len(data), owner.trap_eip):
            owner.sync_exits()
        owner.descriptor_watch.host_wrote(paddr, data)

    # -- as a debugger ------------------------------------------------------------------------
    def translate(self, vaddr: int) -> int | None:
        """Guest-physical address of a guest-virtual one, without touching A/D bits."""
        t = self.mmu.guest_walk(vaddr, False, False)
        if isinstance(t, PageFault) or t.paddr >= self.ram_size:
            return None
        return t.paddr

    def debug_pieces(self, vaddr: int, size: int) -> Iterator[tuple[int, int, int]]:
        """(physical address, offset, length) of each page of a virtual range, through the
        guest's page tables without touching A/D bits; DebugError if a page is not mapped."""
        check_range(vaddr, size)
        for addr, offset, chunk in pages(vaddr, size):
            paddr = self.translate(addr)
            if paddr is None or paddr + chunk > self.ram_size:
                raise DebugError(f"virtual address {addr:#x} is not mapped")
            yield paddr, offset, chunk

    def read_virtual(self, vaddr: int, size: int) -> bytes:
        out = bytearray()
        for paddr, _, chunk in self.debug_pieces(vaddr, size):
            out += self.ram[paddr:paddr + chunk]
        return bytes(out)

    def write_virtual(self, vaddr: int, data: bytes) -> None:
        for paddr, offset, chunk in list(self.debug_pieces(vaddr, len(data))):
            self.write_physical(paddr, data[offset:offset + chunk])
