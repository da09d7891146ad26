"""The monitor: one command language for the prompt, ``-x`` scripts and gdb's ``monitor``.

``Monitor(machine).run(text) -> str`` parses a command line (parser.py), runs it against the
Machine API and returns the text to show, the same text whichever front end asked. A command
that does not parse or fails returns one ``error:`` line and a caret under the place, and
changes nothing: every argument is evaluated and checked before anything is touched.

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

import textwrap
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from ..core.debug import DebugError
from ..core.events import Event, EventKind
from ..core.faults import StopReason
from ..core.guest_registers import RegisterError, read_register
from ..core.machine import Machine, Stop
from ..core.stops import BreakpointHit, CatchHit, WatchHit
from ..core.vcpu import CR0_PG
from . import syntax as S
from .devices_view import pic_report, pit_report
from .errors import CommandError, Problem, fail
from .expr import Expr, Scope, evaluate, start_column
from .memory_view import Disassembler, dump
from .mappings_view import map_report, pages_report
from .paging_view import stats_report, walk_report
from .parser import parse
from .points import CatchSpec, Point, PointKind, PointTable
from .symbols import SymbolTable
from .tables_view import gdt_report, idt_report, tss_report

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


OWNER = "monitor"               # whose points the monitor's are (core/debug_points.py)
EVENT_HISTORY = 10_000
DEFAULT_EVENTS = 20
DEFAULT_DISAS = 10
MAX_UNITS = 4096
MAX_STEPS = 10_000_000
MAX_WATCH = 4096
HELP_WIDTH = 79                 # help fits an 80-column terminal, broken between words
HELP_USAGE_WIDTH = 30           # the usage column of the command list
# a run that ended like this cannot sensibly go on (a powered-off guest would otherwise run
# on past its power-off, into whatever code follows the request)
ENDING = frozenset({StopReason.DEBUG_EXIT, StopReason.TRIPLE_FAULT, StopReason.BAD_MEMORY,
                    StopReason.MONITOR_ERROR, StopReason.UNSUPPORTED, StopReason.POWEROFF})
# Through gdb's `monitor` (qRcmd), commands that move the guest or change its registers are
# refused: gdb keeps its own register cache (and removes its breakpoints while stopped), and
# nothing in the remote protocol lets the stub tell gdb that the state changed under it, so
# gdb would go on showing the old EIP. gdb's own command does the same thing honestly.
GDB_REFUSED: dict[type, str] = {
    S.Continue: "'continue'", S.Step: "'stepi'", S.ReverseStep: "'reverse-stepi'",
    S.ReverseContinue: "'reverse-continue'",
    S.Goto: "'reverse-continue' / 'continue' with a breakpoint ('monitor info' shows the icount)",
    S.SetRegister: "'set $REG = VALUE'",
}


def _refuse_under_gdb(command: S.Command) -> None:
    if isinstance(command, S.Quit):
        raise fail(Problem.QUIT_UNDER_GDB)
    instead = GDB_REFUSED.get(type(command))
    if instead is not None:
        raise fail(Problem.BEHIND_GDBS_BACK, word=command.names[0], instead=instead)


_FLAGS = ((0, "CF"), (2, "PF"), (4, "AF"), (6, "ZF"), (7, "SF"), (8, "TF"), (9, "IF"),
          (10, "DF"), (11, "OF"))


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


def _catch_line(hit: CatchHit) -> str:
    """``event breakpoint N: EVENT``: what the stop says, here and in gdb."""
    return f"event breakpoint {hit.number}: {hit.event.describe().split('] ', 1)[1]}"


class Monitor:
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
            raise ValueError("a Monitor needs at least one machine")
        if reverse is not None and not any(m is reverse.machine for m in machines):
            raise ValueError("the reverse engine's machine is not one of the monitor's")
        self.vms = [VmState(i, m, SymbolTable(m.symbols)) for i, m in enumerate(machines)]
        self.current = 0
        self._runner = run
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
        self._disassembler = Disassembler()
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
        ``quit`` (GDB_REFUSED)."""
        try:
            command = parse(line)
            if command is None:
                return ""
            return self.execute(command, interrupted=interrupted, from_gdb=from_gdb)
        except CommandError as exc:
            return exc.render(line)

    def execute(self, command: S.Command, *,
                interrupted: Callable[[], bool] | None = None, from_gdb: bool = False) -> str:
        """Run a parsed command (CommandError when it fails); arguments as for run."""
        if from_gdb:
            _refuse_under_gdb(command)
        if command.while_running:
            return self._dispatch(command)
        if not self._machine_lock.acquire(blocking=False):
            raise fail(Problem.BUSY)
        self._poll = interrupted
        try:
            return self._dispatch(command)
        finally:
            self._poll = None
            self.status = self._status()
            self._machine_lock.release()

    def request_stop(self) -> None:
        """Stop the running guest at the next quantum boundary (any thread; Ctrl-C)."""
        self._stop_flag.set()

    def _should_stop(self) -> bool:
        """Polled while a command runs the guest: a stop was requested (request_stop), or
        the caller's ``interrupted`` check (Monitor.run) says so."""
        poll = self._poll
        if poll is not None and not self._stop_flag.is_set() and poll():
            self._stop_flag.set()
        return self._stop_flag.is_set()

    def _dispatch(self, command: S.Command) -> str:
        handler = getattr(self, "_do_" + type(command).__name__)
        return handler(command)

    # -- evaluation helpers ---------------------------------------------------------------
    def _scope(self) -> Scope:
        return Scope(self._read_register, self.vm.symbols.by_name)

    def _read_register(self, name: str) -> int:
        return int(read_register(self.machine, name))

    def _value(self, expr: Expr) -> int:
        return evaluate(expr, self._scope())

    def _count(self, expr: Expr | None, default: int, limit: int) -> int:
        if expr is None:
            return default
        value = self._value(expr)
        if not 1 <= value <= limit:
            raise fail(Problem.BAD_COUNT, start_column(expr), limit=limit, value=value)
        return value

    def _address(self, expr: Expr) -> int:
        return self._value(expr) & 0xFFFFFFFF

    def _check_mapped(self, addr: int, size: int, column: int) -> None:
        """Every page of [addr, addr+size) must translate (UNMAPPED names the first that
        does not)."""
        page = addr & ~0xFFF
        while page < addr + size:
            probe = max(page, addr)
            if probe > 0xFFFFFFFF or self.machine.debug.translate(probe) is None:
                raise fail(Problem.UNMAPPED, column, addr=probe & 0xFFFFFFFF)
            page += 0x1000

    def _mapped_prefix(self, addr: int, size: int) -> bytes:
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

    def _linear_eip(self) -> int:
        regs = self.machine.registers()
        return (self.machine.tables.base_of(regs.cs) + regs.eip) & 0xFFFFFFFF

    def _where(self) -> str:
        """``=> 0x00100023 <main+0x3>:  insn``: where the current VM is."""
        eip = self._linear_eip()
        code = self._mapped_prefix(eip, 15)
        decoded = self._disassembler.first(code, eip) if code else None
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
                vm.machine.stop_after_current(StopReason.CATCH, _catch_line(hit), hit)
                return

    # -- running the guest ----------------------------------------------------------------
    def _check_runnable(self) -> None:
        if self.vm.ended is not None:
            raise fail(Problem.ENDED, reason=self.vm.ended.value)

    def _run_guest(self, body: Callable[[], Stop]) -> Stop:
        self._stop_flag.clear()
        self.status = replace(self._status(), running=True)
        self._running = True
        self._collected = [] if self.notify is None else None
        try:
            return body()
        finally:
            self._running = False

    def _take_collected(self) -> str:
        text = "".join(self._collected or [])
        self._collected = None
        return text

    def _do_Continue(self, command: S.Continue) -> str:
        self._check_runnable()

        def body() -> Stop:
            # Leave a breakpoint by stepping its instruction first, as gdb does: the core's
            # own step-off does not retire an instruction that first needs a shadow fill.
            m = self.machine
            if self._linear_eip() in m.breakpoints:
                stop = self._step_once()
                if stop.reason is not StopReason.STEP or self._should_stop():
                    return stop
            engine = self._forward_engine()
            if engine is not None:
                return engine.run(None, interrupted=self._should_stop)
            if self._runner is not None:
                return self._runner(None, self._should_stop)
            return self.machine.run(None, interrupted=self._should_stop)
        stop = self._run_guest(body)
        vm_index = getattr(stop, "vm", None)
        if isinstance(vm_index, int) and 0 <= vm_index < len(self.vms):
            self.current = vm_index
        return self._take_collected() + self._after_stop(stop)

    def _do_Step(self, command: S.Step) -> str:
        count = self._count(command.count, 1, MAX_STEPS)
        self._check_runnable()

        def body() -> Stop:
            stop = self._step_once()
            for _ in range(count - 1):
                if stop.reason is not StopReason.STEP or self._should_stop():
                    break
                stop = self._step_once()
            return stop
        stop = self._run_guest(body)
        return self._take_collected() + self._after_stop(stop)

    def _step_once(self) -> Stop:
        """One instruction. Stepping from a breakpoint whose instruction first needs a shadow
        fill reports the breakpoint again without retiring anything (the fill is done by
        then): step again, so that a step always makes progress."""
        m = self.machine
        engine = self._forward_engine()
        step = m.step if engine is None else engine.step
        before = m.icount
        stop = step()
        for _ in range(2):
            if stop.reason is not StopReason.BREAKPOINT or m.icount != before:
                break
            stop = step()
        return stop

    def _after_stop(self, stop: Stop) -> str:
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
            head = _catch_line(stop.cause)
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

    # -- going back and forth in a recorded run ------------------------------------------
    def _forward_engine(self) -> ReverseExecution | None:
        """The engine that runs the current VM forward, if it is the recorded one."""
        engine = self.reverse
        return engine if engine is not None and engine.machine is self.machine else None

    def _engine(self) -> ReverseExecution:
        engine = self._forward_engine()
        if engine is not None:
            return engine
        if self.reverse is None:
            raise fail(Problem.NO_HISTORY)
        index = next(vm.index for vm in self.vms if vm.machine is self.reverse.machine)
        raise fail(Problem.NOT_THE_RECORDED_VM, index=index)

    def _do_ReverseStep(self, command: S.ReverseStep) -> str:
        engine = self._engine()
        count = self._count(command.count, 1, MAX_STEPS)
        before = self.machine.icount
        stop = self._run_guest(lambda: engine.step_back(count))
        if stop.reason is StopReason.STEP and count > before:
            stop = replace(stop, reason=StopReason.HISTORY_START,
                           message="start of the recorded run")
        return self._take_collected() + self._moved_in_time(stop)

    def _do_ReverseContinue(self, command: S.ReverseContinue) -> str:
        engine = self._engine()
        stop = self._run_guest(engine.continue_back)
        return self._take_collected() + self._moved_in_time(stop)

    def _do_Goto(self, command: S.Goto) -> str:
        engine = self._engine()
        icount = self._value(command.icount)
        if not 0 <= icount <= engine.end_icount:
            raise fail(Problem.OUTSIDE_HISTORY, start_column(command.icount), value=icount,
                       end=engine.end_icount)
        stop = self._run_guest(lambda: engine.goto(icount))
        return self._take_collected() + self._moved_in_time(stop)

    def _moved_in_time(self, stop: Stop) -> str:
        """After a jump in the recorded run: what the monitor keeps must describe the new
        point. Events at or after it have not happened (yet: going forward publishes them
        again); the VM has not ended; then the stop is booked and shown as any other."""
        vm = self.vm
        now = self.machine.icount
        if any(e.icount >= now for e in vm.history):
            kept = [e for e in vm.history if e.icount < now]
            vm.history.clear()
            vm.history.extend(kept)
        if vm.last_catch is not None and vm.last_catch.icount >= now:
            vm.last_catch = None
        vm.ended = None
        return self._after_stop(stop)

    def _do_StopCommand(self, command: S.StopCommand) -> str:
        if not self._running:
            raise fail(Problem.NOT_RUNNING)
        self.request_stop()
        return "stopping the guest\n"

    # -- breakpoints, watchpoints, event breakpoints --------------------------------------
    def _do_Break(self, command: S.Break) -> str:
        addr = self._address(command.address)
        vm = self.vm
        existing = vm.points.find_break(addr)
        if existing is not None:
            return f"breakpoint {existing.number} is already at {vm.symbols.address(addr)}\n"
        handle = self.machine.debug.add_breakpoint(addr, OWNER)
        point = vm.points.add(PointKind.BREAK, address=addr, handle=handle)
        return f"breakpoint {point.number} at {vm.symbols.address(addr)}\n"

    def _do_Watch(self, command: S.Watch) -> str:
        addr = self._address(command.address)
        length = self._count(command.length, 4, MAX_WATCH)
        self._check_mapped(addr, length, start_column(command.address))
        key = (addr, length, command.kind)
        vm = self.vm
        existing = vm.points.find_watch(key)
        if existing is not None:
            return f"watchpoint {existing.number} is already {existing.what()}\n"
        handle = self.machine.debug.add_watchpoint(addr, length, command.kind, OWNER)
        point = vm.points.add(PointKind.WATCH, address=addr, length=length, watch=command.kind,
                              handle=handle)
        return f"watchpoint {point.number}: {point.what(vm.symbols.label(addr))}\n"

    def _do_Catch(self, command: S.Catch) -> str:
        vm = self.vm
        if command.kind is None:
            catches = vm.points.of(PointKind.CATCH)
            if not catches:
                return "no event breakpoints\n"
            return "".join(f"{p.number}: {p.what()} ({p.hits} hits)\n" for p in catches)
        spec = CatchSpec(command.kind, command.vector, command.name)
        point = vm.points.add(PointKind.CATCH, catch=spec)
        return f"event breakpoint {point.number}: {point.what()}\n"

    def _do_Uncatch(self, command: S.Uncatch) -> str:
        catches = self.vm.points.of(PointKind.CATCH)
        for point in catches:
            del self.vm.points.points[point.number]
        return f"removed {len(catches)} event breakpoints\n"

    def _remove(self, point: Point) -> None:
        """Forget one of our points and give its handle back: a point another front end
        (gdb) holds at the same place stays."""
        del self.vm.points.points[point.number]
        if point.handle is not None:
            self.machine.debug.remove(point.handle)

    def _do_Delete(self, command: S.Delete) -> str:
        points = self.vm.points.points
        if command.number is None:
            everything = list(points.values())
            for point in everything:
                self._remove(point)
            return f"deleted {len(everything)} breakpoints\n"
        point = points.get(command.number)
        if point is None:
            raise fail(Problem.NO_BREAKPOINT, command.number_column, number=command.number)
        self._remove(point)
        return f"deleted {point.kind.value} {point.number}\n"

    def _do_InfoBreakpoints(self, command: S.InfoBreakpoints) -> str:
        points = list(self.vm.points.points.values())
        if not points:
            return "no breakpoints, watchpoints or event breakpoints\n"
        lines = [f"{'num':<5}{'type':<12}{'hits':<6}what"]
        for p in points:
            label = self.vm.symbols.label(p.address) if p.kind is not PointKind.CATCH else ""
            lines.append(f"{p.number:<5}{p.kind.value:<12}{p.hits:<6}{p.what(label)}")
        return "\n".join(lines) + "\n"

    # -- tracing and the event history ----------------------------------------------------
    def _do_Trace(self, command: S.Trace) -> str:
        if command.on is True:
            self.tracing = self.tracing | command.kinds
        elif command.on is False:
            self.tracing = self.tracing - command.kinds
        names = [k.value for k in EventKind if k in self.tracing]
        return f"tracing {', '.join(names)}\n" if names else "tracing nothing\n"

    def _do_Events(self, command: S.Events) -> str:
        count = self._count(command.last, DEFAULT_EVENTS, EVENT_HISTORY)
        events = [e for e in self.vm.history if command.kind is None or e.kind is command.kind]
        if not events:
            return "no events recorded\n"
        return "".join(e.describe() + "\n" for e in events[-count:])

    # -- registers and memory -------------------------------------------------------------
    def _do_Regs(self, command: S.Regs) -> str:
        r = self.machine.registers()
        flags = " ".join(name for bit, name in _FLAGS if r.eflags >> bit & 1)
        gprs = [("eax", r.eax), ("ecx", r.ecx), ("edx", r.edx), ("ebx", r.ebx),
                ("esp", r.esp), ("ebp", r.ebp), ("esi", r.esi), ("edi", r.edi)]
        lines = ["  ".join(f"{n} {v:#010x}" for n, v in gprs[:4]),
                 "  ".join(f"{n} {v:#010x}" for n, v in gprs[4:]),
                 f"eip {self.vm.symbols.address(r.eip)}  eflags {r.eflags:#010x} [ {flags} ] "
                 f"iopl {(r.eflags >> 12) & 3}",
                 "  ".join(f"{n} {getattr(r, n):#06x}" for n in ("cs", "ss", "ds", "es", "fs",
                                                                 "gs")),
                 "  ".join(f"{n} {getattr(r, n):#010x}" for n in ("cr0", "cr2", "cr3", "cr4")),
                 f"cpl {r.cpl}  vif {int(r.vif)}"]
        return "\n".join(lines) + "\n"

    def _do_SetRegister(self, command: S.SetRegister) -> str:
        value = self._value(command.value)
        try:
            self.machine.write_register(command.register, value)
        except RegisterError as exc:
            raise fail(Problem.REGISTER_WRITE, command.register_column, detail=str(exc)) \
                from None
        shown = self._read_register(command.register)
        return f"{command.register} = {shown:#x}\n"

    def _do_Examine(self, command: S.Examine) -> str:
        addr = self._address(command.address)
        column = start_column(command.address)
        if command.radix is S.Radix.STRING:
            strings = self._count(command.count, command.fmt_count or 1, 64)
            return self._strings(addr, strings, command.physical, column)
        default = command.fmt_count or max(1, 16 // int(command.unit))
        count = self._count(command.count, default, MAX_UNITS)
        size = count * int(command.unit)
        if command.physical:
            data = self._physical(addr, size, column)
            return dump(data, addr, command.radix, command.unit)
        self._check_mapped(addr, size, column)
        data = self.machine.debug.read_virtual(addr, size)
        return dump(data, addr, command.radix, command.unit, self.vm.symbols)

    def _physical(self, addr: int, size: int, column: int) -> bytes:
        try:
            return self.machine.read_physical(addr, size)
        except ValueError:
            raise fail(Problem.OUTSIDE_RAM, column, addr=addr, size=size) from None

    def _strings(self, addr: int, count: int, physical: bool, column: int) -> str:
        out = []
        at = addr
        for _ in range(count):
            if physical:
                ram = self.machine.ram_size
                if not 0 <= at < ram:
                    raise fail(Problem.OUTSIDE_RAM, column, addr=at, size=1)
                data = self.machine.read_physical(at, min(256, ram - at))
            else:
                self._check_mapped(at, 1, column)
                data = self._mapped_prefix(at, 256)
            end = data.find(b"\0")
            text = data if end < 0 else data[:end]
            label = "" if physical else self.vm.symbols.label(at)
            out.append(f"{at:08x}{label}: {text.decode('latin-1')!r}\n")
            at += len(text) + 1
        return "".join(out)

    def _do_SetPhysical(self, command: S.SetPhysical) -> str:
        addr = self._value(command.address)
        values = []
        for expr in command.values:
            value = self._value(expr)
            if not 0 <= value <= 0xFF:
                raise fail(Problem.NOT_A_BYTE, start_column(expr), value=value)
            values.append(value)
        if addr < 0 or addr + len(values) > self.machine.ram_size:
            raise fail(Problem.OUTSIDE_RAM, start_column(command.address), addr=addr,
                       size=len(values))
        self.machine.write_physical(addr, bytes(values))
        return f"wrote {len(values)} bytes at physical {addr:#x}\n"

    def _do_Disas(self, command: S.Disas) -> str:
        addr = self._address(command.address) if command.address is not None else \
            self._linear_eip()
        count = self._count(command.count, DEFAULT_DISAS, 1000)
        if command.address is not None:
            self._check_mapped(addr, 1, start_column(command.address))

        def read(at: int, size: int) -> bytes | None:
            return self._mapped_prefix(at, size) or None
        lines = self._disassembler.lines(read, addr, count, self.vm.symbols, self._linear_eip())
        return "\n".join(lines) + "\n"

    # -- machine views ------------------------------------------------------------------
    def _do_PtWalk(self, command: S.PtWalk) -> str:
        return walk_report(self.machine, self._address(command.address))

    def _do_PtStats(self, command: S.PtStats) -> str:
        return stats_report(self.machine)

    def _do_PtMap(self, command: S.PtMap) -> str:
        return map_report(self.machine)

    def _do_PtPages(self, command: S.PtPages) -> str:
        return pages_report(self.machine)

    def _do_Gdt(self, command: S.Gdt) -> str:
        return gdt_report(self.machine)

    def _do_Idt(self, command: S.Idt) -> str:
        return idt_report(self.machine, self.vm.symbols)

    def _do_Tss(self, command: S.Tss) -> str:
        return tss_report(self.machine)

    def _do_PicCommand(self, command: S.PicCommand) -> str:
        return pic_report(self.machine.pic)

    def _do_PitCommand(self, command: S.PitCommand) -> str:
        return pit_report(self.machine.pit, self.machine.clock.now())

    def _do_HalStats(self, command: S.HalStats) -> str:
        if self.hal_stats is None:
            return "no HAL devices\n"
        text = self.hal_stats(self.current)
        return text if text.endswith("\n") else text + "\n"

    def _do_Info(self, command: S.Info) -> str:
        vm, m = self.vm, self.machine
        r = m.registers()
        state = f"ended ({vm.ended.value})" if vm.ended else "paused"
        lines = [f"vm {vm.index} of {len(self.vms)}: {state}"]
        if vm.last_stop is not None:
            lines.append(f"last stop: {vm.last_stop.reason.value}: {vm.last_stop.message}")
        lines += [f"icount {m.icount}  virtual time {m.clock.now()}",
                  f"eip {vm.symbols.address(r.eip)}  cpl {r.cpl}  vif {int(r.vif)}  "
                  f"cr0 {r.cr0:#x}  cr3 {r.cr3:#x}  cr4 {r.cr4:#x}",
                  f"shadow: {m.mmu.stats.fills} fills, {m.mmu.cached_spaces} address spaces "
                  f"kept, paging {'on' if m.vcpu.cr0 & CR0_PG else 'off'}",
                  f"{len(vm.points.points)} breakpoints/watchpoints/event breakpoints; "
                  f"tracing {', '.join(sorted(k.value for k in self.tracing)) or 'nothing'}"]
        if vm.last_catch is not None:
            lines.append(f"last event breakpoint: {vm.last_catch.describe()}")
        return "\n".join(lines) + "\n"

    # -- the session ----------------------------------------------------------------------
    def _do_Quit(self, command: S.Quit) -> str:
        self.quit_requested = True
        if self._running:
            self.request_stop()
        return ""

    def _do_Help(self, command: S.Help) -> str:
        if command.topic is None:
            lines = []
            for cls in S.COMMANDS:
                summary = cls.help.split(". ")[0].rstrip(".")
                if len(cls.usage) + 2 > HELP_USAGE_WIDTH:     # the usage on a line of its own
                    lines.append(cls.usage)
                    first = " " * HELP_USAGE_WIDTH
                else:
                    first = f"{cls.usage:<{HELP_USAGE_WIDTH}}"
                lines += textwrap.wrap(summary, HELP_WIDTH, initial_indent=first,
                                       subsequent_indent=" " * HELP_USAGE_WIDTH,
                                       break_long_words=False, break_on_hyphens=False)
            return "\n".join(lines) + "\nhelp COMMAND explains one; docs/monitor.md has more.\n"
        out = []
        for cls in S.lookup(command.topic):
            aliases = [n for n in cls.names if not (cls.usage + " ").startswith(n + " ")]
            alias = f" (also: {', '.join(aliases)})" if aliases else ""
            out.append("\n".join(textwrap.wrap(cls.usage + alias, HELP_WIDTH,
                                                subsequent_indent="    ")) + "\n" +
                       textwrap.fill(cls.help, HELP_WIDTH, initial_indent="  ",
                                     subsequent_indent="  ", break_long_words=False,
                                     break_on_hyphens=False))
        return "\n".join(out) + "\n"

    def _do_Vm(self, command: S.Vm) -> str:
        if command.index is not None:
            if not 0 <= command.index < len(self.vms):
                raise fail(Problem.NO_VM, command.index_column, index=command.index,
                           last=len(self.vms) - 1)
            self.current = command.index
        lines = []
        for vm in self.vms:
            mark = "*" if vm.index == self.current else " "
            state = f"ended ({vm.ended.value})" if vm.ended else "paused"
            eip = vm.machine.registers().eip
            lines.append(f"{mark} vm {vm.index}: {state}, icount {vm.machine.icount}, eip "
                         f"{vm.symbols.address(eip)}")
        return "\n".join(lines) + "\n"

    def _do_Send(self, command: S.Send) -> str:
        if self.console_input is None:
            raise fail(Problem.NO_CONSOLE_INPUT, 5)
        self.console_input(self.current, command.data)
        return ""

    def _do_StepIrqs(self, command: S.StepIrqs) -> str:
        for vm in self.vms:
            vm.machine.irqs_while_stepping = command.on
        return f"interrupts while stepping: {'on' if command.on else 'off'}\n"

    # -- status -------------------------------------------------------------------------
    def _status(self) -> Status:
        vm = self.vm
        regs = vm.machine.registers()
        stop = vm.last_stop.reason.value if vm.last_stop else ""
        return Status(vm.index, len(self.vms), self._running, regs.eip, regs.cpl, regs.vif,
                      vm.machine.icount, stop, vm.ended is not None)
