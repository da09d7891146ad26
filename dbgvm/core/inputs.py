"""The one door through which anything from outside the guest enters the machine.

Console keystrokes, packets from the host or another VM: none is a function of guest state, so
each is queued here and handed to its consumer only at a quantum boundary, stamped with the
exact instruction count at which it took effect. Recording that list (icount, channel, payload)
is all record/replay needs to reproduce a run.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Input:
    icount: int
    channel: str
    payload: bytes


Consumer = Callable[[bytes], None]


class InputQueue:
    def __init__(self) -> None:
        self._pending: deque[tuple[str, bytes]] = deque()
        self._consumers: dict[str, Consumer] = {}
        self._observers: list[Callable[[Input], None]] = []

    def register(self, channel: str, consumer: Consumer) -> None:
        if channel in self._consumers:
            raise ValueError(f"input channel {channel!r} already has a consumer")
        self._consumers[channel] = consumer

    def observe(self, observer: Callable[[Input], None]) -> None:
        """Be told of every input as it is applied (the record/replay hook)."""
        self._observers.append(observer)

    def post(self, channel: str, payload: bytes) -> None:
        if channel not in self._consumers:
            raise ValueError(f"no consumer for input channel {channel!r}")
        self._pending.append((channel, bytes(payload)))

    def pending(self) -> bool:
        return bool(self._pending)

    def apply(self, icount: int) -> None:
        """Hand every queued input to its consumer, at instruction count ``icount``."""
        while self._pending:
            channel, payload = self._pending.popleft()
            applied = Input(icount, channel, payload)
            for observer in self._observers:
                observer(applied)
            self._consumers[channel](payload)
