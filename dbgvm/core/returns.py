"""Returns from the guest's virtual ring 0: IRET and far RET, emulated.

At real CPL 3, IRET and RETF to a guest code segment (whose installed copy has RPL 3 but whose
guest selector has RPL 0) raise #GP or #NP; privileged.py decodes them and calls these, which
pop the frame, check the target code and stack segments as the SDM says (the checks are shared
with interrupt delivery, delivery.py), restore the virtual IF and IOPL, and return to the
guest's ring 0 or 3. An IRET within ring 3 runs natively and never reaches the VMM.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from unicorn.x86_const import (UC_X86_REG_CS, UC_X86_REG_DS, UC_X86_REG_EFLAGS, UC_X86_REG_EIP,
                               UC_X86_REG_ES, UC_X86_REG_ESP, UC_X86_REG_FS, UC_X86_REG_GS,
                               UC_X86_REG_SS)

from .delivery import check_ring, code_segment, stack_segment
from .faults import GuestFault, GuestStop, Vector
from .stops import StopReason
from .vcpu import EFLAGS_FIXED, EFLAGS_IF, EFLAGS_IOPL, EFLAGS_NT, EFLAGS_RESTORABLE, EFLAGS_VM

if TYPE_CHECKING:
    from .cpu_context import CpuContext


def _null_outer_data_segments(m: "CpuContext") -> None:
    """IRET/RET to an outer ring: data segments the new ring may not use become null."""
    for reg in (UC_X86_REG_DS, UC_X86_REG_ES, UC_X86_REG_FS, UC_X86_REG_GS):
        selector = m.regs.read(reg)
        desc = m.tables.descriptor(selector) if selector & 0xFFFC else None
        if desc is not None and (desc.is_data or not desc.conforming) and desc.dpl < 3:
            m.regs.write(reg, 0)


def _return(m: "CpuContext", new_eip: int, new_cs: int, popped: int, outer_at: int,
            new_flags: int | None, pop_extra: int = 0, word: int = 4) -> None:
    """Common tail of IRET and far RET: checks, then the (possibly outer-ring) return.
    ``word``: the operand size (2 for a 16-bit far RET, whose outer SP:SS are words too)."""
    vcpu, regs = m.vcpu, m.regs
    new_cpl = new_cs & 3
    if new_cpl < vcpu.cpl:
        raise GuestFault(Vector.GP, new_cs & 0xFFFC)
    desc = code_segment(m, new_cs, 3)
    if (desc.conforming and desc.dpl > new_cpl) or (not desc.conforming and desc.dpl != new_cpl):
        raise GuestFault(Vector.GP, new_cs & 0xFFFC)
    check_ring(new_cpl)
    ss_base = m.tables.base_of(regs.read(UC_X86_REG_SS))
    esp = regs.read(UC_X86_REG_ESP)
    outer = None
    if new_cpl > vcpu.cpl:
        new_esp, new_ss = struct.unpack("<II" if word == 4 else "<HH",
                                        m.read_linear(ss_base + esp + outer_at, 2 * word))
        new_ss &= 0xFFFF
        stack_segment(m, new_ss, new_cpl, Vector.GP)
        outer = (new_esp + pop_extra) & 0xFFFFFFFF, new_ss
    if new_flags is not None:
        if new_flags & EFLAGS_VM:
            raise GuestStop(StopReason.UNSUPPORTED, "IRET to virtual-8086 mode is not supported")
        if vcpu.cpl == 0:
            vcpu.iopl = (new_flags & EFLAGS_IOPL) >> 12
        if vcpu.cpl <= vcpu.iopl or vcpu.cpl == 0:
            m.set_vif(bool(new_flags & EFLAGS_IF), "iret")
        regs.write(UC_X86_REG_EFLAGS, (new_flags & EFLAGS_RESTORABLE) | EFLAGS_FIXED)
        m.mirror_vif()
    m.set_cpl(new_cpl)
    regs.write(UC_X86_REG_CS, new_cs | 3)
    regs.write(UC_X86_REG_EIP, new_eip)
    if outer is None:
        regs.write(UC_X86_REG_ESP, (esp + popped + pop_extra) & 0xFFFFFFFF)
    else:
        regs.write(UC_X86_REG_SS, outer[1])
        regs.write(UC_X86_REG_ESP, outer[0])
        _null_outer_data_segments(m)
        if new_cpl == 3:
            m.returned_to_user()


def emulate_iret(m: "CpuContext") -> None:
    """IRET (32-bit operand size) from the guest's virtual ring 0."""
    regs = m.regs
    if regs.read(UC_X86_REG_EFLAGS) & EFLAGS_NT:
        raise GuestStop(StopReason.UNSUPPORTED, "IRET with EFLAGS.NT (task return) is not "
                        "supported")
    ss_base = m.tables.base_of(regs.read(UC_X86_REG_SS))
    esp = regs.read(UC_X86_REG_ESP)
    new_eip, new_cs, new_flags = struct.unpack("<III", m.read_linear(ss_base + esp, 12))
    _return(m, new_eip, new_cs & 0xFFFF, 12, 12, new_flags)


def emulate_retf(m: "CpuContext", pop_extra: int, word: int = 4) -> None:
    """Far RET (32-bit operand size, or 16-bit with ``word`` 2: IP and CS are words and EIP
    is zero-extended; optional imm16) from the guest's virtual ring 0."""
    regs = m.regs
    ss_base = m.tables.base_of(regs.read(UC_X86_REG_SS))
    esp = regs.read(UC_X86_REG_ESP)
    new_eip, new_cs = struct.unpack("<II" if word == 4 else "<HH",
                                    m.read_linear(ss_base + esp, 2 * word))
    _return(m, new_eip, new_cs & 0xFFFF, 2 * word, 2 * word + pop_extra, None, pop_extra, word)
