"""Typed virtualization events and the bus they travel on.

Every step a hypervisor normally hides (a trap, an emulated instruction, a change of the virtual
interrupt flag, an injected interrupt, a port access, a descriptor validation, the end of the
run) is an :class:`Event` stamped with the exact number of guest instructions retired before it.
Front ends subscribe with a filter; nothing is formatted unless someone listens.
"""
from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


class EventKind(str, enum.Enum):
    TRAP = "trap"
    VIF = "vif"
    IRQ = "irq"
    IO = "io"
    DESC = "desc"
    PT = "pt"
    HAL = "hal"
    SYSCALL = "syscall"
    STOP = "stop"


@dataclass(frozen=True)
class Event:
    """One event. ``fields`` holds the kind's own fields (docs/events.md)."""

    icount: int
    kind: EventKind
    eip: int
    fields: dict[str, Any] = field(default_factory=dict)

    def to_json(self, **extra: Any) -> str:
        """One JSON object; ``extra`` adds context fields (the VM index with --vms). Exactly
        what json.dumps(..., separators=(",", ":")) gives, built directly: a recording
        serializes every event, and this is several times faster for flat fields."""
        parts = [f'{{"icount":{self.icount},"kind":"{self.kind.value}","eip":{self.eip}']
        for key, value in (*extra.items(), *self.fields.items()):
            if value is True or value is False:
                text = "true" if value else "false"
            elif type(value) is int:
                text = str(value)
            elif type(value) is str:
                text = _encode_string(value)
            else:
                text = json.dumps(value, separators=(",", ":"))
            parts.append(f'{_encode_string(key)}:{text}')
        return ",".join(parts) + "}"

    def describe(self) -> str:
        """One human-readable line, as ``--trace`` prints it."""
        if self.kind is EventKind.SYSCALL:
            return self._describe_syscall()
        parts = []
        for key, value in self.fields.items():
            if isinstance(value, int) and not isinstance(value, bool) and key not in (
                    "size", "len", "count", "line", "status", "index", "cached", "from", "to",
                    "seq", "vm"):
                parts.append(f"{key}={value:#x}")
            else:
                parts.append(f"{key}={value}")
        return f"[{self.icount:>10}] {self.kind.value:<5} eip={self.eip:#010x} " + " ".join(parts)


    def _describe_syscall(self) -> str:
        """strace's form: ``openat(0xffffff9c, 0x80c1234, ...)`` on entry, ``openat = 3`` on
        return, with the process's address space (its virtual CR3)."""
        f = self.fields
        name = f.get("name") or f"syscall_{f.get('nr')}"
        head = f"[{self.icount:>10}] syscall eip={self.eip:#010x} cr3={f.get('cr3', 0):#010x} "
        if f.get("op") == "entry":
            args = ", ".join("?" if a is None else f"{a:#x}" for a in f.get("args", ()))
            return f"{head}{name}({args})  [{f.get('via')}]"
        return f"{head}{name} = {f.get('result')}"


_encode_string = json.encoder.encode_basestring_ascii   # what json.dumps uses for str
Listener = Callable[[Event], None]


def parse_kinds(text: str) -> frozenset[EventKind]:
    """``trap,vif`` or ``all`` -> kinds; raises ValueError naming an unknown kind."""
    if text.strip() == "all":
        return frozenset(EventKind)
    kinds = set()
    for name in filter(None, (part.strip() for part in text.split(","))):
        try:
            kinds.add(EventKind(name))
        except ValueError:
            known = ", ".join(k.value for k in EventKind)
            raise ValueError(f"unknown event kind {name!r} (known: {known}, all)") from None
    return frozenset(kinds)


class EventBus:
    """Delivers events to the subscribers whose kinds match, in subscription order."""

    def __init__(self) -> None:
        self._subscribers: list[tuple[frozenset[EventKind], Listener]] = []
        self._wanted: frozenset[EventKind] = frozenset()
        self._muted = 0

    @contextmanager
    def muted(self) -> Iterator[None]:
        """No events while re-executing what listeners already saw (reverse execution)."""
        self._muted += 1
        try:
            yield
        finally:
            self._muted -= 1

    def subscribe(self, kinds: Iterable[EventKind], listener: Listener) -> Callable[[], None]:
        entry = (frozenset(kinds), listener)
        self._subscribers.append(entry)
        self._recompute()

        def unsubscribe() -> None:
            self._subscribers.remove(entry)
            self._recompute()
        return unsubscribe

    def _recompute(self) -> None:
        self._wanted = frozenset().union(*(k for k, _ in self._subscribers))

    def wants(self, kind: EventKind) -> bool:
        """Whether anyone listens for ``kind`` (lets hot paths skip building an event)."""
        return kind in self._wanted and not self._muted

    def publish(self, event: Event) -> None:
        if self._muted:
            return
        for kinds, listener in self._subscribers:
            if event.kind in kinds:
                listener(event)
