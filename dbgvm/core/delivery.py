"""Interrupt and exception delivery through the guest's IDT (SDM vol. 3, 6.12), the segment
checks it shares with the returns (IRET, far RET: returns.py), and the VMM's side of it:
reflecting a fault the guest caused back to the guest, escalating to #DF and a triple fault
as the CPU does.

All stack frames hold what the guest would see on bare metal: its own CS/SS selectors (with the
virtual RPL) and EFLAGS with the virtual IF and IOPL.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from unicorn.x86_const import (UC_X86_REG_CS, UC_X86_REG_EFLAGS, UC_X86_REG_EIP, UC_X86_REG_ESP,
                               UC_X86_REG_SS)

from .descriptors import HOLE_LAST_BYTE, Descriptor, SystemType
from .events import EventKind
from .faults import HAS_ERROR_CODE, GuestFault, GuestStop, Vector
from .stops import StopReason
from .guest_registers import read_register
from .vcpu import EFLAGS_NT, EFLAGS_RF, EFLAGS_TF, EFLAGS_VM

if TYPE_CHECKING:
    from .cpu_context import CpuContext, VmmContext

_GATES = (SystemType.INTERRUPT_GATE32, SystemType.TRAP_GATE32)
_CONTRIBUTORY = frozenset({Vector.DE, Vector.TS, Vector.NP, Vector.SS, Vector.GP, Vector.PF})


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
        # the VMM hole): #GP at the interrupted instruction, nothing pushed
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


def reflect(m: "VmmContext", fault: GuestFault, eip: int) -> None:
    """Deliver a fault the guest caused to the guest itself, at the faulting instruction."""
    if fault.vector == Vector.GP and fault.error_code & 0xFFFC:
        reason = m.tables.refusal(fault.error_code)
        if reason:
            m.emit_at(EventKind.DESC, eip, table="ldt" if fault.error_code & 4 else "gdt",
                      op="fault", index=fault.error_code >> 3, reason=reason)
    if fault.cr2 is not None:
        m.vcpu.cr2 = fault.cr2
    code = fault.error_code if fault.vector in HAS_ERROR_CODE else None
    deliver_guarded(m, fault.vector, eip, error_code=code)


def deliver_guarded(m: "VmmContext", vector: int, return_eip: int, *,
                    error_code: int | None = None, software: bool = False,
                    external: bool = False) -> None:
    """Deliver, escalating to #DF and then to a triple-fault stop as the CPU does."""
    try:
        deliver(m, vector, return_eip, error_code=error_code, software=software,
                external=external)
    except GuestFault as fault:
        if vector == Vector.DF:
            raise GuestStop(StopReason.TRIPLE_FAULT,
                            f"triple fault: delivering #DF raised vector {fault.vector} "
                            f"error {fault.error_code:#x}") from None
        # SDM vol. 3 table 6-5: a contributory fault (or #PF) while delivering one of
        # those is a double fault; anything else is delivered in turn.
        benign = software or external or vector not in _CONTRIBUTORY
        fault_eip = m.trap_eip if software else return_eip
        if benign or fault.vector not in _CONTRIBUTORY:
            m.emit_at(EventKind.TRAP, fault_eip, vector=fault.vector,
                      insn=m.describe_insn(fault_eip), action="reflect")
            reflect(m, fault, fault_eip)
        else:
            m.emit_at(EventKind.TRAP, fault_eip, vector=int(Vector.DF),
                      insn=m.describe_insn(fault_eip), action="reflect")
            try:
                deliver_guarded(m, Vector.DF, return_eip, error_code=0)
            except GuestStop as stop:
                if stop.reason is not StopReason.DOUBLE_FAULT:
                    raise
                raise GuestStop(stop.reason, f"{stop.message}: delivering vector "
                                f"{vector} raised vector {fault.vector} error "
                                f"{fault.error_code:#x}; frame: {crash_frame(m)}") from None


def crash_frame(m: "CpuContext") -> str:
    """The registers a crash report needs, in one line."""
    r = {name: read_register(m, name) for name in ("cs", "eip", "ss", "esp", "eflags", "cr2",
                                                   "cr3")}
    return (f"cs:eip {r['cs']:#06x}:{r['eip']:#010x} ss:esp {r['ss']:#06x}:{r['esp']:#010x} "
            f"eflags {r['eflags']:#010x} cr2 {r['cr2']:#010x} cr3 {r['cr3']:#010x}")
