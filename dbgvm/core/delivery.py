"""Transfers of control the deprivileged guest cannot do itself: interrupt and exception
delivery through the guest IDT, and IRET / far RET back from its virtual ring 0.

All stack frames hold what the guest would see on bare metal: its own CS/SS selectors (with the
virtual RPL) and EFLAGS with the virtual IF and IOPL.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from unicorn.x86_const import (UC_X86_REG_CS, UC_X86_REG_DS, UC_X86_REG_EFLAGS, UC_X86_REG_EIP,
                               UC_X86_REG_ES, UC_X86_REG_ESP, UC_X86_REG_FS, UC_X86_REG_GS,
                               UC_X86_REG_SS)

from .descriptors import HOLE_LAST_BYTE, Descriptor, SystemType
from .faults import GuestFault, GuestStop, StopReason, Vector
from .guest_registers import read_register
from .vcpu import (EFLAGS_FIXED, EFLAGS_IF, EFLAGS_IOPL, EFLAGS_NT, EFLAGS_RESTORABLE, EFLAGS_RF,
                   EFLAGS_TF, EFLAGS_VM)

if TYPE_CHECKING:
    from .cpu_context import CpuContext

_GATES = (SystemType.INTERRUPT_GATE32, SystemType.TRAP_GATE32)


def _code_segment(m: "CpuContext", selector: int, new_cpl_max: int, ext: int = 0) -> Descriptor:
    """The guest code descriptor for a transfer to ``selector``, checked as the SDM says."""
    if selector & 0xFFFC == 0:
        raise GuestFault(Vector.GP, ext)
    desc = m.tables.descriptor(selector)
    if desc is None or not desc.is_code or m.tables.refusal(selector):
        raise GuestFault(Vector.GP, (selector & 0xFFFC) | ext)
    if desc.dpl > new_cpl_max:
        raise GuestFault(Vector.GP, (selector & 0xFFFC) | ext)
    if not desc.present:
        raise GuestFault(Vector.NP, (selector & 0xFFFC) | ext)
    return desc


def stack_segment(m: "CpuContext", selector: int, cpl: int, vector: Vector) -> Descriptor:
    """The guest stack descriptor for SS := ``selector`` at ``cpl``, checked as the SDM says
    (a bad one raises ``vector`` with the selector; a not-present one, #SS)."""
    desc = m.tables.descriptor(selector)
    if (selector & 0xFFFC == 0 or desc is None or selector & 3 != cpl or not desc.writable
            or desc.dpl != cpl or m.tables.refusal(selector)):
        raise GuestFault(vector, selector & 0xFFFC)
    if not desc.present:
        raise GuestFault(Vector.SS, selector & 0xFFFC)
    return desc


def _check_ring(cpl: int) -> None:
    if cpl not in (0, 3):
        raise GuestStop(StopReason.UNSUPPORTED, f"virtual ring {cpl} is not supported "
                        "(dbgvm runs guest rings 0 and 3)")


def deliver(m: "CpuContext", vector: int, return_eip: int, *, error_code: int | None = None,
            software: bool = False, external: bool = False) -> None:
    """Deliver ``vector`` through the guest IDT as the processor would (SDM vol. 3 ch. 6.12)."""
    vcpu = m.vcpu
    # EXT (SDM vol. 3 section 6.13): set in the error code of a fault raised while delivering
    # an event external to the program, "such as an interrupt or an earlier exception";
    # clear only while delivering a software interrupt (INT n, INT3, INTO)
    ext = 0 if software and not external else 1
    if vector * 8 + 7 > vcpu.idtr.limit:
        raise GuestFault(Vector.GP, vector * 8 + 2 + ext)
    gate = Descriptor.from_bytes(m.read_linear(vcpu.idtr.base + vector * 8, 8))
    kind = gate.system_type
    if kind is SystemType.TASK_GATE and vector == Vector.DF:
        raise GuestStop(StopReason.DOUBLE_FAULT, "guest double fault (IDT entry 0x8 is a task "
                        "gate, as Linux's; dbgvm does not switch tasks)")
    if kind is SystemType.TASK_GATE or kind in (SystemType.INTERRUPT_GATE16,
                                                 SystemType.TRAP_GATE16):
        raise GuestStop(StopReason.UNSUPPORTED,
                        f"IDT entry {vector:#x} is a {kind.name.lower()}, which dbgvm does not "
                        "deliver through")
    if kind not in _GATES:
        raise GuestFault(Vector.GP, vector * 8 + 2 + ext)
    if software and gate.dpl < vcpu.cpl:
        raise GuestFault(Vector.GP, vector * 8 + 2)
    if not gate.present:
        raise GuestFault(Vector.NP, vector * 8 + 2 + ext)
    target = _code_segment(m, gate.gate_selector, vcpu.cpl, ext)
    if gate.gate_offset > target.limit or target.base + gate.gate_offset > HOLE_LAST_BYTE:
        # the handler lies beyond the code segment's limit (the installed copy's ends below
        # the monitor hole): #GP at the interrupted instruction, nothing pushed
        raise GuestFault(Vector.GP, ext)
    new_cpl = vcpu.cpl if target.conforming else target.dpl
    _check_ring(new_cpl)

    regs = m.regs
    real_flags = regs.read(UC_X86_REG_EFLAGS)
    old_cs = read_register(m, "cs")       # the guest's view: virtual RPL
    old_ss = read_register(m, "ss")
    old_esp = regs.read(UC_X86_REG_ESP)
    frame = [vcpu.guest_eflags(real_flags), old_cs, return_eip]
    if new_cpl < vcpu.cpl:
        if vcpu.tr.selector & 0xFFFC == 0:
            raise GuestFault(Vector.TS, ext)
        ss0_esp0 = m.read_linear(vcpu.tr.base + 4, 8)
        esp0, ss0 = struct.unpack("<IH", ss0_esp0[:6])
        stack = stack_segment(m, ss0, new_cpl, Vector.TS)
        new_ss, esp, stack_base = ss0, esp0, stack.base
        frame = [old_ss, old_esp] + frame
    else:
        new_ss, esp = None, old_esp
        stack_base = m.tables.base_of(regs.read(UC_X86_REG_SS))
    if error_code is not None:
        frame.append(error_code)
    esp = (esp - 4 * len(frame)) & 0xFFFFFFFF
    m.write_linear(stack_base + esp, struct.pack(f"<{len(frame)}I", *reversed(frame)))

    m.set_cpl(new_cpl)
    if new_ss is not None:
        regs.write(UC_X86_REG_SS, new_ss | 3)
    regs.write(UC_X86_REG_ESP, esp)
    regs.write(UC_X86_REG_CS, gate.gate_selector | 3)
    regs.write(UC_X86_REG_EIP, gate.gate_offset)
    regs.write(UC_X86_REG_EFLAGS, real_flags & ~(EFLAGS_TF | EFLAGS_NT | EFLAGS_RF | EFLAGS_VM))
    if kind is SystemType.INTERRUPT_GATE32:
        m.set_vif(False, "interrupt-gate" if not software else f"int {vector:#x}")


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
    desc = _code_segment(m, new_cs, 3)
    if (desc.conforming and desc.dpl > new_cpl) or (not desc.conforming and desc.dpl != new_cpl):
        raise GuestFault(Vector.GP, new_cs & 0xFFFC)
    _check_ring(new_cpl)
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
