"""Channel 0 of an 8254 programmable interval timer, in virtual time.

Modes 0 (interrupt on terminal count), 2 (rate generator) and 3 (square wave) with lobyte,
hibyte and lobyte/hibyte access and counter latching. The counter runs at 1.193182 MHz of
*virtual* time (clock.py), so when it fires is a function of the instruction count alone.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .clock import NS_PER_INSN

PIT_PORTS = range(0x40, 0x44)
PIT_HZ = 1_193_182
IRQ_LINE = 0


def ticks_at(now: int) -> int:
    """PIT input ticks elapsed at virtual time ``now`` (instruction periods)."""
    return now * NS_PER_INSN * PIT_HZ // 1_000_000_000


def time_of_tick(tick: int) -> int:
    """First virtual time (instruction periods) at which ``tick`` ticks have elapsed."""
    return -(-tick * 1_000_000_000 // (NS_PER_INSN * PIT_HZ))


@dataclass
class Channel:
    mode: int = 0
    access: int = 3          # 1 lobyte, 2 hibyte, 3 lobyte then hibyte
    reload: int = 0          # 0 means 65536
    start_tick: int | None = None
    fired: int = 0           # interrupts already raised since start (mode 0: 0 or 1)
    write_low_next: bool = True
    pending_low: int = 0
    latch: int | None = None
    read_low_next: bool = True

    @property
    def period(self) -> int:
        return self.reload or 0x10000


class Pit:
    def __init__(self, now: Callable[[], int], raise_irq: Callable[[int], None]) -> None:
        self._now = now
        self._raise_irq = raise_irq
        self.channel = Channel()

    # timer interface (clock.Timer)
    def _irq_tick(self, index: int) -> int:
        ch = self.channel
        return ch.start_tick + ch.period * (index + 1)

    def next_deadline(self) -> int | None:
        ch = self.channel
        if ch.start_tick is None or (ch.mode == 0 and ch.fired):
            return None
        return time_of_tick(self._irq_tick(ch.fired))

    def expire(self, now: int) -> None:
        ch = self.channel
        tick = ticks_at(now)
        while ch.start_tick is not None and not (ch.mode == 0 and ch.fired) \
                and self._irq_tick(ch.fired) <= tick:
            ch.fired += 1
            self._raise_irq(IRQ_LINE)

    # port interface
    def current_count(self) -> int:
        ch = self.channel
        if ch.start_tick is None:
            return ch.reload
        elapsed = ticks_at(self._now()) - ch.start_tick
        if ch.mode == 0:
            return (ch.period - elapsed) & 0xFFFF
        remaining = ch.period - elapsed % ch.period
        if ch.mode == 3:
            remaining = (remaining * 2) % ch.period or ch.period
        return remaining & 0xFFFF

    def port_write(self, port: int, size: int, value: int) -> None:
        value &= 0xFF
        ch = self.channel
        if port == 0x43:
            if value >> 6 != 0:
                return                                   # channels 1, 2 and read-back: ignored
            access = (value >> 4) & 3
            if access == 0:
                if ch.latch is None:
                    ch.latch = self.current_count()
                    ch.read_low_next = True
                return
            mode = (value >> 1) & 7
            ch.mode = mode - 4 if mode in (6, 7) else mode
            ch.access = access
            ch.write_low_next = True
            ch.start_tick = None
            ch.fired = 0
            return
        if port != 0x40:
            return
        if ch.access == 1:
            self._load(value)
        elif ch.access == 2:
            self._load(value << 8)
        elif ch.write_low_next:
            ch.pending_low = value
            ch.write_low_next = False
        else:
            ch.write_low_next = True
            self._load(ch.pending_low | value << 8)

    def _load(self, reload: int) -> None:
        ch = self.channel
        ch.reload = reload
        ch.start_tick = ticks_at(self._now())
        ch.fired = 0

    def port_read(self, port: int, size: int) -> int:
        ch = self.channel
        if port != 0x40:
            return 0xFF
        value = ch.latch if ch.latch is not None else self.current_count()
        if ch.access == 1:
            ch.latch = None
            return value & 0xFF
        if ch.access == 2:
            ch.latch = None
            return value >> 8
        if ch.read_low_next:
            ch.read_low_next = False
            return value & 0xFF
        ch.read_low_next = True
        ch.latch = None
        return value >> 8
