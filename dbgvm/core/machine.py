"""The Machine: guest RAM, the deprivileged CPU, the run loop and trap dispatch.

Guest code, kernel and user alike, runs at real CPL 3 inside Unicorn. Whatever it may not do
there traps into this monitor, which emulates it against the virtual CPU (vcpu.py) and reports
each step as an event. Front ends (CLI, gdb stub, monitor prompt, tests) use only the public
methods of this class.
"""
from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields, replace

from capstone import CsInsn
from unicorn import (UC_ARCH_X86, UC_HOOK_INSN, UC_HOOK_INSN_INVALID, UC_HOOK_INTR,
                     UC_HOOK_MEM_FETCH_UNMAPPED, UC_HOOK_MEM_READ_UNMAPPED,
                     UC_HOOK_MEM_WRITE_UNMAPPED, UC_MODE_32, Uc, UcError)
from unicorn.x86_const import (UC_X86_INS_CPUID, UC_X86_INS_IN, UC_X86_INS_OUT,
                               UC_X86_INS_SYSENTER, UC_X86_REG_CR3, UC_X86_REG_EAX,
                               UC_X86_REG_EBP, UC_X86_REG_EBX, UC_X86_REG_ECX, UC_X86_REG_EDI,
                               UC_X86_REG_EDX, UC_X86_REG_EFLAGS, UC_X86_REG_EIP,
                               UC_X86_REG_ESI, UC_X86_REG_ESP, UC_X86_REG_SS)

from .clock import VirtualClock
from .debug import Debugger
from .debug_ports import CONSOLE_PORT, EXIT_PORT, DebugConsole, DebugExit
from .decoder import Decoder
from .delivery import deliver
from .descriptor_watch import DescriptorWatch
from .events import Event, EventBus, EventKind
from .fast_regs import FastRegisters
from .faults import HAS_ERROR_CODE, GuestFault, GuestStop, Vector
from .stops import Stop, StopReason
from .guest_registers import read_register, write_register
from .hypercalls import HypercallBus
from .inputs import InputQueue
from .instruction_hooks import InstructionHooks
from .loader import BootImage
from .memory import GuestMemory
from .paging import Paging
from .pic import MASTER_PORTS, SLAVE_PORTS, Pic
from .pit import IRQ_LINE as PIT_IRQ
from .pit import PIT_PORTS, SYSTEM_CONTROL_PORT, Pit
from .port_bus import PortBus
from .port_io import PortIo
from .ring3 import TABLES, enter_ring3
from .segments import SegmentTables
from .snapshot import Part, SnapshotStore
from .syscalls import SyscallTracker
from .uc_internals import ExceptionLatch, InstructionCounter, calibrated_layout
from .vcpu import EFLAGS_IF, GuestRegisters, VirtualCpu

DEFAULT_RAM_MB = 64
QUANTUM = 1 << 20
MAX_RAM_MB = 3072
MAX_FILLS_PER_INSN = 8   # code pages, data pages and a stack page of one instruction, at most

SYSCALL_VECTOR = 0x80      # INT 0x80: the i386 system-call gate
_SYSCALL_ARGS = (UC_X86_REG_EBX, UC_X86_REG_ECX, UC_X86_REG_EDX, UC_X86_REG_ESI, UC_X86_REG_EDI,
                 UC_X86_REG_EBP)
_CONTRIBUTORY = frozenset({Vector.DE, Vector.TS, Vector.NP, Vector.SS, Vector.GP, Vector.PF})


class Machine:
    def __init__(self, ram_mb: int = DEFAULT_RAM_MB,
                 console: Callable[[bytes], None] | None = None) -> None:
        if not 2 <= ram_mb <= MAX_RAM_MB:
            raise ValueError(f"guest RAM must be 2..{MAX_RAM_MB} MiB, not {ram_mb}")
        layout = calibrated_layout()
        self.ram_size = ram_mb << 20
        self.uc = uc = Uc(UC_ARCH_X86, UC_MODE_32)
        self.regs = FastRegisters(uc)
        self.latch = ExceptionLatch(uc, layout)
        self._counter = InstructionCounter(uc, layout)

        self.events = EventBus()
        self.syscalls = SyscallTracker(self.emit_at, self.events.wants)
        self.vcpu = VirtualCpu()
        self.icount = 0
        self.trap_eip = 0
        self.clock = VirtualClock(self.current_icount)
        self.inputs = InputQueue()
        self.console_output = bytearray()
        self._console = console or self.console_output.extend
        self.ports = PortBus()
        self.hypercalls = HypercallBus()
        self._until_time: int | None = None
        self.pic = Pic()
        self.pit = Pit(self.clock.now, self.pic.raise_irq)
        self.ports.register(MASTER_PORTS, self.pic)
        self.ports.register(SLAVE_PORTS, self.pic)
        self.ports.register(PIT_PORTS, self.pit)
        self.ports.register(range(SYSTEM_CONTROL_PORT, SYSTEM_CONTROL_PORT + 1), self.pit)
        self.ports.register(range(CONSOLE_PORT, CONSOLE_PORT + 1), DebugConsole(self._console))
        self.ports.register(range(EXIT_PORT, EXIT_PORT + 1), DebugExit(self._debug_exit))
        self.clock.add_timer(self.pit)
        self.clock.add_timer(self.inputs)        # inputs scheduled by a replay

        # The monitor's parts, each given this machine as its MonitorContext (cpu_context.py).
        # Their methods that belong to the Machine's API, or that the emulation code calls
        # through a CpuContext, are bound here once: no extra call on the trap path.
        self.memory = memory = GuestMemory(uc, self.ram_size, self, self._emit_pt)
        self.ram, self.hole, self.mmu = memory.ram, memory.hole, memory.mmu
        self.read_linear = memory.read_linear
        self.write_linear = memory.write_linear
        self.read_physical = memory.read_physical
        self.write_physical = memory.write_physical
        self.tables = SegmentTables(uc, TABLES, self.read_linear, self.emit_at,
                                    lambda: self.trap_eip)
        self.descriptor_watch = DescriptorWatch(
            uc, self.tables, lambda linear: self.mmu.guest_walk(linear, False, False),
            lambda: self.regs.read(UC_X86_REG_EIP))
        self.debug = Debugger(self, memory)
        self.sync_exits = self.debug.sync_exits
        self.decoder = decoder = Decoder(self)
        self.decode = decoder.decode
        self.describe_insn = decoder.describe
        self._decode = decoder.decoded
        self.paging = paging = Paging(self, decoder)
        self.read_cr, self.write_cr = paging.read_cr, paging.write_cr
        self.invlpg = paging.invlpg
        self.descriptor_tables_moved = paging.descriptor_tables_moved
        self.port_io = port_io = PortIo(self)
        self.read_tsc = port_io.read_tsc
        self.insn_hooks = insn_hooks = InstructionHooks(self)
        self.symbols: dict[str, int] = {}

        # the run loop's state
        self.restarts = 0                # instructions restarted in this quantum (shadow fills)
        self.trap_counted = True
        self.after_step: list[Callable[[], None]] = []   # run once the next instruction retired
        self._in_exception_hook = False
        self._stepping = False
        self.irqs_while_stepping = False
        self._in_quantum = False
        self._quantum_base = 0
        self._quantum_budget = 0
        self._boundary_pos: int | None = None
        self._stop: Stop | None = None
        self._halted = False
        self._shadow_until = 0

        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        uc.hook_add(UC_HOOK_INSN_INVALID, self._on_invalid)
        uc.hook_add(UC_HOOK_INSN, port_io.on_in, None, 1, 0, UC_X86_INS_IN)
        uc.hook_add(UC_HOOK_INSN, port_io.on_out, None, 1, 0, UC_X86_INS_OUT)
        uc.hook_add(UC_HOOK_INSN, insn_hooks.on_cpuid, None, 1, 0, UC_X86_INS_CPUID)
        uc.hook_add(UC_HOOK_INSN, insn_hooks.on_sysenter, None, 1, 0, UC_X86_INS_SYSENTER)
        uc.hook_add(UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED |
                    UC_HOOK_MEM_FETCH_UNMAPPED, self._on_unmapped)
        enter_ring3(uc, self.regs, self.tables, paging.paging_changed)
        self.state_parts: list[Part] = []        # devices' state, for snapshots
        self._snapshots: SnapshotStore | None = None
        self._debugger_suspended = False
        # (eip, icount) where the current run began: a stop-before hook skips that point,
        # as resuming from a breakpoint runs its instruction
        self.run_start = (-1, -1)

    # -- start-up ---------------------------------------------------------------------------
    def load(self, image: BootImage) -> None:
        """Place a boot image in guest RAM and set the Multiboot entry registers."""
        for chunk in image.chunks:
            self.ram[chunk.paddr:chunk.paddr + len(chunk.data)] = chunk.data
            tail = chunk.memsz - len(chunk.data)
            if tail > 0:
                start = chunk.paddr + len(chunk.data)
                self.ram[start:start + tail] = bytes(tail)
        self.symbols = dict(image.symbols)
        self.regs.write(UC_X86_REG_EIP, image.entry)
        if image.multiboot:
            self.regs.write(UC_X86_REG_EAX, image.eax)
            self.regs.write(UC_X86_REG_EBX, image.ebx)
        for name, value in image.entry_registers:
            write_register(self, name, value)
        self.uc.ctl_flush_tb()

    # -- time and events ---------------------------------------------------------------------
    def current_icount(self) -> int:
        """Instructions retired so far; inside a trap, those before the trapping instruction."""
        if self._in_quantum:
            # The trapping instruction itself has been counted by Unicorn unless fetching it
            # is what faulted.
            return (self._quantum_base + self._counter.read() - self.restarts
                    - self.trap_counted)
        return self.icount

    def emit_at(self, kind: EventKind, eip: int, **fields: object) -> None:
        if self.events.wants(kind):
            self.events.publish(Event(self.current_icount(), kind, eip, fields))

    def syscall_entered(self, via: str) -> None:
        """A user process calls its kernel (INT 0x80, SYSENTER): EAX is the number, and the
        arguments are in EBX, ECX, EDX, ESI, EDI, EBP (i386 ABI; through SYSENTER the vDSO
        has pushed the sixth, EBP, at the user stack's top: None when it cannot be read).
        Nothing is read while nobody listens to `syscall` events."""
        if not self.events.wants(EventKind.SYSCALL):
            return
        read = self.regs.read
        esp = read(UC_X86_REG_ESP)
        args: list[int | None] = [read(r) for r in _SYSCALL_ARGS]
        if via == "sysenter":
            try:
                stack = self.tables.base_of(read(UC_X86_REG_SS)) + esp
                args[5] = int.from_bytes(self.read_linear(stack, 4), "little")
            except (GuestFault, GuestStop):
                args[5] = None
        self.syscalls.entered(self.trap_eip, via, self.vcpu.cr3, esp, read(UC_X86_REG_EAX),
                              args)

    def returned_to_user(self) -> None:
        """An IRET or SYSEXIT just made the virtual CPL 3: perhaps a system call's return."""
        if self.syscalls.expecting:
            self.syscalls.returned(self.trap_eip, self.vcpu.cr3,
                                   self.regs.read(UC_X86_REG_ESP),
                                   self.regs.read(UC_X86_REG_EAX))

    def emit(self, kind: EventKind, **fields: object) -> None:
        """Publish an event from a device, at the instruction being handled."""
        self.emit_at(kind, self.trap_eip, **fields)

    def _emit_pt(self, op: str, eip: int, **fields: object) -> None:
        self.emit_at(EventKind.PT, eip, op=op, **fields)

    def emit_trap(self, vector: int, eip: int, insn: CsInsn, action: str) -> None:
        if self.events.wants(EventKind.TRAP):
            self.emit_at(EventKind.TRAP, eip, vector=vector,
                         insn=f"{insn.mnemonic} {insn.op_str}".strip(), action=action)

    def quantum_end_time(self) -> int | None:
        """Virtual time at which the running quantum would end (None between quanta)."""
        if not self._in_quantum:
            return None
        return self.clock.now() + self._quantum_base + self._quantum_budget - \
            self.current_icount()

    def power_off(self, status: int, message: str) -> None:
        """A device ends the run on the guest's behalf (the HAL's system POWEROFF)."""
        self._end(StopReason.POWEROFF, message, status)

    def raise_irq(self, line: int) -> None:
        """A device raises an interrupt line of the virtual 8259 pair."""
        self.pic.raise_irq(line)
        if self.vcpu.vif and self.pic.pending():
            self.request_boundary()

    def set_vif(self, value: bool, cause: str) -> None:
        if self.vcpu.vif == value:
            return
        self.vcpu.vif = value
        self.mirror_vif()
        if self.events.wants(EventKind.VIF):
            self.emit_at(EventKind.VIF, self.trap_eip, **{"from": int(not value), "to": int(value),
                                                        "cause": cause})
        if value and self.pic.pending():
            self.request_boundary()

    def mirror_vif(self) -> None:
        """Keep the real EFLAGS.IF equal to the virtual IF, so that PUSHF (which does not
        trap at CPL 3) shows the guest its own interrupt flag. Safe: Unicorn never takes a
        hardware interrupt, and POPF at CPL 3 with IOPL 0 leaves the real IF alone. Called
        wherever the monitor writes EFLAGS."""
        flags = self.regs.read(UC_X86_REG_EFLAGS)
        wanted = flags | EFLAGS_IF if self.vcpu.vif else flags & ~EFLAGS_IF
        if wanted != flags:
            self.regs.write(UC_X86_REG_EFLAGS, wanted)

    def set_cpl(self, cpl: int) -> None:
        self.vcpu.cpl = cpl
        self.tables.set_ring3_view(cpl == 3)
        self.uc.reg_write(UC_X86_REG_CR3, self.mmu.root(cpl == 3).pd_addr)
        self.sync_exits()

    def interrupt_shadow(self) -> None:
        """After STI, the next instruction runs before any interrupt is taken."""
        self._shadow_until = self.current_icount() + 2

    def halt(self) -> None:
        self._halted = True
        self.request_boundary()

    def request_boundary(self) -> None:
        """End the quantum after the current instruction (counted as one)."""
        if self._in_quantum and self._boundary_pos is None:
            self._boundary_pos = self._counter.read()
            self._counter.stop_after_current()

    def _end(self, reason: StopReason, message: str, exit_status: int, eip: int | None = None
             ) -> None:
        if self._stop is None:
            eip = self.regs.read(UC_X86_REG_EIP) if eip is None else eip
            self._stop = Stop(reason, message, eip, self.current_icount(), exit_status)
        self.request_boundary()
        if self._in_exception_hook:
            # The faulting instruction would only fault again: stop now, not after it.
            self.uc.emu_stop()

    def _debug_exit(self, status: int) -> None:
        self._end(StopReason.DEBUG_EXIT, f"guest wrote to the debug-exit port: status {status}",
                  status)

    # -- registers ---------------------------------------------------------------------------
    def registers(self) -> GuestRegisters:
        """A snapshot of the guest's register file, as the guest sees it."""
        values = {f.name: read_register(self, f.name) for f in fields(GuestRegisters)}
        return GuestRegisters(**{**values, "vif": bool(values["vif"])})

    def write_register(self, name: str, value: int) -> None:
        """Set any register by name, as the guest sees it (RegisterError when impossible)."""
        write_register(self, name, value)

    # -- trap dispatch -----------------------------------------------------------------------
    def _on_intr(self, uc: Uc, intno: int, _: object) -> None:
        self._in_exception_hook = True
        latch = self.latch
        latch.begin()
        eip = self.regs.read(UC_X86_REG_EIP)
        try:
            if latch.is_software_int():
                length = 1 if intno in (3, 4) and self.decoder.one_byte_int(eip - 1) else 2
                self.trap_eip = eip - length
                self.emit_at(EventKind.TRAP, self.trap_eip, vector=intno,
                           insn=self.describe_insn(self.trap_eip), action="deliver")
                if intno == SYSCALL_VECTOR and self.vcpu.cpl == 3:
                    self.syscall_entered("int 0x80")
                self.deliver_guarded(intno, eip, software=True)
            else:
                self.trap_eip = eip
                if intno == Vector.PF:
                    self.paging.page_fault(latch.error_code(), eip)
                else:
                    latch.settle_flags()
                    self._handle_fault(intno, latch.error_code(), eip)
        except GuestStop as stop:
            self.guest_stop(stop, self.trap_eip)
        except Exception as exc:  # noqa: BLE001 - the host must survive any guest action
            self.monitor_error(exc, self.trap_eip)
        finally:
            self.latch.rearm()
            self._in_exception_hook = False

    def _handle_fault(self, vector: int, error_code: int, eip: int) -> None:
        # at CPL 3 too: CLI/STI with IOPL 3, and RDTSC, which the real CR4.TSD traps for
        # virtual time while the guest's own TSD may allow it (Linux's vDSO clock_gettime)
        if vector == Vector.GP or vector == Vector.NP and self.vcpu.cpl == 0:
            try:
                decoded = self._decode(eip)
            except GuestFault:
                decoded = None   # not an instruction the monitor knows: not one it emulates
            handler = decoded.handler if decoded is not None else None
            if handler is not None and (self.vcpu.cpl == 0 or decoded.mnemonic == "rdtsc" or (
                    decoded.mnemonic in ("cli", "sti") and self.vcpu.cpl <= self.vcpu.iopl)):
                insn = decoded.insn
                try:
                    jumped = handler(self, insn)
                except GuestFault as fault:
                    self.emit_trap(vector, eip, insn, "reflect")
                    self.reflect(fault, eip)
                    return
                if jumped is not None:
                    self.emit_trap(vector, eip, insn, "emulate")
                    if not jumped:
                        self.regs.write(UC_X86_REG_EIP, eip + decoded.size)
                    return
            if vector == Vector.GP and error_code & 0xFFFC and \
                    self.tables.refresh_entry(error_code, eip):
                return  # the guest edited its table since: retry with the fresh copy
        self.emit_at(EventKind.TRAP, eip, vector=vector, insn=self.describe_insn(eip),
                   action="reflect")
        self.reflect(GuestFault(vector, error_code), eip)

    def reflect(self, fault: GuestFault, eip: int) -> None:
        """Deliver a fault the guest caused to the guest itself, at the faulting instruction."""
        if fault.vector == Vector.GP and fault.error_code & 0xFFFC:
            reason = self.tables.refusal(fault.error_code)
            if reason:
                self.emit_at(EventKind.DESC, eip, table="ldt" if fault.error_code & 4 else "gdt",
                           op="fault", index=fault.error_code >> 3, reason=reason)
        if fault.cr2 is not None:
            self.vcpu.cr2 = fault.cr2
        code = fault.error_code if fault.vector in HAS_ERROR_CODE else None
        self.deliver_guarded(fault.vector, eip, error_code=code)

    def deliver_guarded(self, vector: int, return_eip: int, *, error_code: int | None = None,
                         software: bool = False, external: bool = False) -> None:
        """Deliver, escalating to #DF and then to a triple-fault stop as the CPU does."""
        try:
            deliver(self, vector, return_eip, error_code=error_code, software=software,
                    external=external)
        except GuestFault as fault:
            if vector == Vector.DF:
                raise GuestStop(StopReason.TRIPLE_FAULT,
                                f"triple fault: delivering #DF raised vector {fault.vector} "
                                f"error {fault.error_code:#x}") from None
            # SDM vol. 3 table 6-5: a contributory fault (or #PF) while delivering one of
            # those is a double fault; anything else is delivered in turn.
            benign = software or external or vector not in _CONTRIBUTORY
            fault_eip = self.trap_eip if software else return_eip
            if benign or fault.vector not in _CONTRIBUTORY:
                self.emit_at(EventKind.TRAP, fault_eip, vector=fault.vector,
                           insn=self.describe_insn(fault_eip), action="reflect")
                self.reflect(fault, fault_eip)
            else:
                self.emit_at(EventKind.TRAP, fault_eip, vector=int(Vector.DF),
                           insn=self.describe_insn(fault_eip), action="reflect")
                try:
                    self.deliver_guarded(Vector.DF, return_eip, error_code=0)
                except GuestStop as stop:
                    if stop.reason is not StopReason.DOUBLE_FAULT:
                        raise
                    raise GuestStop(stop.reason, f"{stop.message}: delivering vector "
                                    f"{vector} raised vector {fault.vector} error "
                                    f"{fault.error_code:#x}; frame: {self._frame()}") from None

    def _frame(self) -> str:
        """The registers a crash report needs, in one line."""
        r = self.registers()
        return (f"cs:eip {r.cs:#06x}:{r.eip:#010x} ss:esp {r.ss:#06x}:{r.esp:#010x} "
                f"eflags {r.eflags:#010x} cr2 {r.cr2:#010x} cr3 {r.cr3:#010x}")

    def _on_invalid(self, uc: Uc, _: object) -> bool:
        self._in_exception_hook = True
        eip = self.regs.read(UC_X86_REG_EIP)
        self.trap_eip = eip
        try:
            if self.insn_hooks.hypercall(eip):
                return True
            self.emit_at(EventKind.TRAP, eip, vector=int(Vector.UD), insn=self.describe_insn(eip),
                       action="reflect")
            self.deliver_guarded(Vector.UD, eip)
        except GuestStop as stop:
            self.guest_stop(stop, eip)
        except Exception as exc:  # noqa: BLE001
            self.monitor_error(exc, eip)
        finally:
            self.latch.rearm()
            self._in_exception_hook = False
        return True

    def _on_unmapped(self, uc: Uc, access: int, address: int, size: int, value: int,
                     _: object) -> bool:
        eip = self.regs.read(UC_X86_REG_EIP)
        self._end(StopReason.BAD_MEMORY,
                  f"guest access to physical {address:#x} (size {size}) outside guest RAM at "
                  f"eip {eip:#010x}: {self.describe_insn(eip)}", 1, eip)
        return False

    def guest_stop(self, stop: GuestStop, eip: int) -> None:
        """End the run for a GuestStop raised while handling the instruction at ``eip``. A
        triple fault resets a PC; dbgvm ends the run there with status 0, as QEMU does with
        -no-reboot (Linux reboots this way after a panic with panic=N)."""
        if stop.reason is StopReason.TRIPLE_FAULT:
            self._end(stop.reason, "guest reset: " + self._stop_message(stop.message, eip), 0,
                      eip)
        else:
            self._end(stop.reason, self._stop_message(stop.message, eip), 1, eip)

    def _stop_message(self, message: str, eip: int) -> str:
        return f"{message} at eip {eip:#010x}: {self.describe_insn(eip)}"

    def monitor_error(self, exc: Exception, eip: int) -> None:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        self._end(StopReason.MONITOR_ERROR,
                  f"monitor error at eip {eip:#010x} ({self.describe_insn(eip)}): {detail}", 1,
                  eip)

    # -- the run loop ------------------------------------------------------------------------
    def _boundary(self) -> None:
        """Between quanta: timers, inputs, waking from HLT, and taking an interrupt."""
        self.clock.expire()
        if self.inputs.pending():
            self.inputs.apply(self.icount, self.clock.now())
        eip = self.regs.read(UC_X86_REG_EIP)
        self.trap_eip = eip
        if self._halted:
            if not self.vcpu.vif:
                self._end(StopReason.HALTED, f"HLT with the virtual IF clear at eip {eip - 1:#010x}"
                          ": nothing can wake the CPU", 0, eip)
                return
            if not self._idle(eip):
                return
            self._halted = False
        if self.icount < self._shadow_until or not self.vcpu.vif or not self.pic.pending() \
                or self._stepping:
            return
        acked = self.pic.acknowledge()
        if acked is None:
            return
        vector, line = acked
        self.emit_at(EventKind.IRQ, eip, vector=vector, line=line)
        try:
            self.deliver_guarded(vector, eip, external=True)
        except GuestStop as stop:
            self.guest_stop(stop, eip)
        except Exception as exc:  # noqa: BLE001
            self.monitor_error(exc, eip)

    @property
    def halted(self) -> bool:
        """In HLT, waiting for an interrupt."""
        return self._halted

    def wakeup_time(self) -> int | None:
        """Virtual time of the next timer interrupt that can reach the CPU, or of the next
        scheduled (replayed) input (None: nothing will come)."""
        deadlines = [self.inputs.next_deadline(),
                     None if self.pic.masked(PIT_IRQ) else self.pit.next_deadline()]
        return min((d for d in deadlines if d is not None), default=None)

    def _idle(self, eip: int) -> bool:
        """HLT with the virtual IF set: let virtual time pass until an interrupt is pending
        (True), or end the run (False). Time jumps from timer deadline to timer deadline
        (or a replayed input's time). A run with ``until_time`` idles no further than that
        and ends with TIME_SLICE: a front end waiting for outside input (dbgvm/domains.py)
        runs in slices and decides there how long to wait."""
        while not self.pic.pending():
            if self.inputs.pending():
                self.inputs.apply(self.icount, self.clock.now())
                continue
            deadline = self.wakeup_time()
            until = self._until_time
            if until is not None and (deadline is None or deadline > until):
                self.clock.idle_until(until)
                self._end(StopReason.TIME_SLICE, "idle to the end of the time slice", 0, eip)
                return False
            if deadline is None:
                self._end(StopReason.HALTED, f"HLT at eip {eip - 1:#010x} with no timer "
                          "interrupt that can arrive and none pending", 0, eip)
                return False
            self.clock.idle_until(deadline)
            self.clock.expire()
        return True

    def run(self, max_insns: int | None = None, *,
            interrupted: Callable[[], bool] | None = None,
            until_time: int | None = None, pause: bool = False) -> Stop:
        """Run until the guest ends, something stops it, or ``max_insns`` more instructions.
        ``interrupted`` is polled between quanta (a debugger's Ctrl-C). With ``until_time``
        (virtual time, see clock.py) the run also ends, with TIME_SLICE, when the virtual
        clock reaches it: how several VMs are run side by side in lockstep. ``pause``: the
        instruction limit is the caller's own stopping point inside a longer run (no `stop`
        event for it)."""
        limit = None if max_insns is None else self.icount + max_insns
        self._until_time = until_time
        self._stop = None
        self.run_start = (self.regs.read(UC_X86_REG_EIP), self.icount)
        self._step_off_breakpoint()
        while self._stop is None:
            if interrupted is not None and interrupted():
                self._end(StopReason.REQUESTED, "stopped by the debugger", 0)
                break
            self._boundary()
            if self._stop is not None:
                break
            budget = max(1, self._shadow_until - self.icount) if self.icount < \
                self._shadow_until else QUANTUM
            if self.after_step:
                budget = 1
            deadline = self.port_io.planned_deadline = self.clock.next_deadline()
            if deadline is not None:
                budget = min(budget, max(1, deadline - self.clock.now()))
            if until_time is not None:
                if self.clock.now() >= until_time:
                    self._end(StopReason.TIME_SLICE, "end of the time slice", 0)
                    break
                budget = min(budget, until_time - self.clock.now())
            if limit is not None:
                if self.icount >= limit:
                    self._end(StopReason.MAX_INSNS, f"instruction limit reached "
                              f"({max_insns} instructions)", 0)
                    break
                budget = min(budget, limit - self.icount)
            executed = self._run_quantum(budget)
            if self.after_step and executed and budget == 1:
                for action in self.after_step:
                    action()
                self.after_step.clear()
            if self._stop is not None:
                break
        stop = self._stop
        if stop.reason in (StopReason.WATCHPOINT, StopReason.CATCH):
            # stopped after the accessing (or event-causing) instruction completed: report
            # where the CPU is now, as `info` and `goto` count
            stop = self._stop = replace(stop, eip=self.regs.read(UC_X86_REG_EIP),
                                        icount=self.icount)
        if stop.reason is StopReason.BREAKPOINT:
            self.report_breakpoint_here()
        if stop.reason is not StopReason.TIME_SLICE and not (
                pause and stop.reason is StopReason.MAX_INSNS):   # a pause, not an end
            self.emit_at(EventKind.STOP, stop.eip, reason=stop.reason.value, message=stop.message)
        return stop

    def report_breakpoint_here(self) -> None:
        """The debugger has reported the breakpoint at the current instruction: resuming
        runs it instead of stopping there again. (Run from a breakpoint nobody reported,
        e.g. after a run that ended exactly there for another reason, stops at once.)"""
        self.debug.report_here(self.regs.read(UC_X86_REG_EIP), self.icount)

    @property
    def breakpoints(self) -> frozenset[int]:
        return self.debug.breakpoint_set

    @property
    def armed_breakpoints(self) -> frozenset[int]:
        """The breakpoints Unicorn holds as exits now (those whose page is mapped)."""
        return self.debug.armed

    def breakpoint_hit(self, address: int) -> None:
        """A breakpoint's code hook (debug.py) fired: stop before the instruction."""
        self.stop_before_current(StopReason.BREAKPOINT, f"breakpoint at {address:#010x}",
                                 address)

    def stop_before_current(self, reason: StopReason, message: str, address: int,
                            exit_status: int = 0) -> None:
        """From a code hook at ``address``: end the run before that instruction executes."""
        if self._stop is not None:
            return
        self._stop = Stop(reason, message, address, self.current_icount(), exit_status)
        if self._boundary_pos is None:
            self._boundary_pos = self._counter.read() - 1   # before this instruction
            self.uc.emu_stop()

    def step(self) -> Stop:
        """Execute exactly one instruction. Interrupts are not taken before it unless
        ``irqs_while_stepping`` is set (QEMU's gdbstub NOIRQ default)."""
        self._stepping = not self.irqs_while_stepping
        self.report_breakpoint_here()             # a step always runs the instruction
        try:
            stop = self.run(1)
        finally:
            self._stepping = False
        if stop.reason is StopReason.MAX_INSNS:
            stop = Stop(StopReason.STEP, "stepped one instruction", stop.eip, stop.icount, 0)
            self._stop = stop
        return stop

    def _step_off_breakpoint(self) -> None:
        """Resuming from a reported breakpoint: run that one instruction without its exit."""
        eip = self.regs.read(UC_X86_REG_EIP)
        debug = self.debug
        if eip not in debug.breakpoint_set:
            return
        if not debug.reported(eip, self.icount):
            self._stop = Stop(StopReason.BREAKPOINT, f"breakpoint at {eip:#010x}", eip,
                              self.icount, 0)
            return
        debug.skip_exit = eip
        try:
            self._boundary()
            # A shadow fill for the instruction (its code or data page) uses up the one-
            # instruction quantum without retiring it: try again until it retires or leaves.
            for _ in range(MAX_FILLS_PER_INSN):
                if self._stop is not None or self.regs.read(UC_X86_REG_EIP) != eip:
                    break
                if self._run_quantum(1):
                    break
        finally:
            debug.skip_exit = None
            self.sync_exits()

    def stop_after_current(self, reason: StopReason, message: str) -> None:
        """From a memory hook: end the run once the instruction in progress completes."""
        if not self._debugger_suspended:
            self._end(reason, message, 0)

    @property
    def debugger_is_suspended(self) -> bool:
        """Reverse execution is re-running history: nothing the debugger set may stop it."""
        return self._debugger_suspended

    @contextmanager
    def debugger_suspended(self) -> Iterator[None]:
        """Run without stopping at breakpoints, watchpoints or event breakpoints (they stay
        set): how reverse execution re-runs what the debugger already went through."""
        breakpoints, self._debugger_suspended = self.debug.breakpoint_set, True
        self.debug.set_breakpoints(frozenset())
        try:
            yield
        finally:
            self._debugger_suspended = False
            self.debug.set_breakpoints(breakpoints)

    # -- snapshots -------------------------------------------------------------------------
    def snapshot_store(self) -> SnapshotStore:
        """The machine's snapshots (created on first use: it keeps a copy of guest RAM)."""
        if self._snapshots is None:
            everything_live = frozenset({"_timers", "_consumers", "_observers"})
            parts = [Part("machine", self, include=frozenset({
                         "icount", "_halted", "_shadow_until", "trap_eip", "vcpu"})),
                     Part("clock", self.clock, everything_live),
                     Part("inputs", self.inputs, everything_live),
                     Part("pic", self.pic), Part("pit", self.pit), Part("mmu", self.mmu),
                     Part("tables", self.tables),
                     Part("syscalls", self.syscalls, frozenset({"_emit", "_wants", "names"}))]
            self._snapshots = SnapshotStore(self.uc, self.ram, self.hole,
                                            parts + self.state_parts, self._after_restore)
        return self._snapshots

    def _after_restore(self) -> None:
        self.mirror_vif()
        self.decoder.clear()
        self._stop = None
        self.after_step.clear()
        self.debug.exits_lost()

    def _run_quantum(self, budget: int) -> int:
        """Run at most ``budget`` instructions; returns how many retired."""
        uc = self.uc
        self.sync_exits()
        self._quantum_base = self.icount
        self._quantum_budget = budget
        self._boundary_pos = None
        self.restarts = 0
        self._in_quantum = True
        try:
            uc.emu_start(self.regs.read(UC_X86_REG_EIP), 0, count=budget)
        except UcError as exc:
            if self._stop is None:
                eip = self.regs.read(UC_X86_REG_EIP)
                self._end(StopReason.MONITOR_ERROR,
                          f"Unicorn error {exc} at eip {eip:#010x}: {self.describe_insn(eip)}", 1,
                          eip)
        finally:
            self._in_quantum = False
        started = self._boundary_pos if self._boundary_pos is not None else \
            min(self._counter.read(), budget)
        executed = started - self.restarts
        self.icount += executed
        if self.port_io.refused is not None:
            self.port_io.after_quantum()
        if self._stop is None and self._boundary_pos is None and executed < budget:
            eip = self.regs.read(UC_X86_REG_EIP)
            if eip in self.debug.armed:
                self._stop = Stop(StopReason.BREAKPOINT, f"breakpoint at {eip:#010x}", eip,
                                  self.icount, 0)
        return executed
