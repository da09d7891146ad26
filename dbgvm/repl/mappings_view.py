"""``pt map`` and ``pt pages`` (QEMU's ``info mem`` and ``info tlb``): the guest's whole
address space as its own page tables map it, beside how much of it the shadow holds now.

The walk reads the guest's page directory and tables straight from guest RAM (no accessed or
dirty bit changes, no fill). The shadow column counts, per range, the pages the monitor's
kernel-view tables map at this moment: the shadow is filled on demand, so a mapping the
guest has not touched since its last CR3 load shows few or none.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.descriptors import VMM_HOLE
from ..core.guest_paging import FRAME, LARGE_FRAME, PS
from ..core.vcpu import CR0_PG, CR4_PSE

if TYPE_CHECKING:
    from ..core.machine import Machine

PAGE = 0x1000
LARGE_PAGE = 0x400000
_PRESENT, _WRITABLE, _USER = 1, 2, 4


@dataclass(frozen=True)
class Mapping:
    """A run of virtually contiguous pages with the same effective access rights."""
    start: int
    end: int                  # exclusive
    paddr: int                # of the first page
    user: bool
    writable: bool
    large: bool               # 4 MiB pages (the first one decides, for the flags column)

    def rights(self) -> str:
        """QEMU's letters: u (user) or -, r, w or -."""
        return ("u" if self.user else "-") + "r" + ("w" if self.writable else "-")


def guest_pages(m: "Machine") -> Iterator[Mapping]:
    """Every present guest mapping below the monitor hole, one per page (4 KiB or 4 MiB), in
    address order. Effective rights combine the directory entry's and the table entry's."""
    vcpu = m.vcpu
    pse = bool(vcpu.cr4 & CR4_PSE)
    directory = m.memory.read_physical(vcpu.cr3 & FRAME, PAGE)
    for index, pde in enumerate(struct.unpack("<1024I", directory)):
        base = index << 22
        if base >= VMM_HOLE:
            break
        if not pde & _PRESENT:
            continue
        if pse and pde & PS:
            yield Mapping(base, base + LARGE_PAGE, pde & LARGE_FRAME, bool(pde & _USER),
                          bool(pde & _WRITABLE), True)
            continue
        try:
            table = m.memory.read_physical(pde & FRAME, PAGE)
        except ValueError:
            continue             # a table outside RAM maps nothing the guest could use
        for slot, pte in enumerate(struct.unpack("<1024I", table)):
            if pte & _PRESENT:
                start = base | slot << 12
                yield Mapping(start, start + PAGE, pte & FRAME, bool(pde & pte & _USER),
                              bool(pde & pte & _WRITABLE), False)


def merged(pages: Iterator[Mapping]) -> list[Mapping]:
    """Adjacent pages with the same rights as one range (physical contiguity not needed, as
    QEMU's ``info mem``)."""
    out: list[Mapping] = []
    for page in pages:
        last = out[-1] if out else None
        if last is not None and last.end == page.start and (last.user, last.writable) == (
                page.user, page.writable):
            out[-1] = Mapping(last.start, page.end, last.paddr, last.user, last.writable,
                              last.large)
        else:
            out.append(page)
    return out


def _shadowed(m: "Machine", start: int, end: int) -> int:
    """Pages of [start, end) the kernel-view shadow maps now."""
    entry = m.mmu.shadow_entry
    return sum(1 for vaddr in range(start, end, PAGE) if (entry(vaddr, False) or 0) & 1)


def _head(m: "Machine") -> str | None:
    """The line said instead of a table when the guest does not page."""
    if not m.vcpu.cr0 & CR0_PG:
        return (f"guest paging off: linear addresses are physical (RAM 0-"
                f"{m.ram_size:#x}); the shadow maps them 1:1\n")
    return None


def map_report(m: "Machine") -> str:
    """``pt map``: ranges, size, rights, and the shadow's share of each."""
    head = _head(m)
    if head is not None:
        return head
    ranges = merged(guest_pages(m))
    lines = [f"guest cr3 {m.vcpu.cr3:#010x}: {len(ranges)} ranges below the monitor hole "
             f"({VMM_HOLE:#010x})",
             f"{'range':<17} {'size':>8} rights {'first page':>10}  shadow (kernel view)"]
    for r in ranges:
        pages = (r.end - r.start) // PAGE
        lines.append(f"{r.start:08x}-{r.end:08x} {r.end - r.start:08x} {r.rights():<6} "
                     f"{r.paddr:#010x}  {_shadowed(m, r.start, r.end)}/{pages} pages")
    return "\n".join(lines) + "\n"


def pages_report(m: "Machine") -> str:
    """``pt pages``: every present page (a 4 MiB page is one line), QEMU ``info tlb`` style."""
    head = _head(m)
    if head is not None:
        return head
    lines = []
    for page in guest_pages(m):
        size = "4M" if page.large else "4K"
        lines.append(f"{page.start:08x}: {page.paddr:08x} {size} {page.rights()}")
    return "\n".join(lines) + "\n" if lines else "no page is mapped\n"
