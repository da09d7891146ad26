"""``catch`` and ``uncatch``: event breakpoints, which stop right after the instruction that
caused an event of a kind (docs/events.md)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lark import Token

from ...core.shadow_mmu import PtOp
from ...hal.abi import Channel
from ..errors import Problem, fail
from ..points import CatchKind, CatchSpec, PointKind
from .base import Command, CommandModule, CompletionRequest

if TYPE_CHECKING:
    from .interpreter import CommandInterpreter

PT_OPS = tuple(op.value for op in PtOp)
HAL_CHANNELS = tuple(channel.name.lower() for channel in Channel)
# the kinds whose argument is a word of a fixed set
_NAMED = {CatchKind.PT: (PT_OPS, Problem.PT_OP), CatchKind.HAL: (HAL_CHANNELS, Problem.HAL_CHANNEL)}


@dataclass(frozen=True)
class Catch(Command):
    kind: CatchKind | None = None      # None: list the event breakpoints
    vector: int | None = None          # trap, irq vector; syscall number
    name: str | None = None            # pt op, hal channel, syscall name
    names = ("catch",)
    usage = "catch [vif|trap|irq|pt|desc|hal|syscall [ARG]]"
    help = ("Event breakpoint: stop right after the instruction that caused such an event "
            "(docs/events.md). ARG: a vector for trap and irq, an op for pt, a channel for "
            "hal, a name or number for syscall (its entry and return). Without arguments, "
            "list them.")


@dataclass(frozen=True)
class Uncatch(Command):
    names = ("uncatch",)
    usage = "uncatch"
    help = "Remove every event breakpoint."


def catch(m: CommandInterpreter, command: Catch) -> str:
    vm = m.vm
    if command.kind is None:
        catches = vm.points.of(PointKind.CATCH)
        if not catches:
            return "no event breakpoints\n"
        return "".join(f"{p.number}: {p.what()} ({p.hits} hits)\n" for p in catches)
    spec = CatchSpec(command.kind, command.vector, command.name)
    point = vm.points.add(PointKind.CATCH, catch=spec)
    return f"event breakpoint {point.number}: {point.what()}\n"


def uncatch(m: CommandInterpreter, command: Uncatch) -> str:
    catches = m.vm.points.of(PointKind.CATCH)
    for point in catches:
        del m.vm.points.points[point.number]
    return f"removed {len(catches)} event breakpoints\n"


def _build_catch(children: list[Token]) -> Catch:
    """Checks the kind and its argument here, so that a catch that parses can be set."""
    if not children:
        return Catch()
    word = children[0]
    try:
        kind = CatchKind(str(word))
    except ValueError:
        raise fail(Problem.CATCH_KIND, word.start_pos, name=str(word),
                   kinds=", ".join(k.value for k in CatchKind)) from None
    if len(children) == 1:
        return Catch(kind)
    arg = children[1]
    if kind in (CatchKind.TRAP, CatchKind.IRQ):
        try:
            vector = int(arg, 0)
        except ValueError:
            vector = -1
        if not 0 <= vector <= 255:
            raise fail(Problem.CATCH_VECTOR, arg.start_pos, kind=kind.value, text=str(arg))
        return Catch(kind, vector=vector)
    if kind in _NAMED:
        known, problem = _NAMED[kind]
        if arg not in known:
            raise fail(problem, arg.start_pos, name=str(arg))
        return Catch(kind, name=str(arg))
    if kind is CatchKind.SYSCALL:
        # a number, or a name of the guest's table (Linux: execve, openat, ...)
        try:
            return Catch(kind, vector=int(arg, 0))
        except ValueError:
            return Catch(kind, name=str(arg))
    raise fail(Problem.CATCH_ARGUMENT, arg.start_pos, kind=kind.value)


def _complete_catch(request: CompletionRequest) -> tuple[str, ...] | list[str]:
    if request.position == 0:
        return tuple(kind.value for kind in CatchKind)
    if request.position == 1 and request.words[1] in (CatchKind.PT, CatchKind.HAL):
        return _NAMED[CatchKind(request.words[1])][0]
    return request.symbols


MODULE = CommandModule(
    grammar='''
catch: "catch" (WORD WORD?)?
uncatch: "uncatch"
''',
    rules=("catch", "uncatch"),
    builders={"catch": _build_catch, "uncatch": lambda children: Uncatch()},
    handlers={Catch: catch, Uncatch: uncatch},
    completers={"catch": _complete_catch},
)
