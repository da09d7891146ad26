"""The Machine: guest RAM, the deprivileged CPU and the run loop.

Guest code, kernel and user alike, runs at real CPL 3 inside Unicorn. Whatever it may not do
there traps into this VMM, which emulates it against the virtual CPU (vcpu.py) and reports
each step as an event. Front ends (CLI, gdb stub, monitor prompt, tests) use only the public
methods of this class.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from functools import partial

from capstone import CsInsn
from unicorn import (UC_ARCH_X86, UC_HOOK_INSN, UC_HOOK_INSN_INVALID, UC_HOOK_INTR,
                     UC_HOOK_MEM_FETCH_UNMAPPED, UC_HOOK_MEM_READ_UNMAPPED,
                     UC_HOOK_MEM_WRITE_UNMAPPED, UC_MODE_32, Uc, UcError)
from unicorn.x86_const import (UC_X86_INS_CPUID, UC_X86_INS_IN, UC_X86_INS_OUT,
                               UC_X86_INS_SYSENTER, UC_X86_REG_CR3, UC_X86_REG_EFLAGS,
                               UC_X86_REG_EIP)

from .clock import VirtualClock
from .debug import Debugger
from .decoder import Decoder
from .delivery import deliver_guarded, reflect
from .descriptor_watch import DescriptorWatch
from .events import Event, EventBus, EventKind
from .fast_regs import FastRegisters
from .guest_registers import read_register, write_register
from .hypercalls import HypercallBus
from .inputs import InputQueue
from .instruction_hooks import InstructionHooks
from .loader import BootImage, place
from .memory import GuestMemory
from .paging import Paging
from .pic import Pic
from .pit import Pit
from .port_bus import PortBus
from .port_io import PortIo
from .ring3 import TABLES, enter_ring3
from .scheduler import Scheduler
from .segments import SegmentTables
from .stops import Stop, StopCause, StopReason
from .snapshot import Snapshot, SnapshotParts, SnapshotStore
from .syscalls import SyscallTracker, returned_to_user, syscall_entered
from .traps import TrapDispatch
from .uc_internals import ExceptionLatch, InstructionCounter, calibrated_layout
from .vcpu import EFLAGS_IF, GuestRegisters, VirtualCpu

DEFAULT_RAM_MB = 64
MAX_RAM_MB = 3072


class Machine:
    """Built by ``build_machine`` (assembly.py), which creates the devices and puts them on
    the buses: the machine drives the clock, the PIT's timers, the PIC and the inputs between
    quanta, and its trap handlers hand port I/O and hypercalls to the buses."""

    def __init__(self, ram_mb: int, *, clock: VirtualClock, inputs: InputQueue, pic: Pic,
                 pit: Pit, ports: PortBus, hypercalls: HypercallBus) -> None:
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
        self.clock = clock
        self.inputs = inputs
        self.pic = pic
        self.pit = pit
        self.ports = ports
        self.hypercalls = hypercalls
        self.console_output = bytearray()    # the debug console's, when nobody else takes it

        # The VMM's parts, each given this machine as its VmmContext (cpu_context.py).
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
        self.paging = paging = Paging(self, decoder)
        self.read_cr, self.write_cr = paging.read_cr, paging.write_cr
        self.invlpg = paging.invlpg
        self.descriptor_tables_moved = paging.descriptor_tables_moved
        self.port_io = port_io = PortIo(self)
        self.read_tsc = port_io.read_tsc
        self.insn_hooks = insn_hooks = InstructionHooks(self)
        self.reflect = partial(reflect, self)
        self.deliver_guarded = partial(deliver_guarded, self)
        self.syscall_entered = partial(syscall_entered, self, self.syscalls)
        self.returned_to_user = partial(returned_to_user, self, self.syscalls)
        self.traps = traps = TrapDispatch(self, decoder, paging, insn_hooks)
        self.guest_stop, self.vmm_error = traps.guest_stop, traps.vmm_error
        self.scheduler = scheduler = Scheduler(self)
        self.between_quanta = scheduler.boundary
        self.wakeup_time = scheduler.wakeup_time
        self.interrupt_shadow = scheduler.interrupt_shadow
        self.symbols: dict[str, int] = {}

        # the run loop's state
        self.restarts = 0                # instructions restarted in this quantum (shadow fills)
        self.trap_counted = True
        self.after_step: list[Callable[[], None]] = []   # run once the next instruction retired
        self.irqs_while_stepping = False
        self._in_quantum = False
        self._quantum_base = 0
        self._quantum_budget = 0
        self._boundary_pos: int | None = None
        self.pending_stop: Stop | None = None

        uc.hook_add(UC_HOOK_INTR, traps._on_intr)
        uc.hook_add(UC_HOOK_INSN_INVALID, traps._on_invalid)
        uc.hook_add(UC_HOOK_INSN, port_io.on_in, None, 1, 0, UC_X86_INS_IN)
        uc.hook_add(UC_HOOK_INSN, port_io.on_out, None, 1, 0, UC_X86_INS_OUT)
        uc.hook_add(UC_HOOK_INSN, insn_hooks.on_cpuid, None, 1, 0, UC_X86_INS_CPUID)
        uc.hook_add(UC_HOOK_INSN, insn_hooks.on_sysenter, None, 1, 0, UC_X86_INS_SYSENTER)
        uc.hook_add(UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED |
                    UC_HOOK_MEM_FETCH_UNMAPPED, traps.on_unmapped)
        enter_ring3(uc, self.regs, self.tables, paging.paging_changed)
        self._snapshot_parts = SnapshotParts(self, uc, self.ram, self.hole, self._after_restore)
        self.register_state = self._snapshot_parts.register
        # (eip, icount) where the current run began: a stop-before hook skips that point,
        # as resuming from a breakpoint runs its instruction
        self.run_start = (-1, -1)

    # -- start-up ---------------------------------------------------------------------------
    def load(self, image: BootImage) -> None:
        """Place a boot image in guest RAM and set the Multiboot entry registers."""
        place(self, image)
        self.symbols = dict(image.symbols)

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
        self.end_run(StopReason.POWEROFF, message, status)

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
        wherever the VMM writes EFLAGS."""
        flags = self.regs.read(UC_X86_REG_EFLAGS)
        wanted = flags | EFLAGS_IF if self.vcpu.vif else flags & ~EFLAGS_IF
        if wanted != flags:
            self.regs.write(UC_X86_REG_EFLAGS, wanted)

    def set_cpl(self, cpl: int) -> None:
        self.vcpu.cpl = cpl
        self.tables.set_ring3_view(cpl == 3)
        self.uc.reg_write(UC_X86_REG_CR3, self.mmu.root(cpl == 3).pd_addr)
        self.sync_exits()

    def halt(self) -> None:
        self.scheduler.halted = True
        self.request_boundary()

    @property
    def halted(self) -> bool:
        """In HLT, waiting for an interrupt."""
        return self.scheduler.halted

    def request_boundary(self) -> None:
        """End the quantum after the current instruction (counted as one)."""
        if self._in_quantum and self._boundary_pos is None:
            self._boundary_pos = self._counter.read()
            self._counter.stop_after_current()

    def end_run(self, reason: StopReason, message: str, exit_status: int,
                eip: int | None = None, cause: StopCause | None = None) -> None:
        """End the run, after the current instruction (at once from an exception hook)."""
        if self.pending_stop is None:
            eip = self.regs.read(UC_X86_REG_EIP) if eip is None else eip
            self.pending_stop = Stop(reason, message, eip, self.current_icount(), exit_status,
                                     cause)
        self.request_boundary()
        if self.traps.in_exception_hook:
            # The faulting instruction would only fault again: stop now, not after it.
            self.uc.emu_stop()

    # -- registers ---------------------------------------------------------------------------
    def registers(self) -> GuestRegisters:
        """A snapshot of the guest's register file, as the guest sees it."""
        values = {f.name: read_register(self, f.name) for f in fields(GuestRegisters)}
        return GuestRegisters(**{**values, "vif": bool(values["vif"])})

    def write_register(self, name: str, value: int) -> None:
        """Set any register by name, as the guest sees it (RegisterError when impossible)."""
        write_register(self, name, value)

    # -- the run loop ------------------------------------------------------------------------
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
        scheduler = self.scheduler
        scheduler.until_time = until_time
        self.pending_stop = None
        self.run_start = (self.regs.read(UC_X86_REG_EIP), self.icount)
        self.debug.step_off_breakpoint()
        while self.pending_stop is None:
            if interrupted is not None and interrupted():
                self.end_run(StopReason.REQUESTED, "stopped by the debugger", 0)
                break
            scheduler.boundary()
            if self.pending_stop is not None:
                break
            budget = scheduler.budget(limit, max_insns)
            if budget is None:
                break
            self.port_io.planned_deadline = scheduler.planned_deadline
            executed = self.run_quantum(budget)
            if self.after_step and executed and budget == 1:
                for action in self.after_step:
                    action()
                self.after_step.clear()
            if self.pending_stop is not None:
                break
        stop = self.pending_stop
        if stop.reason in (StopReason.WATCHPOINT, StopReason.CATCH):
            # stopped after the accessing (or event-causing) instruction completed: report
            # where the CPU is now, as `info` and `goto` count
            stop = self.pending_stop = replace(stop, eip=self.regs.read(UC_X86_REG_EIP),
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

    def breakpoint_hit(self, address: int) -> None:
        """A breakpoint's code hook (debug.py) fired: stop before the instruction."""
        if self.pending_stop is not None:
            return
        stop = self.debug.breakpoint_stop(address, self.current_icount())
        self.stop_before_current(stop.reason, stop.message, address, cause=stop.cause)

    def stop_before_current(self, reason: StopReason, message: str, address: int,
                            exit_status: int = 0, cause: StopCause | None = None) -> None:
        """From a code hook at ``address``: end the run before that instruction executes."""
        if self.pending_stop is not None:
            return
        self.pending_stop = Stop(reason, message, address, self.current_icount(), exit_status,
                                 cause)
        if self._boundary_pos is None:
            self._boundary_pos = self._counter.read() - 1   # before this instruction
            self.uc.emu_stop()

    def step(self) -> Stop:
        """Execute exactly one instruction. Interrupts are not taken before it unless
        ``irqs_while_stepping`` is set (QEMU's gdbstub NOIRQ default)."""
        self.scheduler.stepping = not self.irqs_while_stepping
        self.report_breakpoint_here()             # a step always runs the instruction
        try:
            stop = self.run(1)
        finally:
            self.scheduler.stepping = False
        if stop.reason is StopReason.MAX_INSNS:
            stop = Stop(StopReason.STEP, "stepped one instruction", stop.eip, stop.icount, 0)
            self.pending_stop = stop
        return stop

    def stop_after_current(self, reason: StopReason, message: str,
                           cause: StopCause | None = None) -> None:
        """From a memory hook or an event: end the run once the instruction in progress
        completes; ``cause`` says which point (stops.py)."""
        if not self.debug.is_set_aside:
            self.end_run(reason, message, 0, cause=cause)

    # -- snapshots -------------------------------------------------------------------------
    def snapshot_store(self) -> SnapshotStore:
        """The machine's snapshots (created on first use: it keeps a copy of guest RAM; the
        devices' states are registered before, with ``register_state``)."""
        return self._snapshot_parts.store()

    def _after_restore(self, snapshot: Snapshot) -> None:
        self.icount = snapshot.icount
        self.trap_eip = self.regs.read(UC_X86_REG_EIP)    # as between any two quanta
        self.mirror_vif()
        self.decoder.clear()
        self.pending_stop = None
        self.after_step.clear()
        self.debug.exits_lost()

    def run_quantum(self, budget: int) -> int:
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
            if self.pending_stop is None:
                eip = self.regs.read(UC_X86_REG_EIP)
                self.end_run(StopReason.VMM_ERROR, f"Unicorn error {exc} at eip "
                             f"{eip:#010x}: {self.describe_insn(eip)}", 1, eip)
        finally:
            self._in_quantum = False
        started = self._boundary_pos if self._boundary_pos is not None else \
            min(self._counter.read(), budget)
        executed = started - self.restarts
        self.icount += executed
        if self.port_io.refused is not None:
            self.port_io.after_quantum()
        if self.pending_stop is None and self._boundary_pos is None and executed < budget:
            eip = self.regs.read(UC_X86_REG_EIP)
            if eip in self.debug.armed:
                self.pending_stop = self.debug.breakpoint_stop(eip, self.icount)
        return executed
