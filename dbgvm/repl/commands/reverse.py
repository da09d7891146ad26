"""``rstep``, ``rcontinue``, ``goto``: moving back and forth in a recorded run (dbgvm replay)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ...core.faults import StopReason
from ...core.machine import Stop
from ..errors import Problem, fail
from ..expr import Expr, start_column
from .base import Command, CommandModule, Needs
from .running import MAX_STEPS

if TYPE_CHECKING:
    from .interpreter import CommandInterpreter


@dataclass(frozen=True)
class ReverseStep(Command):
    count: Expr | None = None
    names = ("rstep",)
    usage = "rstep [N]"
    help = ("Go back N (default 1) instructions in a recorded run (dbgvm replay), then show "
            "the next instruction; the start of the run stops it.")
    runs_guest = True
    needs = Needs.HISTORY
    gdb_instead = "'reverse-stepi'"


@dataclass(frozen=True)
class ReverseContinue(Command):
    names = ("rcontinue",)
    usage = "rcontinue"
    help = ("Go back in a recorded run (dbgvm replay) to the last breakpoint or watchpoint hit "
            "before the current point, or to the start of the run when there is none.")
    runs_guest = True
    needs = Needs.HISTORY
    gdb_instead = "'reverse-continue'"


@dataclass(frozen=True)
class Goto(Command):
    icount: Expr
    names = ("goto",)
    usage = "goto ICOUNT"
    help = ("Go to the state after ICOUNT instructions of a recorded run (dbgvm replay), "
            "backwards or forwards, without stopping at breakpoints on the way.")
    runs_guest = True
    needs = Needs.HISTORY
    gdb_instead = ("'reverse-continue' / 'continue' with a breakpoint ('monitor info' shows "
                   "the icount)")


def _moved_in_time(m: CommandInterpreter, stop: Stop) -> str:
    """After a jump in the recorded run: what the monitor keeps must describe the new point.
    Events at or after it have not happened (yet: going forward publishes them again); the
    VM has not ended; then the stop is booked and shown as any other."""
    vm = m.vm
    now = m.machine.icount
    if any(e.icount >= now for e in vm.history):
        kept = [e for e in vm.history if e.icount < now]
        vm.history.clear()
        vm.history.extend(kept)
    if vm.last_catch is not None and vm.last_catch.icount >= now:
        vm.last_catch = None
    vm.ended = None
    return m.report_stop(stop)


def reverse_step(m: CommandInterpreter, command: ReverseStep) -> str:
    engine = m.engine()
    count = m.count(command.count, 1, MAX_STEPS)
    before = m.machine.icount
    traced, stop = m.run_guest(lambda: engine.step_back(count))
    if stop.reason is StopReason.STEP and count > before:
        stop = replace(stop, reason=StopReason.HISTORY_START,
                       message="start of the recorded run")
    return traced + _moved_in_time(m, stop)


def reverse_continue(m: CommandInterpreter, command: ReverseContinue) -> str:
    traced, stop = m.run_guest(m.engine().continue_back)
    return traced + _moved_in_time(m, stop)


def goto(m: CommandInterpreter, command: Goto) -> str:
    engine = m.engine()
    icount = m.value(command.icount)
    if not 0 <= icount <= engine.end_icount:
        raise fail(Problem.OUTSIDE_HISTORY, start_column(command.icount), value=icount,
                   end=engine.end_icount)
    traced, stop = m.run_guest(lambda: engine.goto(icount))
    return traced + _moved_in_time(m, stop)


MODULE = CommandModule(
    grammar='''
rstep: "rstep" expr?
rcontinue: "rcontinue"
goto: "goto" expr
''',
    rules=("rstep", "rcontinue", "goto"),
    builders={
        "rstep": lambda children: ReverseStep(children[0] if children else None),
        "rcontinue": lambda children: ReverseContinue(),
        "goto": lambda children: Goto(children[0]),
    },
    handlers={ReverseStep: reverse_step, ReverseContinue: reverse_continue, Goto: goto},
)
