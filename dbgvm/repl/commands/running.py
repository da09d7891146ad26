"""``continue``, ``step``, ``stop``, ``step-irqs``: running the guest forward."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...core.faults import StopReason
from ...core.machine import Stop
from ..errors import Problem, fail
from ..expr import Expr
from .base import Command, CommandModule, Needs, keywords

if TYPE_CHECKING:
    from .interpreter import CommandInterpreter

MAX_STEPS = 10_000_000


@dataclass(frozen=True)
class Continue(Command):
    names = ("continue", "c")
    usage = "continue"
    help = ("Run the guest until something stops it: a breakpoint, a watchpoint, an event "
            "breakpoint (catch), the guest's end, or 'stop' / Ctrl-C.")
    runs_guest = True
    needs = Needs.RUNNABLE
    gdb_instead = "'continue'"


@dataclass(frozen=True)
class Step(Command):
    count: Expr | None = None
    names = ("step", "s")
    usage = "step [N]"
    help = ("Execute N (default 1) instructions, then show the next one. Interrupts are not "
            "taken before a stepped instruction unless 'step-irqs on'.")
    runs_guest = True
    needs = Needs.RUNNABLE
    gdb_instead = "'stepi'"


@dataclass(frozen=True)
class StopCommand(Command):
    names = ("stop",)
    usage = "stop"
    help = "Stop the running guest after the current quantum (Ctrl-C at the prompt does the same)."
    while_running = True


@dataclass(frozen=True)
class StepIrqs(Command):
    on: bool
    names = ("step-irqs",)
    usage = "step-irqs on|off"
    help = "Deliver interrupts while single-stepping (default off, as QEMU's gdbstub)."


def step_once(m: CommandInterpreter) -> Stop:
    """One instruction. Stepping from a breakpoint whose instruction first needs a shadow
    fill reports the breakpoint again without retiring anything (the fill is done by then):
    step again, so that a step always makes progress."""
    machine = m.machine
    engine = m.forward_engine()
    step = machine.step if engine is None else engine.step
    before = machine.icount
    stop = step()
    for _ in range(2):
        if stop.reason is not StopReason.BREAKPOINT or machine.icount != before:
            break
        stop = step()
    return stop


def continue_(m: CommandInterpreter, command: Continue) -> str:
    def body() -> Stop:
        # Leave a breakpoint by stepping its instruction first, as gdb does: the core's
        # own step-off does not retire an instruction that first needs a shadow fill.
        if m.linear_eip() in m.machine.breakpoints:
            stop = step_once(m)
            if stop.reason is not StopReason.STEP or m.should_stop():
                return stop
        engine = m.forward_engine()
        if engine is not None:
            return engine.run(None, interrupted=m.should_stop)
        if m.runner is not None:
            return m.runner(None, m.should_stop)
        return m.machine.run(None, interrupted=m.should_stop)
    traced, stop = m.run_guest(body)
    vm_index = getattr(stop, "vm", None)
    if isinstance(vm_index, int) and 0 <= vm_index < len(m.vms):
        m.current = vm_index
    return traced + m.report_stop(stop)


def step(m: CommandInterpreter, command: Step) -> str:
    count = m.count(command.count, 1, MAX_STEPS)

    def body() -> Stop:
        stop = step_once(m)
        for _ in range(count - 1):
            if stop.reason is not StopReason.STEP or m.should_stop():
                break
            stop = step_once(m)
        return stop
    traced, stop = m.run_guest(body)
    return traced + m.report_stop(stop)


def stop(m: CommandInterpreter, command: StopCommand) -> str:
    if not m.running:
        raise fail(Problem.NOT_RUNNING)
    m.request_stop()
    return "stopping the guest\n"


def step_irqs(m: CommandInterpreter, command: StepIrqs) -> str:
    for vm in m.vms:
        vm.machine.irqs_while_stepping = command.on
    return f"interrupts while stepping: {'on' if command.on else 'off'}\n"


MODULE = CommandModule(
    grammar='''
continue: ("continue" | "c")
step: ("step" | "s") expr?
stop: "stop"
step_irqs: "step-irqs" on_off
''',
    rules=("continue", "step", "stop", "step_irqs"),
    builders={
        "continue": lambda children: Continue(),
        "step": lambda children: Step(children[0] if children else None),
        "stop": lambda children: StopCommand(),
        "step_irqs": lambda children: StepIrqs(children[0]),
    },
    handlers={Continue: continue_, Step: step, StopCommand: stop, StepIrqs: step_irqs},
    completers={"step-irqs": keywords(("on", "off"))},
)
