"""Interrupt and exception delivery through the guest's IDT (SDM vol. 3, 6.12), and the
segment checks it shares with the returns (IRET, far RET: returns.py).

All stack frames hold what the guest would see on bare metal: its own CS/SS selectors (with the
virtual RPL) and EFLAGS with the virtual IF and IOPL.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from unicorn.x86_const import (UC_X86_REG_CS, UC_X86_REG_EFLAGS, UC_X86_REG_EIP, UC_X86_REG_ESP,
                               UC_X86_REG_SS)

from .descriptors import HOLE_LAST_BYTE, Descriptor, SystemType
from .faults import GuestFault, GuestStop, Vector
from .stops import StopReason
from .guest_registers import read_register
from .vcpu import EFLAGS_NT, EFLAGS_RF, EFLAGS_TF, EFLAGS_VM

if TYPE_CHECKING:
    from .cpu_context import CpuContext

_GATES = (SystemType.INTERRUPT_GATE32, SystemType.TRAP_GATE32)


def code_segment(m: "CpuContext", selector: int, new_cpl_max: int, ext: int = 0) -> Descriptor:
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


def check_ring(cpl: int) -> None:
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
    target = code_segment(m, gate.gate_selector, vcpu.cpl, ext)
    if gate.gate_offset > target.limit or target.base + gate.gate_offset > HOLE_LAST_BYTE:
        # the handler lies beyond the code segment's limit (the installed copy's ends below
        # the monitor hole): #GP at the interrupted instruction, nothing pushed
        raise GuestFault(Vector.GP, ext)
    new_cpl = vcpu.cpl if target.conforming else target.dpl
    check_ring(new_cpl)

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
