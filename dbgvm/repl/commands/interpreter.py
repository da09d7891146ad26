"""The monitor: one command language for the prompt, ``-x`` scripts and gdb's ``monitor``.

``CommandInterpreter(machine).run(text) -> str`` parses a command line (parser.py), runs it
against the Machine API and returns the text to show, the same text whichever front end asked.
A command that does not parse or fails returns one ``error:`` line and a caret under the place,
and changes nothing: every argument is evaluated and checked before anything is touched.

The commands themselves are in this package's modules (registry.py lists them); the
CommandInterpreter checks what they declare (``Needs``, refusal under gdb, ``while_running``) and offers them
what they share: evaluating expressions, reading memory without side effects, running the
guest and reporting the stop.

The monitor does not own the run loop: ``continue`` calls the runner it was given (by default
the current machine's ``run``), so the CLI can run several VMs side by side and pump console
devices. Unicorn must be driven from one thread at a time; while a command runs the guest,
another thread may only call the commands marked ``while_running`` (stop, help, send, quit),
which never touch a Machine: ``stop`` just sets the flag the runner's ``interrupted`` polls.

Given a ``reverse`` engine (a replayed run, dbgvm.record.reverse.ReverseEngine), ``rstep``,
``rcontinue`` and ``goto`` move its machine back and forth in the recorded run, and ``continue``
and ``step`` on that machine go forward through the engine, which stops at the recorded end.
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from ...core.debug import DebugError
from ...core.events import Event, EventKind
from ...core.faults import StopReason
from ...core.guest_registers import read_register
from ...core.machine import Machine, Stop
from ...core.stops import BreakpointHit, CatchHit, WatchHit
from .. import parser
from ..errors import CommandError, Problem, fail
from ..expr import Expr, Scope, evaluate, start_column
from ..memory_view import Disassembler
from ..points import PointKind, PointTable
from ..symbols import SymbolTable
from .base import Command, Needs
from .registry import REGISTRY, Registry
from .tracing import EVENT_HISTORY

Runner = Callable[[int | None, Callable[[], bool] | None], Stop]
HalStats = Callable[[int], str]
ConsoleInput = Callable[[int, bytes], None]


class ReverseExecution(Protocol):
    """Going back and forth in a recorded run of ``machine`` (what the monitor needs of
    dbgvm.record.reverse.ReverseEngine, without depending on dbgvm.record)."""

    machine: Machine
    end_icount: int

    def run(self, max_insns: int | None = None, *,
            interrupted: Callable[[], bool] | None = None) -> Stop:
        """Forward, never past the recorded end (then HISTORY_END)."""
        ...

    def step(self) -> Stop:
        """One instruction forward (HISTORY_END at the recorded end)."""
        ...

    def goto(self, icount: int) -> Stop:
        """The state after exactly ``icount`` instructions (clamped to the run); STEP."""
        ...

    def step_back(self, count: int = 1) -> Stop:
        """``count`` instructions back: STEP, or HISTORY_START when already at icount 0."""
        ...

    def continue_back(self) -> Stop:
        """Back to the last breakpoint or watchpoint hit before now (BREAKPOINT or
        WATCHPOINT), else to the start of the run (HISTORY_START)."""
        ...


# a run that ended like this cannot sensibly go on (a powered-off guest would otherwise run
# on past its power-off, into whatever code follows the request)
ENDING = frozenset({StopReason.DEBUG_EXIT, StopReason.TRIPLE_FAULT, StopReason.BAD_MEMORY,
                    StopReason.VMM_ERROR, StopReason.UNSUPPORTED, StopReason.POWEROFF})


def _refuse_under_gdb(command: Command) -> None:
    """Through gdb's `monitor` (qRcmd), commands that move the guest or change its registers
    are refused: gdb keeps its own register cache (and removes its breakpoints while
    stopped), and nothing in the remote protocol lets the stub tell gdb that the state
    changed under it, so gdb would go on showing the old EIP. gdb's own command does the
    same thing honestly."""
    if command.ends_session:
        raise fail(Problem.QUIT_UNDER_GDB)
    if command.gdb_instead is not None:
        raise fail(Problem.BEHIND_GDBS_BACK, word=command.names[0],
                   instead=command.gdb_instead)


@dataclass
class VmState:
    """What the monitor keeps per VM: its stopping points and recent events."""

    index: int
    machine: Machine
    symbols: SymbolTable
    points: PointTable = field(default_factory=PointTable)
    history: deque[Event] = field(default_factory=lambda: deque(maxlen=EVENT_HISTORY))
    last_stop: Stop | None = None
    last_catch: Event | None = None
    ended: StopReason | None = None


@dataclass(frozen=True)
class Status:
    """The current VM at a glance (the prompt's bottom toolbar), safe to read from any thread."""

    vm: int
    vms: int
    running: bool
    eip: int
    cpl: int
    vif: bool
    icount: int
    stop: str            # the last stop reason, or ""
    ended: bool


def catch_line(hit: CatchHit) -> str:
    """``event breakpoint N: EVENT``: what the stop says, here and in gdb."""
    return f"event breakpoint {hit.number}: {hit.event.describe().split('] ', 1)[1]}"


class CommandInterpreter:
    """The command set over one or more machines; VM 0 is current at first."""

    def __init__(self, machine: Machine | None = None, run: Runner | None = None, *,
                 machines: Sequence[Machine] | None = None,
                 hal_stats: HalStats | None = None,
                 console_input: ConsoleInput | None = None,
                 notify: Callable[[str], None] | None = None,
                 reverse: ReverseExecution | None = None) -> None:
        machines = list(machines) if machines else []
        if machine is not None and machine not in machines:
            machines.insert(0, machine)
        if not machines:
            raise ValueError("a CommandInterpreter needs at least one machine")
        if reverse is not None and not any(m is reverse.machine for m in machines):
            raise ValueError("the reverse engine's machine is not one of the monitor's")
        self.registry: Registry = REGISTRY
        self.vms = [VmState(i, m, SymbolTable(m.symbols)) for i, m in enumerate(machines)]
        self.current = 0
        self.runner = run
        self.hal_stats = hal_stats
        self.console_input = console_input
        self.reverse = reverse
        # where traced events go while the guest runs (the prompt prints them above itself);
        # without it they are part of the output of the command that ran the guest
        self.notify = notify
        self.tracing: frozenset[EventKind] = frozenset()
        self.quit_requested = False
        self._stop_flag = threading.Event()
        self._poll: Callable[[], bool] | None = None
        self._machine_lock = threading.Lock()
        self._running = False
        self._collected: list[str] | None = None
        self.disassembler = Disassembler()
        self.status = self._status()
        for vm in self.vms:
            vm.machine.events.subscribe(set(EventKind), lambda e, vm=vm: self._on_event(vm, e))

    # -- the entry point ------------------------------------------------------------------
    @property
    def vm(self) -> VmState:
        return self.vms[self.current]

    @property
    def machine(self) -> Machine:
        return self.vm.machine

    @property
    def running(self) -> bool:
        """True while a command is running the guest (in whatever thread)."""
        return self._running

    def run(self, line: str, *, interrupted: Callable[[], bool] | None = None,
            from_gdb: bool = False) -> str:
        """Run one command line; returns its output (an error is a line and a caret line).

        ``interrupted``, when given, is polled (on this thread) while the command runs the
        guest. ``from_gdb``: the line is gdb's ``monitor`` command (qRcmd); commands that
        would move the guest or change its registers behind gdb's back are refused, as is
        ``quit`` (Command.gdb_instead, Command.ends_session)."""
        try:
            command = parser.parse(line)
            if command is None:
                return ""
            return self.execute(command, interrupted=interrupted, from_gdb=from_gdb)
        except CommandError as exc:
            return exc.render(line)

    def execute(self, command: Command, *,
                interrupted: Callable[[], bool] | None = None, from_gdb: bool = False) -> str:
        """Run a parsed command (CommandError when it fails); arguments as for run."""
        if from_gdb:
            _refuse_under_gdb(command)
        handler = self.registry.handler(type(command))
        if command.while_running:
            return handler(self, command)
        if not self._machine_lock.acquire(blocking=False):
            raise fail(Problem.BUSY)
        self._poll = interrupted
        try:
            self._check_needs(command.needs)
            return handler(self, command)
        finally:
            self._poll = None
            self.status = self._status()
            self._machine_lock.release()

    def _check_needs(self, needs: Needs) -> None:
        if Needs.RUNNABLE in needs and self.vm.ended is not None:
            raise fail(Problem.ENDED, reason=self.vm.ended.value)
        if Needs.HISTORY in needs:
            self.engine()

    def request_stop(self) -> None:
        """Stop the running guest at the next quantum boundary (any thread; Ctrl-C)."""
        self._stop_flag.set()

    def should_stop(self) -> bool:
        """Polled while a command runs the guest: a stop was requested (request_stop), or
        the caller's ``interrupted`` check (CommandInterpreter.run) says so."""
        poll = self._poll
        if poll is not None and not self._stop_flag.is_set() and poll():
            self._stop_flag.set()
        return self._stop_flag.is_set()

    # -- evaluation, for the commands -----------------------------------------------------
    def _scope(self) -> Scope:
        return Scope(self.read_register, self.vm.symbols.by_name)

    def read_register(self, name: str) -> int:
        return int(read_register(self.machine, name))

    def value(self, expr: Expr) -> int:
        return evaluate(expr, self._scope())

    def count(self, expr: Expr | None, default: int, limit: int) -> int:
        """A count argument: ``default`` when absent, else 1..``limit`` (BAD_COUNT)."""
        if expr is None:
            return default
        value = self.value(expr)
        if not 1 <= value <= limit:
            raise fail(Problem.BAD_COUNT, start_column(expr), limit=limit, value=value)
        return value

    def address(self, expr: Expr) -> int:
        return self.value(expr) & 0xFFFFFFFF

    def check_mapped(self, addr: int, size: int, column: int) -> None:
        """Every page of [addr, addr+size) must translate (UNMAPPED names the first that
        does not)."""
        page = addr & ~0xFFF
        while page < addr + size:
            probe = max(page, addr)
            if probe > 0xFFFFFFFF or self.machine.debug.translate(probe) is None:
                raise fail(Problem.UNMAPPED, column, addr=probe & 0xFFFFFFFF)
            page += 0x1000

    def mapped_prefix(self, addr: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``addr``, stopping at the first unmapped page."""
        out = bytearray()
        while len(out) < size:
            at = addr + len(out)
            chunk = min(size - len(out), 0x1000 - (at & 0xFFF))
            try:
                out += self.machine.debug.read_virtual(at, chunk)
            except DebugError:
                break
        return bytes(out)

    def linear_eip(self) -> int:
        regs = self.machine.registers()
        return (self.machine.tables.base_of(regs.cs) + regs.eip) & 0xFFFFFFFF

    def _where(self) -> str:
        """``=> 0x00100023 <main+0x3>:  insn``: where the current VM is."""
        eip = self.linear_eip()
        code = self.mapped_prefix(eip, 15)
        decoded = self.disassembler.first(code, eip) if code else None
        insn = decoded[0] if decoded else "(not mapped)" if not code else "(bad)"
        return f"=> {self.vm.symbols.address(eip)}:  {insn}\n"

    def _say(self, text: str) -> None:
        """Asynchronous output (traced events): to ``notify``, or into the command's output."""
        if self.notify is not None:
            self.notify(text)
        elif self._collected is not None:
            self._collected.append(text)

    # -- events ---------------------------------------------------------------------------
    def _on_event(self, vm: VmState, event: Event) -> None:
        vm.history.append(event)
        if event.kind in self.tracing:
            prefix = f"[vm{vm.index}] " if len(self.vms) > 1 else ""
            self._say(prefix + event.describe() + "\n")
        if event.kind is EventKind.STOP:
            return
        for point in vm.points.of(PointKind.CATCH):
            assert point.catch is not None
            if point.catch.matches(event):
                point.hits += 1
                vm.last_catch = event
                hit = CatchHit(event, point.number)
                vm.machine.stop_after_current(StopReason.CATCH, catch_line(hit), hit)
                return

    # -- running the guest, for the commands that do -------------------------------------
    def run_guest(self, body: Callable[[], Stop]) -> tuple[str, Stop]:
        """Run ``body`` as the guest-running command: a stop request is forgotten first, the
        status says running meanwhile. Returns what was traced meanwhile (without
        ``notify``), and the stop."""
        self._stop_flag.clear()
        self.status = replace(self._status(), running=True)
        self._running = True
        self._collected = [] if self.notify is None else None
        try:
            stop = body()
        finally:
            self._running = False
        text = "".join(self._collected or [])
        self._collected = None
        return text, stop

    def report_stop(self, stop: Stop) -> str:
        """Book the stop and describe it: one line saying why (none for a plain step), then
        where the VM is."""
        vm = self.vm
        vm.last_stop = stop
        if stop.reason in ENDING:
            vm.ended = stop.reason
        reason = stop.reason
        if reason is StopReason.STEP:
            head = ""
        elif isinstance(stop.cause, BreakpointHit):
            # the stop names every owner's handles at the address: ours, if any, is the one
            point = vm.points.holding(stop.cause.handles)
            where = vm.symbols.address(stop.cause.address)
            if point is not None:
                point.hits += 1
                head = f"breakpoint {point.number} at {where}"
            else:
                head = f"breakpoint at {where}"
        elif isinstance(stop.cause, WatchHit):
            hit = stop.cause
            point = vm.points.holding(hit.handles)
            if point is not None:
                point.hits += 1
                head = (f"watchpoint {point.number}: {point.what().split()[0]} of "
                        f"{vm.symbols.address(hit.vaddr)}")
            else:
                head = f"watchpoint: {stop.message}"
        elif isinstance(stop.cause, CatchHit):
            head = catch_line(stop.cause)
        elif reason is StopReason.REQUESTED:
            head = "stopped"
        elif reason is StopReason.HISTORY_START:
            head = "start of the recorded run"
        elif reason is StopReason.HISTORY_END:
            head = stop.message
        else:
            head = f"{reason.value}: {stop.message}"
        text = f"{head}\n" if head else ""
        return text + self._where().rstrip("\n") + f"   (icount {stop.icount})\n"

    def forward_engine(self) -> ReverseExecution | None:
        """The engine that runs the current VM forward, if it is the recorded one."""
        engine = self.reverse
        return engine if engine is not None and engine.machine is self.machine else None

    def engine(self) -> ReverseExecution:
        """The recorded run of the current VM (NO_HISTORY, NOT_THE_RECORDED_VM)."""
        engine = self.forward_engine()
        if engine is not None:
            return engine
        if self.reverse is None:
            raise fail(Problem.NO_HISTORY)
        index = next(vm.index for vm in self.vms if vm.machine is self.reverse.machine)
        raise fail(Problem.NOT_THE_RECORDED_VM, index=index)

    # -- status -------------------------------------------------------------------------
    def _status(self) -> Status:
        vm = self.vm
        regs = vm.machine.registers()
        stop = vm.last_stop.reason.value if vm.last_stop else ""
        return Status(vm.index, len(self.vms), self._running, regs.eip, regs.cpl, regs.vif,
                      vm.machine.icount, stop, vm.ended is not None)
