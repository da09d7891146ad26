"""What the emulation code and the VMM's parts may use of the machine, as Protocols.

The Machine (machine.py) satisfies them all. The modules that emulate instructions (privileged.py,
delivery.py, returns.py, guest_registers.py) take a ``CpuContext``: the registers, the
virtual CPU, the descriptor tables and guest memory, and the few state changes an instruction
may make. The parts of the VMM split out of the Machine (memory.py, decoder.py, paging.py,
port_io.py, instruction_hooks.py, debug.py) take a ``VmmContext``, which adds the run
loop's services: events, ending the quantum or the run, reflecting a fault to the guest.
The parts know each other only through constructor arguments (the paging unit gets the
decoder), never through a context.

``RunLoop`` adds the run loop's own steps, for the scheduler, the trap dispatch and the
debugger. None of these modules imports machine.py, so dbgvm/core has no import cycle
(tests/test_core_imports.py checks it). Attributes are read through the context at each use,
never cached.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from capstone import CsInsn
    from unicorn import Uc

    from .clock import VirtualClock
    from .descriptor_watch import DescriptorWatch
    from .events import EventBus, EventKind
    from .faults import GuestFault, GuestStop
    from .stops import Stop, StopCause, StopReason
    from .fast_regs import FastRegisters
    from .hypercalls import HypercallBus
    from .inputs import InputQueue
    from .pic import Pic
    from .pit import Pit
    from .port_bus import PortBus
    from .segments import SegmentTables
    from .shadow_mmu import ShadowMmu
    from .uc_internals import ExceptionLatch
    from .vcpu import VirtualCpu


class CpuContext(Protocol):
    """The CPU an emulated instruction acts on."""

    uc: Uc
    regs: FastRegisters
    vcpu: VirtualCpu
    tables: SegmentTables
    mmu: ShadowMmu
    ram: memoryview
    ram_size: int
    trap_eip: int                     # the instruction being handled

    read_linear: Callable[[int, int], bytes]
    write_linear: Callable[[int, bytes], None]
    write_physical: Callable[[int, bytes], None]
    read_cr: Callable[[int], int]
    write_cr: Callable[[int, int], None]
    invlpg: Callable[[int], None]
    descriptor_tables_moved: Callable[[], None]
    read_tsc: Callable[[], int]

    def set_vif(self, value: bool, cause: str) -> None: ...
    def mirror_vif(self) -> None: ...
    def set_cpl(self, cpl: int) -> None: ...
    def interrupt_shadow(self) -> None: ...
    def halt(self) -> None: ...
    def returned_to_user(self) -> None: ...


class VmmContext(CpuContext, Protocol):
    """The run loop's services, for the VMM's parts (trap handlers, hooks, devices' time)."""

    clock: VirtualClock
    events: EventBus
    ports: PortBus
    pic: Pic
    hypercalls: HypercallBus
    descriptor_watch: DescriptorWatch
    latch: ExceptionLatch
    icount: int
    restarts: int                     # restarted instructions in this quantum (counted twice)
    trap_counted: bool                # whether Unicorn counted the trapping instruction
    after_step: list[Callable[[], None]]

    def syscall_entered(self, via: str) -> None: ...

    describe_insn: Callable[[int], str]
    decode: Callable[[int], CsInsn]
    sync_exits: Callable[[], None]    # breakpoints follow the shadow's mappings (debug.py)

    def current_icount(self) -> int: ...
    def quantum_end_time(self) -> int | None: ...
    def emit_at(self, kind: EventKind, eip: int, **fields: object) -> None: ...
    def emit_trap(self, vector: int, eip: int, insn: CsInsn, action: str) -> None: ...
    def request_boundary(self) -> None: ...
    def reflect(self, fault: GuestFault, eip: int) -> None: ...
    def deliver_guarded(self, vector: int, return_eip: int, *, error_code: int | None = None,
                        software: bool = False, external: bool = False) -> None: ...
    def guest_stop(self, stop: GuestStop, eip: int) -> None: ...
    def vmm_error(self, exc: Exception, eip: int) -> None: ...
    def stop_after_current(self, reason: StopReason, message: str,
                           cause: StopCause | None = None) -> None: ...
    def breakpoint_hit(self, address: int) -> None: ...


class RunLoop(VmmContext, Protocol):
    """The run loop's own state and steps, for the parts that drive it between and around
    quanta (scheduler.py, stepping off a breakpoint in debug.py)."""

    inputs: InputQueue
    pit: Pit
    pending_stop: Stop | None         # why the run ends, once known

    def end_run(self, reason: StopReason, message: str, exit_status: int,
                eip: int | None = None, cause: StopCause | None = None) -> None: ...
    def between_quanta(self) -> None: ...
    def run_quantum(self, budget: int) -> int: ...
