"""Trap dispatch: the Unicorn hooks every exception, INT n and #UD of the guest arrives at.

A software interrupt is delivered through the guest's IDT; a #PF goes to the paging unit
(fill the shadow, carry out a page-table store, or reflect); a #GP or #NP of a sensitive
instruction the guest may execute is emulated (privileged.py, looked up by the decoder);
anything else is reflected to the guest. A #UD is a hypercall (``vmcall``) or reflected.
Whatever the guest does, the host survives: an error in the VMM ends the run with
VMM_ERROR, a GuestStop with its own reason.
"""
from __future__ import annotations

import traceback
from typing import TYPE_CHECKING

from unicorn import Uc
from unicorn.x86_const import UC_X86_REG_EIP

from .decoder import Decoder
from .events import EventKind
from .faults import GuestFault, GuestStop, Vector
from .instruction_hooks import InstructionHooks
from .paging import Paging
from .privileged import NEXT, NOT_SENSITIVE
from .stops import StopReason

if TYPE_CHECKING:
    from .cpu_context import RunLoop

SYSCALL_VECTOR = 0x80      # INT 0x80: the i386 system-call gate


class TrapDispatch:
    def __init__(self, owner: "RunLoop", decoder: Decoder, paging: Paging,
                 insn_hooks: InstructionHooks) -> None:
        self._m = owner
        self._decoder = decoder
        self._paging = paging
        self._insn_hooks = insn_hooks
        self.in_exception_hook = False     # an end of the run must stop at once, not after

    def _on_intr(self, uc: Uc, intno: int, _: object) -> None:
        m = self._m
        self.in_exception_hook = True
        latch = m.latch
        latch.begin()
        eip = m.regs.read(UC_X86_REG_EIP)
        try:
            if latch.is_software_int():
                length = 1 if intno in (3, 4) and self._decoder.one_byte_int(eip - 1) else 2
                m.trap_eip = eip - length
                m.emit_at(EventKind.TRAP, m.trap_eip, vector=intno,
                          insn=m.describe_insn(m.trap_eip), action="deliver")
                if intno == SYSCALL_VECTOR and m.vcpu.cpl == 3:
                    m.syscall_entered("int 0x80")
                m.deliver_guarded(intno, eip, software=True)
            else:
                m.trap_eip = eip
                if intno == Vector.PF:
                    self._paging.page_fault(latch.error_code(), eip)
                else:
                    if intno != Vector.DB:
                        # a #DB is reported between instructions: none had started, and the
                        # arithmetic flags are where the last one left them
                        latch.settle_flags()
                    self._handle_fault(intno, latch.error_code(), eip)
        except GuestStop as stop:
            self.guest_stop(stop, m.trap_eip)
        except Exception as exc:  # noqa: BLE001 - the host must survive any guest action
            self.vmm_error(exc, m.trap_eip)
        finally:
            latch.rearm()
            self.in_exception_hook = False

    def _handle_fault(self, vector: int, error_code: int, eip: int) -> None:
        m = self._m
        vcpu = m.vcpu
        # at CPL 3 too: CLI/STI with IOPL 3, and RDTSC, which the real CR4.TSD traps for
        # virtual time while the guest's own TSD may allow it (Linux's vDSO clock_gettime)
        if vector == Vector.GP or vector == Vector.NP and vcpu.cpl == 0:
            try:
                decoded = self._decoder.decoded(eip)
            except GuestFault:
                decoded = None   # not an instruction the VMM knows: not one it emulates
            handler = decoded.handler if decoded is not None else None
            if handler is not None and (vcpu.cpl == 0 or decoded.mnemonic == "rdtsc" or (
                    decoded.mnemonic in ("cli", "sti") and vcpu.cpl <= vcpu.iopl)):
                insn = decoded.insn
                try:
                    emulation = handler(m, insn)
                except GuestFault as fault:
                    m.emit_trap(vector, eip, insn, "reflect")
                    m.reflect(fault, eip)
                    return
                if emulation is not NOT_SENSITIVE:
                    m.emit_trap(vector, eip, insn, "emulate")
                    if emulation is NEXT:
                        m.regs.write(UC_X86_REG_EIP, eip + decoded.size)
                    return
            if vector == Vector.GP and error_code & 0xFFFC and \
                    m.tables.refresh_entry(error_code, eip):
                return  # the guest edited its table since: retry with the fresh copy
        m.emit_at(EventKind.TRAP, eip, vector=vector, insn=m.describe_insn(eip),
                  action="reflect")
        m.reflect(GuestFault(vector, error_code), eip)

    def _on_invalid(self, uc: Uc, _: object) -> bool:
        m = self._m
        self.in_exception_hook = True
        eip = m.regs.read(UC_X86_REG_EIP)
        m.trap_eip = eip
        try:
            if self._insn_hooks.hypercall(eip):
                return True
            m.emit_at(EventKind.TRAP, eip, vector=int(Vector.UD), insn=m.describe_insn(eip),
                      action="reflect")
            m.deliver_guarded(Vector.UD, eip)
        except GuestStop as stop:
            self.guest_stop(stop, eip)
        except Exception as exc:  # noqa: BLE001
            self.vmm_error(exc, eip)
        finally:
            m.latch.rearm()
            self.in_exception_hook = False
        return True

    def on_unmapped(self, uc: Uc, access: int, address: int, size: int, value: int,
                    _: object) -> bool:
        m = self._m
        eip = m.regs.read(UC_X86_REG_EIP)
        m.end_run(StopReason.BAD_MEMORY,
                  f"guest access to physical {address:#x} (size {size}) outside guest RAM at "
                  f"eip {eip:#010x}: {m.describe_insn(eip)}", 1, eip)
        return False

    def guest_stop(self, stop: GuestStop, eip: int) -> None:
        """End the run for a GuestStop raised while handling the instruction at ``eip``. A
        triple fault resets a PC; dbgvm ends the run there with status 0, as QEMU does with
        -no-reboot (Linux reboots this way after a panic with panic=N)."""
        message = f"{stop.message} at eip {eip:#010x}: {self._m.describe_insn(eip)}"
        if stop.reason is StopReason.TRIPLE_FAULT:
            self._m.end_run(stop.reason, "guest reset: " + message, 0, eip)
        else:
            self._m.end_run(stop.reason, message, 1, eip)

    def vmm_error(self, exc: Exception, eip: int) -> None:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        self._m.end_run(StopReason.VMM_ERROR, f"monitor error at eip {eip:#010x} "
                        f"({self._m.describe_insn(eip)}): {detail}", 1, eip)
