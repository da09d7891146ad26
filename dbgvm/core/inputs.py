"""The one door through which anything from outside the guest enters the machine.

Console keystrokes, packets from the host or another VM: none is a function of guest state, so
each is queued here and handed to its consumer only at a quantum boundary, stamped with the
exact instruction count and virtual time at which it took effect. Recording that list is all
record/replay needs to reproduce a run: a replay *schedules* each input at its recorded virtual
time (this queue is then also a clock timer, so the run stops at exactly that point, and an idle
CPU wakes there), and nothing from outside is posted.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Input:
    icount: int
    time: int            # virtual time (instruction periods, clock.py): icount plus idle
    channel: str
    payload: bytes


Consumer = Callable[[bytes], None]


@dataclass(frozen=True)
class InputQueueState:
    pending: tuple[tuple[str, bytes], ...]
    scheduled: tuple[tuple[int, str, bytes], ...]


class InputQueue:
    NOT_SAVED = frozenset({"consumers", "observers"})    # wiring: who takes and watches inputs

    def __init__(self) -> None:
        self._pending: deque[tuple[str, bytes]] = deque()
        self._scheduled: deque[tuple[int, str, bytes]] = deque()   # (time, channel, payload)
        self._consumers: dict[str, Consumer] = {}
        self._observers: list[Callable[[Input], None]] = []

    def save(self) -> InputQueueState:
        return InputQueueState(tuple(self._pending), tuple(self._scheduled))

    def restore(self, state: InputQueueState) -> None:
        self._pending = deque(state.pending)
        self._scheduled = deque(state.scheduled)

    def register(self, channel: str, consumer: Consumer) -> None:
        if channel in self._consumers:
            raise ValueError(f"input channel {channel!r} already has a consumer")
        self._consumers[channel] = consumer

    def observe(self, observer: Callable[[Input], None]) -> Callable[[], None]:
        """Be told of every input as it is applied (the record/replay hook)."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    def post(self, channel: str, payload: bytes) -> None:
        if channel not in self._consumers:
            raise ValueError(f"no consumer for input channel {channel!r}")
        self._pending.append((channel, bytes(payload)))

    def schedule(self, time: int, channel: str, payload: bytes) -> None:
        """Replay: the input takes effect when the virtual clock reaches ``time``."""
        if channel not in self._consumers:
            raise ValueError(f"no consumer for input channel {channel!r}")
        if self._scheduled and time < self._scheduled[-1][0]:
            raise ValueError("scheduled inputs must come in time order")
        self._scheduled.append((time, channel, bytes(payload)))

    def pending(self) -> bool:
        return bool(self._pending)

    def apply(self, icount: int, time: int | None = None) -> None:
        """Hand every queued input to its consumer, at ``icount`` / virtual ``time`` (the
        instruction count when the machine never idled)."""
        while self._pending:
            channel, payload = self._pending.popleft()
            applied = Input(icount, icount if time is None else time, channel, payload)
            for observer in self._observers:
                observer(applied)
            self._consumers[channel](payload)

    # -- the clock's Timer protocol (scheduled inputs) -----------------------------------
    def next_deadline(self) -> int | None:
        return self._scheduled[0][0] if self._scheduled else None

    def expire(self, now: int) -> None:
        while self._scheduled and self._scheduled[0][0] <= now:
            _, channel, payload = self._scheduled.popleft()
            self._pending.append((channel, payload))
