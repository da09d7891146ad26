"""Instructions the VMM sees through Unicorn's instruction hooks rather than a fault:
CPUID and SYSENTER (hooked), and ``vmcall``, the hypercall, which arrives as #UD.

Their emulation proper is in privileged.py (cpuid, sysenter); the hypercall's meaning belongs
to the one handler registered on the hypercall bus (hypercalls.py: the HAL).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn import Uc
from unicorn.x86_const import (UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_ECX, UC_X86_REG_EDX,
                               UC_X86_REG_EIP)

from . import privileged
from .faults import GuestFault, GuestStop
from .hypercalls import HYPERCALL_MNEMONIC, HYPERCALL_SIZE, HypercallArgs, HypercallResult

if TYPE_CHECKING:
    from .cpu_context import VmmContext

SYSENTER_VECTOR = -1     # trap events of SYSENTER, which is hooked, not trapped


class InstructionHooks:
    def __init__(self, owner: "VmmContext") -> None:
        self._m = owner

    def on_cpuid(self, uc: Uc, _: object) -> bool:
        privileged.cpuid(self._m)
        return True

    def on_sysenter(self, uc: Uc, _: object) -> None:
        """SYSENTER, emulated (privileged.sysenter). Unicorn adds the instruction's 2 bytes to
        whatever EIP the hook leaves, so the hook leaves the target minus 2."""
        m = self._m
        eip = m.regs.read(UC_X86_REG_EIP)
        m.trap_eip = eip
        try:
            insn = m.decode(eip)
            try:
                if m.vcpu.cpl == 3:
                    m.syscall_entered("sysenter")
                privileged.sysenter(m)
                m.emit_trap(SYSENTER_VECTOR, eip, insn, "emulate")
            except GuestFault as fault:
                m.emit_trap(int(fault.vector), eip, insn, "reflect")
                m.reflect(fault, eip)
        except GuestStop as stop:
            m.guest_stop(stop, eip)
        except Exception as exc:  # noqa: BLE001
            m.vmm_error(exc, eip)
        m.regs.write(UC_X86_REG_EIP, (m.regs.read(UC_X86_REG_EIP) - 2) & 0xFFFFFFFF)

    def hypercall(self, eip: int) -> bool:
        """A ``vmcall`` at virtual CPL 0 with a handler registered: perform it and step over
        it. Anything else (no handler, CPL 3, another undefined opcode) is the guest's #UD."""
        m = self._m
        handler = m.hypercalls.handler
        if handler is None or m.vcpu.cpl != 0:
            return False
        try:
            if m.decode(eip).mnemonic != HYPERCALL_MNEMONIC:
                return False
        except (GuestFault, GuestStop):
            return False
        read = m.regs.read
        result: HypercallResult = handler(HypercallArgs(
            read(UC_X86_REG_EAX), read(UC_X86_REG_EBX), read(UC_X86_REG_ECX),
            read(UC_X86_REG_EDX)))
        for reg, value in ((UC_X86_REG_EAX, result.eax), (UC_X86_REG_EBX, result.ebx),
                           (UC_X86_REG_ECX, result.ecx), (UC_X86_REG_EDX, result.edx)):
            if value is not None:
                m.regs.write(reg, value & 0xFFFFFFFF)
        m.regs.write(UC_X86_REG_EIP, eip + HYPERCALL_SIZE)
        return True
