"""``trace`` and ``events``: events as they happen, and the last ones recorded."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lark import Token

from ...core.events import EventKind
from ..arguments import event_kinds
from ..errors import Problem, fail
from ..expr import Expr
from .base import Command, CommandModule, CompletionRequest

if TYPE_CHECKING:
    from .interpreter import CommandInterpreter

EVENT_HISTORY = 10_000          # the events the monitor keeps of each VM
DEFAULT_EVENTS = 20
KINDS = tuple(kind.value for kind in EventKind)


@dataclass(frozen=True)
class Trace(Command):
    on: bool | None = None             # None: show what is traced
    kinds: frozenset[EventKind] = frozenset()
    names = ("trace",)
    usage = "trace [on|off [KINDS]]"
    help = ("Print events of these kinds (comma list, or 'all') as they happen; 'trace off' "
            "alone stops all tracing.")


@dataclass(frozen=True)
class Events(Command):
    kind: EventKind | None = None
    last: Expr | None = None
    names = ("events",)
    usage = "events [KIND] [last N]"
    help = "Show the last N (default 20) recorded events, all kinds or one."


def trace(m: CommandInterpreter, command: Trace) -> str:
    if command.on is True:
        m.tracing = m.tracing | command.kinds
    elif command.on is False:
        m.tracing = m.tracing - command.kinds
    names = [k.value for k in EventKind if k in m.tracing]
    return f"tracing {', '.join(names)}\n" if names else "tracing nothing\n"


def events(m: CommandInterpreter, command: Events) -> str:
    count = m.count(command.last, DEFAULT_EVENTS, EVENT_HISTORY)
    recorded = [e for e in m.vm.history if command.kind is None or e.kind is command.kind]
    if not recorded:
        return "no events recorded\n"
    return "".join(e.describe() + "\n" for e in recorded[-count:])


def _build_trace(children: list) -> Trace:
    if not children:
        return Trace()
    on = children[0]
    if len(children) == 1:
        if on:
            raise fail(Problem.UNEXPECTED_END, 8, expected="event kinds (or 'all')")
        return Trace(False, frozenset(EventKind))
    return Trace(on, event_kinds(children[1]))


def _build_events(children: list) -> Events:
    kind = last = None
    for child in children:
        if isinstance(child, Token) and child.type == "WORD":
            kinds = event_kinds(child)
            if len(kinds) != 1:
                raise fail(Problem.UNKNOWN_KIND, child.start_pos, name=str(child))
            kind = next(iter(kinds))
        else:
            last = child
    return Events(kind, last)


def _kinds_completer(*positions: tuple[str, ...]):
    """Fixed words per position; inside a comma list, the event kinds again."""
    def offer(request: CompletionRequest):
        if request.words[-1].endswith(","):
            return KINDS
        if request.position < len(positions):
            return positions[request.position]
        return request.symbols
    return offer


MODULE = CommandModule(
    grammar='''
trace: "trace" (on_off WORD?)?
events: "events" WORD? ("last" expr)?
''',
    rules=("trace", "events"),
    builders={"trace": _build_trace, "events": _build_events},
    handlers={Trace: trace, Events: events},
    completers={"trace": _kinds_completer(("on", "off"), KINDS + ("all",)),
                "events": _kinds_completer(KINDS + ("last",))},
)
