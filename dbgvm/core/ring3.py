"""Entering real ring 3, once, at start-up; the VMM's own layout of the VMM hole.

Writing CS or SS with ``reg_write`` does not change Unicorn's CPL, so the machine reaches CPL 3
through a one-instruction IRET trampoline run at CPL 0 with a temporary ring-0 GDT, and stays
there: from then on every privileged instruction of the guest traps (docs/design.md, 4).
"""
from __future__ import annotations

import struct
from collections.abc import Callable

from unicorn import Uc
from unicorn.x86_const import (UC_X86_REG_CR0, UC_X86_REG_CR4, UC_X86_REG_CS, UC_X86_REG_DS,
                               UC_X86_REG_ES, UC_X86_REG_ESP, UC_X86_REG_FS, UC_X86_REG_GDTR,
                               UC_X86_REG_GS, UC_X86_REG_SS)

from .descriptors import VMM_HOLE, Descriptor
from .fast_regs import FastRegisters
from .segments import BOOT_CS, BOOT_DS, SegmentTables, TableLayout
from .vcpu import CR0_ET, CR0_PE, CR0_PG, CR0_WP, CR4_TSD

TABLES = TableLayout(gdt_ring0=VMM_HOLE, gdt_ring3=VMM_HOLE + 0x10000,
                     ldt_ring0=VMM_HOLE + 0x20000, ldt_ring3=VMM_HOLE + 0x30000)
TRAMPOLINE = VMM_HOLE + 0x40000
TRAMPOLINE_STACK = VMM_HOLE + 0x41000
VMM_CS, VMM_SS = 0x20, 0x28       # ring-0 selectors used once, by the trampoline
BOOT_ESP = 0x7C00
DATA_SEGS = (UC_X86_REG_DS, UC_X86_REG_ES, UC_X86_REG_FS, UC_X86_REG_GS)


def enter_ring3(uc: Uc, regs: FastRegisters, tables: SegmentTables,
                paging_changed: Callable[[str], None]) -> None:
    """Reach real CPL 3 once, through a one-instruction IRET at CPL 0, and stay there."""
    ring0 = (Descriptor(0x00CF9A000000FFFF), Descriptor(0x00CF92000000FFFF))
    uc.mem_write(TABLES.gdt_ring0 + VMM_CS, b"".join(d.pack() for d in ring0))
    uc.reg_write(UC_X86_REG_GDTR, (0, TABLES.gdt_ring0, VMM_SS + 7, 0))
    regs.write(UC_X86_REG_SS, VMM_SS)
    regs.write(UC_X86_REG_CS, VMM_CS)
    for reg in DATA_SEGS:
        regs.write(reg, VMM_SS)
    uc.mem_write(TRAMPOLINE, b"\xcf")  # iret
    uc.mem_write(TRAMPOLINE_STACK, struct.pack("<5I", 0, BOOT_CS | 3, 2, BOOT_ESP,
                                               BOOT_DS | 3))
    regs.write(UC_X86_REG_ESP, TRAMPOLINE_STACK)
    uc.ctl_exits_enabled(True)
    uc.ctl_set_exits([])
    uc.emu_start(TRAMPOLINE, 0, count=1)
    uc.mem_write(TABLES.gdt_ring0 + VMM_CS, bytes(16))
    tables.apply_view()
    for reg in DATA_SEGS:
        regs.write(reg, BOOT_DS)
    # Real CR4.TSD makes RDTSC trap at CPL 3 so the VMM can give virtual time; real
    # paging is always on (shadow_mmu.py).
    uc.reg_write(UC_X86_REG_CR4, CR4_TSD)
    paging_changed("boot")
    uc.reg_write(UC_X86_REG_CR0, CR0_PE | CR0_ET | CR0_WP | CR0_PG)
    uc.ctl_flush_tb()
