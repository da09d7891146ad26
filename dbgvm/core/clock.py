"""Virtual time, derived from the retired-instruction count so that runs are deterministic.

The virtual CPU retires one instruction every :data:`NS_PER_INSN` nanoseconds (100 MIPS). HLT
with the virtual IF set does not spin: it idles virtual time forward to the next timer deadline.
A trapped time read (RDTSC, RDMSR of the TSC) is charged :data:`TIME_READ_CHARGE` periods: on
hardware it takes tens of cycles, and a ``udelay`` loop spins on it, so charging one period
would make a virtual millisecond cost ~100,000 traps. The charge depends on the instruction
stream alone, so runs stay deterministic. A port access (IN/OUT) is charged
:data:`PORT_IO_CHARGE`: an ISA bus cycle takes about a microsecond (port 0x80, Linux's I/O
delay, exists for exactly that), and drivers that poll a port for a time (Linux's check of the
ACPI PM timer spins 30 ms on port 0x61) would otherwise spin 100 times longer in wall time.
Time is ``icount + idle + charged`` periods.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

NS_PER_INSN = 10
TIME_READ_CHARGE = 200       # instruction periods (2 us) per trapped time read
PORT_IO_CHARGE = 100         # instruction periods (1 us) per IN/OUT


class Timer(Protocol):
    def next_deadline(self) -> int | None:
        """Virtual time (instruction periods) of the next expiry, or None when disarmed."""

    def expire(self, now: int) -> None:
        """Fire everything due at or before ``now``."""


def _none_retired() -> int:
    """The instruction count of a clock no run loop drives yet."""
    return 0


@dataclass(frozen=True)
class ClockState:
    idle: int
    charged: int


class VirtualClock:
    NOT_SAVED = frozenset({"icount", "timers"})     # wiring, fixed when the machine is built

    def __init__(self) -> None:
        self._icount: Callable[[], int] = _none_retired
        self.idle = 0
        self.charged = 0
        self._timers: list[Timer] = []

    def count_instructions_of(self, icount: Callable[[], int]) -> None:
        """Count the instructions ``icount`` reports as retired (the machine's run loop).
        Connected once the machine exists: the clock is built before it, as are the devices
        that read the time."""
        self._icount = icount

    def save(self) -> ClockState:
        return ClockState(self.idle, self.charged)

    def restore(self, state: ClockState) -> None:
        self.idle, self.charged = state.idle, state.charged

    def now(self) -> int:
        """Current virtual time in instruction periods."""
        return self._icount() + self.idle + self.charged

    def charge(self, periods: int) -> None:
        """Advance virtual time by ``periods`` for work the CPU did in no instructions (a
        trapped time read)."""
        self.charged += periods

    def add_timer(self, timer: Timer) -> None:
        self._timers.append(timer)

    def next_deadline(self) -> int | None:
        # on every time charge (each RDTSC and port access): a plain loop
        best = None
        for timer in self._timers:
            deadline = timer.next_deadline()
            if deadline is not None and (best is None or deadline < best):
                best = deadline
        return best

    def expire(self) -> None:
        now = self.now()
        for timer in self._timers:
            deadline = timer.next_deadline()
            if deadline is not None and deadline <= now:
                timer.expire(now)

    def idle_until(self, deadline: int) -> None:
        self.idle += max(0, deadline - self.now())
