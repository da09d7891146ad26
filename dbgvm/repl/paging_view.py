"""``pt walk`` and ``pt stats``: the guest's own page-table walk beside the monitor's shadow.

The walk is the reference one (guest_paging.walk) over guest RAM, as a supervisor read, so it
changes no accessed/dirty bit. The shadow side is what the MMU reports of its tables
(ShadowMmu.shadow_lookup): what the real CPU uses for the same address in the kernel
(virtual ring 0) and user views.
"""
from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING

from ..core.descriptors import VMM_HOLE
from ..core.guest_paging import FRAME, LARGE_FRAME, PS, PageFault, walk
from ..core.vcpu import CR0_PG, CR0_WP, CR4_PSE

if TYPE_CHECKING:
    from ..core.machine import Machine

_BITS = ((1, "P"), (2, "W"), (4, "U"), (0x20, "A"), (0x40, "D"), (0x100, "G"))


def flags(entry: int, directory: bool = False) -> str:
    names = [name for bit, name in _BITS if entry & bit]
    if directory and entry & PS:
        names.append("4M")
    return " ".join(names) or "-"


def _entry(addr: int | None, value: int | None, directory: bool = False) -> str:
    if addr is None or value is None:
        return "-"
    return f"[{addr:#010x}] {value:#010x} {flags(value, directory)}"


def walk_report(m: "Machine", vaddr: int) -> str:
    vaddr &= 0xFFFFFFFF
    vcpu = m.vcpu
    paging = bool(vcpu.cr0 & CR0_PG)
    head = (f"pt walk {vaddr:#010x}: guest paging {'on' if paging else 'off'}, cr3 "
            f"{vcpu.cr3:#010x}, pse {'on' if vcpu.cr4 & CR4_PSE else 'off'}, wp "
            f"{'on' if vcpu.cr0 & CR0_WP else 'off'}")
    rows: dict[str, list[str]] = {"pde": [], "pte": [], "page": []}
    # the guest's own walk
    if vaddr >= VMM_HOLE:
        rows["pde"].append("(monitor hole)")
        rows["pte"].append("-")
        rows["page"].append("-")
    elif not paging:
        rows["pde"].append("(paging off)")
        rows["pte"].append("-")
        rows["page"].append(f"{vaddr & FRAME:#010x} identity")
    else:
        t = walk(m.mmu.read_guest_u32, vcpu.cr3, vaddr, write=False, user=False,
                 wp=bool(vcpu.cr0 & CR0_WP), pse=bool(vcpu.cr4 & CR4_PSE))
        pde_addr = (vcpu.cr3 & FRAME) | ((vaddr >> 22) << 2)
        pde = m.mmu.read_guest_u32(pde_addr)
        rows["pde"].append(_entry(pde_addr, pde, True))
        if isinstance(t, PageFault):
            if pde & 1 and not (vcpu.cr4 & CR4_PSE and pde & PS):
                pte_addr = (pde & FRAME) | (((vaddr >> 12) & 0x3FF) << 2)
                rows["pte"].append(_entry(pte_addr, m.mmu.read_guest_u32(pte_addr)))
            else:
                rows["pte"].append("-")
            rows["page"].append(f"not present (#PF error {t.error_code:#x})")
        else:
            rows["pte"].append("(4 MiB page)" if t.large else _entry(t.pte_addr, t.pte))
            frame = t.paddr & (LARGE_FRAME if t.large else FRAME)
            rows["page"].append(f"{frame:#010x} -> {t.paddr:#010x}")
    # the shadow, both views (as the MMU reports its entries)
    for ring3 in (False, True):
        shadow = m.mmu.shadow_lookup(vaddr, ring3)
        pde = shadow.pde
        rows["pde"].append(_entry(shadow.pde_addr, pde) if pde
                           else f"[{shadow.pde_addr:#010x}] empty")
        if shadow.pte_addr is None or shadow.pte is None or not pde & 1:
            rows["pte"].append("-")
            rows["page"].append("not filled")
            continue
        pte = shadow.pte
        rows["pte"].append(_entry(shadow.pte_addr, pte) if pte
                           else f"[{shadow.pte_addr:#010x}] empty")
        rows["page"].append(f"{pte & FRAME:#010x}" if pte & 1 else "not filled")
    # one block per view, so that the walk fits an 80-column terminal
    titles = [f"guest (virtual cpl {vcpu.cpl})", "shadow, kernel view", "shadow, user view"]
    lines = [head]
    for column, title in enumerate(titles):
        lines.append(title)
        lines += [f"  {name:<5} {cells[column]}" for name, cells in rows.items()]
    return "\n".join(lines) + "\n"


def stats_report(m: "Machine") -> str:
    stats = m.mmu.stats
    counters = "  ".join(f"{f.name} {getattr(stats, f.name)}" for f in fields(stats))
    return (f"guest paging {'on' if m.mmu.paging else 'off'}, cr3 {m.mmu.cr3:#010x}, "
            f"{m.mmu.cached_spaces} address spaces kept\n{counters}\n")
