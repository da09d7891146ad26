"""``break``, ``watch``, ``delete``, ``info breakpoints``: the monitor's own stopping points.

They are the monitor's, as gdb's are gdb's: each holds a handle the machine gave the monitor
(core/debug_points.py), and ``delete`` gives back only the monitor's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...core.debug import WatchKind
from ..arguments import number
from ..errors import Problem, fail
from ..expr import Expr, start_column
from ..points import Point, PointKind
from .base import Command, CommandModule

if TYPE_CHECKING:
    from .interpreter import CommandInterpreter

OWNER = "monitor"               # whose points the monitor's are (core/debug_points.py)
MAX_WATCH = 4096
WATCH_WORDS = ("read", "write", "access")      # the grammar's watch_kind


@dataclass(frozen=True)
class Break(Command):
    address: Expr
    names = ("break", "b")
    usage = "break ADDR|SYMBOL"
    help = "Stop before the instruction at this virtual address (an expression: 'break main+4')."


@dataclass(frozen=True)
class Delete(Command):
    number: int | None = None
    number_column: int = 0
    names = ("delete", "d")
    usage = "delete [N]"
    help = "Delete breakpoint, watchpoint or event breakpoint N, or all of them."


@dataclass(frozen=True)
class InfoBreakpoints(Command):
    names = ("info breakpoints",)
    usage = "info breakpoints"
    help = "List breakpoints, watchpoints and event breakpoints with their numbers and hits."


@dataclass(frozen=True)
class Watch(Command):
    kind: WatchKind
    address: Expr
    length: Expr | None = None
    names = ("watch",)
    usage = "watch [read|write|access] ADDR [LEN]"
    help = ("Stop after an instruction that writes (default), reads or accesses LEN (default 4) "
            "bytes at ADDR: the physical bytes ADDR maps to now.")


def break_(m: CommandInterpreter, command: Break) -> str:
    addr = m.address(command.address)
    vm = m.vm
    existing = vm.points.find_break(addr)
    if existing is not None:
        return f"breakpoint {existing.number} is already at {vm.symbols.address(addr)}\n"
    handle = m.machine.debug.add_breakpoint(addr, OWNER)
    point = vm.points.add(PointKind.BREAK, address=addr, handle=handle)
    return f"breakpoint {point.number} at {vm.symbols.address(addr)}\n"


def watch(m: CommandInterpreter, command: Watch) -> str:
    addr = m.address(command.address)
    length = m.count(command.length, 4, MAX_WATCH)
    m.check_mapped(addr, length, start_column(command.address))
    key = (addr, length, command.kind)
    vm = m.vm
    existing = vm.points.find_watch(key)
    if existing is not None:
        return f"watchpoint {existing.number} is already {existing.what()}\n"
    handle = m.machine.debug.add_watchpoint(addr, length, command.kind, OWNER)
    point = vm.points.add(PointKind.WATCH, address=addr, length=length, watch=command.kind,
                          handle=handle)
    return f"watchpoint {point.number}: {point.what(vm.symbols.label(addr))}\n"


def _remove(m: CommandInterpreter, point: Point) -> None:
    """Forget one of our points and give its handle back: a point another front end (gdb)
    holds at the same place stays."""
    del m.vm.points.points[point.number]
    if point.handle is not None:
        m.machine.debug.remove(point.handle)


def delete(m: CommandInterpreter, command: Delete) -> str:
    points = m.vm.points.points
    if command.number is None:
        everything = list(points.values())
        for point in everything:
            _remove(m, point)
        return f"deleted {len(everything)} breakpoints\n"
    point = points.get(command.number)
    if point is None:
        raise fail(Problem.NO_BREAKPOINT, command.number_column, number=command.number)
    _remove(m, point)
    return f"deleted {point.kind.value} {point.number}\n"


def info_breakpoints(m: CommandInterpreter, command: InfoBreakpoints) -> str:
    points = list(m.vm.points.points.values())
    if not points:
        return "no breakpoints, watchpoints or event breakpoints\n"
    lines = [f"{'num':<5}{'type':<12}{'hits':<6}what"]
    for p in points:
        label = m.vm.symbols.label(p.address) if p.kind is not PointKind.CATCH else ""
        lines.append(f"{p.number:<5}{p.kind.value:<12}{p.hits:<6}{p.what(label)}")
    return "\n".join(lines) + "\n"


def _build_watch(children: list) -> Watch:
    kind = children.pop(0) if isinstance(children[0], WatchKind) else WatchKind.WRITE
    return Watch(kind, *children)


def _build_delete(children: list) -> Delete:
    if not children:
        return Delete()
    return Delete(number(children[0]), children[0].start_pos)


MODULE = CommandModule(
    grammar='''
break: ("break" | "b") expr
delete: ("delete" | "d") NUMBER?
info_breakpoints: "info" "breakpoints"
watch: "watch" watch_kind? expr expr?
watch_kind: "read" -> watch_read
          | "write" -> watch_write
          | "access" -> watch_access
''',
    rules=("break", "delete", "info_breakpoints", "watch"),
    builders={
        "break": lambda children: Break(children[0]),
        "delete": _build_delete,
        "info_breakpoints": lambda children: InfoBreakpoints(),
        "watch": _build_watch,
        "watch_read": lambda children: WatchKind.READ,
        "watch_write": lambda children: WatchKind.WRITE,
        "watch_access": lambda children: WatchKind.ACCESS,
    },
    handlers={Break: break_, Delete: delete, InfoBreakpoints: info_breakpoints,
              Watch: watch},
    # the kind is optional: symbols too
    completers={"watch": lambda request: (
        [*WATCH_WORDS, *request.symbols] if request.position == 0 else request.symbols)},
)
