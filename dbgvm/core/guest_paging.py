"""The guest's own page tables, walked exactly as the processor walks them (SDM vol. 3
section 4.3, 32-bit paging with optional 4 MiB pages under CR4.PSE).

This is the reference the shadow MMU fills from, and the walk the VMM uses for its own
accesses to guest memory. It never changes anything: setting accessed/dirty bits is the
caller's decision (see :func:`ad_updates`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

P, W, U, A, D, PS, G = 1, 2, 4, 0x20, 0x40, 0x80, 0x100
PF_P, PF_W, PF_U = 1, 2, 4
FRAME = 0xFFFFF000
LARGE_FRAME = 0xFFC00000

ReadU32 = Callable[[int], int]


@dataclass(frozen=True)
class PageFault:
    """The walk ends in a page fault with this error code (P, W/R, U/S bits)."""

    vaddr: int
    error_code: int


@dataclass(frozen=True)
class Translation:
    vaddr: int
    paddr: int
    pde_addr: int | None      # None for the identity translation of paging off
    pde: int
    pte_addr: int | None      # None for a 4 MiB page
    pte: int | None
    user_ok: bool             # the guest's U/S allows user accesses
    write_ok: bool            # the guest's R/W bits (both levels) allow writes

    @classmethod
    def identity(cls, vaddr: int) -> "Translation":
        """What an access sees with paging off: linear = physical, no paging entries."""
        return cls(vaddr, vaddr, None, P | W | U | A | D | PS, None, None, True, True)

    @property
    def large(self) -> bool:
        return self.pte_addr is None

    @property
    def dirty(self) -> bool:
        return bool((self.pde if self.large else self.pte) & D)

    def writable(self, user: bool, wp: bool) -> bool:
        """May an access at this privilege write the page (SDM 4.6)?"""
        return self.write_ok if (user or wp) else True


def walk(read_u32: ReadU32, cr3: int, vaddr: int, *, write: bool, user: bool, wp: bool,
         pse: bool) -> Translation | PageFault:
    vaddr &= 0xFFFFFFFF
    fault_bits = (PF_W if write else 0) | (PF_U if user else 0)
    pde_addr = (cr3 & FRAME) | ((vaddr >> 22) << 2)
    pde = read_u32(pde_addr)
    if not pde & P:
        return PageFault(vaddr, fault_bits)
    if pse and pde & PS:
        pte_addr = pte = None
        paddr = (pde & LARGE_FRAME) | (vaddr & ~LARGE_FRAME)
        user_ok, write_ok = bool(pde & U), bool(pde & W)
    else:
        pte_addr = (pde & FRAME) | (((vaddr >> 12) & 0x3FF) << 2)
        pte = read_u32(pte_addr)
        if not pte & P:
            return PageFault(vaddr, fault_bits)
        paddr = (pte & FRAME) | (vaddr & 0xFFF)
        user_ok, write_ok = bool(pde & pte & U), bool(pde & pte & W)
    result = Translation(vaddr, paddr, pde_addr, pde, pte_addr, pte, user_ok, write_ok)
    if user and not user_ok:
        return PageFault(vaddr, PF_P | fault_bits)
    if write and not result.writable(user, wp):
        return PageFault(vaddr, PF_P | fault_bits)
    return result


def ad_updates(t: Translation, write: bool) -> list[tuple[int, int]]:
    """(address, new value) pairs of the paging entries the processor updates for an access:
    A in the PDE and PTE, and D in the entry that maps the page on a write."""
    updates = []
    if t.large:
        new = t.pde | A | (D if write else 0)
        if new != t.pde:
            updates.append((t.pde_addr, new))
        return updates
    if not t.pde & A:
        updates.append((t.pde_addr, t.pde | A))
    new = t.pte | A | (D if write else 0)
    if new != t.pte:
        updates.append((t.pte_addr, new))
    return updates
