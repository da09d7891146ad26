"""Numbered stopping points of one VM: breakpoints, watchpoints and event breakpoints.

One numbering for all three, as in gdb, so ``delete N`` and ``info breakpoints`` treat them
alike. The table only books them; arming them on the Machine is the monitor's job. A
breakpoint or watchpoint keeps the handle the machine gave the monitor for it
(core/debug_points.py): the monitor removes only its own points, and recognises its own
in a stop's cause, whatever gdb set at the same place.
"""
from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from ..core.debug import Handle, WatchKind
from ..core.events import Event, EventKind


class CatchKind(str, enum.Enum):
    """The event kinds an event breakpoint can stop on (``catch``): every kind but port I/O
    (too many to stop on) and the end of a run."""

    VIF = EventKind.VIF.value
    TRAP = EventKind.TRAP.value
    IRQ = EventKind.IRQ.value
    PT = EventKind.PT.value
    DESC = EventKind.DESC.value
    HAL = EventKind.HAL.value
    SYSCALL = EventKind.SYSCALL.value


class PointKind(str, enum.Enum):
    BREAK = "breakpoint"
    WATCH = "watchpoint"
    CATCH = "catch"


_WATCH_WORDS = {WatchKind.WRITE: "write", WatchKind.READ: "read", WatchKind.ACCESS: "access"}


@dataclass(frozen=True)
class CatchSpec:
    """Which events an event breakpoint stops on."""

    kind: CatchKind
    vector: int | None = None
    name: str | None = None

    def matches(self, event: Event) -> bool:
        if event.kind.value != self.kind.value:
            return False
        if self.kind is CatchKind.VIF and event.fields.get("cause") == "debugger":
            return False       # the user's own 'set vif' is no guest event
        syscall = self.kind is CatchKind.SYSCALL
        if self.vector is not None:
            return event.fields.get("nr" if syscall else "vector") == self.vector
        if self.name is not None:
            key = "op" if self.kind is CatchKind.PT else "name" if syscall else "channel"
            return event.fields.get(key) == self.name
        return True

    @property
    def event_kind(self) -> EventKind:
        return EventKind(self.kind.value)

    def __str__(self) -> str:
        arg = self.vector if self.vector is not None else self.name
        return self.kind.value if arg is None else f"{self.kind.value} {arg}"


@dataclass
class Point:
    number: int
    kind: PointKind
    address: int = 0                 # breakpoint / watchpoint virtual address
    length: int = 0                  # watchpoint
    watch: WatchKind | None = None
    catch: CatchSpec | None = None
    handle: Handle | None = None     # the machine's handle of a breakpoint or watchpoint
    hits: int = 0

    def what(self, label: str = "") -> str:
        if self.kind is PointKind.BREAK:
            return f"{self.address:#010x}{label}"
        if self.kind is PointKind.WATCH:
            assert self.watch is not None
            return f"{_WATCH_WORDS[self.watch]} {self.address:#010x}{label} len {self.length}"
        return f"catch {self.catch}"

    @property
    def watch_key(self) -> tuple[int, int, WatchKind]:
        assert self.watch is not None
        return self.address, self.length, self.watch


class PointTable:
    def __init__(self) -> None:
        self.points: dict[int, Point] = {}
        self._next = 1

    def add(self, kind: PointKind, **details) -> Point:
        point = Point(self._next, kind, **details)
        self.points[point.number] = point
        self._next += 1
        return point

    def of(self, kind: PointKind) -> list[Point]:
        return [p for p in self.points.values() if p.kind is kind]

    def find_break(self, address: int) -> Point | None:
        return next((p for p in self.of(PointKind.BREAK) if p.address == address), None)

    def find_watch(self, key: tuple[int, int, WatchKind]) -> Point | None:
        return next((p for p in self.of(PointKind.WATCH) if p.watch_key == key), None)

    def holding(self, handles: Iterable[Handle]) -> Point | None:
        """The first of this table's points that holds one of ``handles`` (a stop's cause
        names every owner's handles: the others are not ours)."""
        wanted = set(handles)
        return next((p for p in self.points.values() if p.handle in wanted), None)
