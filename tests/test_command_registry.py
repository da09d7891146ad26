"""The command registry (dbgvm/repl/commands/registry.py) is the one list of commands: every
command class of the package is in it, each has help that fits 80 columns, a command line
reaches its handler through it, and the preconditions the classes declare are checked before
any handler runs."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import SimpleNamespace

import pytest
from guest_build import build

import dbgvm.repl.commands as package
from dbgvm.core.assembly import build_machine
from dbgvm.core.faults import StopReason
from dbgvm.core.loader import load
from dbgvm.repl.commands import REGISTRY, Command, CommandInterpreter, Needs
from dbgvm.repl.errors import CommandError, Problem
from dbgvm.repl.parser import parse

# a command line for each command class (a new command needs one here)
EXAMPLES: dict[str, str] = {
    "Continue": "continue", "Step": "step 2", "StopCommand": "stop",
    "StepIrqs": "step-irqs on", "ReverseStep": "rstep", "ReverseContinue": "rcontinue",
    "Goto": "goto 3", "Break": "break main", "Delete": "delete 1",
    "InfoBreakpoints": "info breakpoints", "Watch": "watch read main 4",
    "Catch": "catch irq 0x20", "Uncatch": "uncatch", "Trace": "trace on vif,irq",
    "Events": "events trap last 3", "Regs": "info registers", "SetRegister": "set eax = 1",
    "Examine": "xp/4xw 0x1000", "SetPhysical": "setp 0x1000 1 2", "Disas": "disas main 2",
    "PtWalk": "pt walk main", "PtStats": "pt stats", "PtMap": "info mem",
    "PtPages": "pt pages", "Gdt": "gdt", "Idt": "idt", "Tss": "tss", "PicCommand": "pic",
    "PitCommand": "pit", "HalStats": "hal stats", "Info": "info", "Quit": "quit",
    "Vm": "vm 0", "Send": 'send "ls\\n"', "Help": "help x",
}


def _command_classes() -> set[type[Command]]:
    """Every Command subclass defined in a module of the package."""
    found = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Command) and obj is not Command and \
                    obj.__module__ == module.__name__:
                found.add(obj)
    return found


@pytest.fixture(scope="module")
def machine():
    m = build_machine()
    m.load(load(build("basics"), m.ram_size))
    return m


def _monitor(machine) -> CommandInterpreter:
    # a recorded run, so that the commands that need one reach their handler
    return CommandInterpreter(machine, reverse=SimpleNamespace(machine=machine, end_icount=10))


def test_the_registry_holds_every_command_class_and_each_has_an_example():
    assert _command_classes() == set(REGISTRY.commands)
    assert {cls.__name__ for cls in REGISTRY.commands} == set(EXAMPLES)
    assert len(REGISTRY.commands) == len(set(REGISTRY.commands))


@pytest.mark.parametrize("cls", REGISTRY.commands, ids=lambda cls: cls.__name__)
def test_each_command_has_names_usage_and_help_fitting_80_columns(cls, machine):
    assert cls.names and cls.usage and cls.help.endswith((".", ")"))
    assert len(cls.usage) < 80
    assert all(name.split()[0] in REGISTRY.command_words for name in cls.names)
    text = _monitor(machine).run(f"help {cls.names[0]}")
    assert cls.usage in text and not text.startswith("error")
    assert max(len(line) for line in text.splitlines()) <= 80, text


@pytest.mark.parametrize("cls", REGISTRY.commands, ids=lambda cls: cls.__name__)
def test_a_command_line_reaches_its_handler(cls, machine, monkeypatch):
    mon = _monitor(machine)
    seen = []
    monkeypatch.setitem(REGISTRY.handlers, cls,
                        lambda monitor, command: seen.append((monitor, command)) or "done\n")
    assert mon.run(EXAMPLES[cls.__name__]) == "done\n"
    assert len(seen) == 1 and seen[0][0] is mon and type(seen[0][1]) is cls


@pytest.mark.parametrize("cls", [c for c in REGISTRY.commands
                                 if c.gdb_instead or c.ends_session],
                         ids=lambda cls: cls.__name__)
def test_commands_refused_under_gdb_never_reach_their_handler(cls, machine, monkeypatch):
    mon = _monitor(machine)
    monkeypatch.setitem(REGISTRY.handlers, cls, lambda monitor, command: pytest.fail(
        "the handler ran"))
    out = mon.run(EXAMPLES[cls.__name__], from_gdb=True)
    assert out.startswith("error: ") and "gdb" in out


def test_the_refusals_under_gdb_are_the_commands_that_move_or_change_the_guest():
    refused = {cls.__name__ for cls in REGISTRY.commands if cls.gdb_instead or cls.ends_session}
    assert refused == {"Continue", "Step", "ReverseStep", "ReverseContinue", "Goto",
                       "SetRegister", "Quit"}


@pytest.mark.parametrize("cls", [c for c in REGISTRY.commands if Needs.RUNNABLE in c.needs],
                         ids=lambda cls: cls.__name__)
def test_an_ended_vm_refuses_the_commands_that_need_a_runnable_one(cls, machine,
                                                                     monkeypatch):
    mon = _monitor(machine)
    mon.vm.ended = StopReason.POWEROFF
    monkeypatch.setitem(REGISTRY.handlers, cls, lambda monitor, command: pytest.fail(
        "the handler ran"))
    with pytest.raises(CommandError) as caught:
        mon.execute(parse(EXAMPLES[cls.__name__]))
    assert caught.value.problem is Problem.ENDED


@pytest.mark.parametrize("cls", [c for c in REGISTRY.commands if Needs.HISTORY in c.needs],
                         ids=lambda cls: cls.__name__)
def test_without_a_recorded_run_the_commands_that_need_one_fail_first(cls, machine,
                                                                       monkeypatch):
    mon = CommandInterpreter(machine)
    monkeypatch.setitem(REGISTRY.handlers, cls, lambda monitor, command: pytest.fail(
        "the handler ran"))
    assert mon.run(EXAMPLES[cls.__name__]).startswith(
        "error: going backwards needs a recorded run")
