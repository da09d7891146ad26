"""An 8254 programmable interval timer (channels 0-2) and the PC's port 0x61, in virtual time.

Channel 0 drives IRQ 0. Channel 2 is gated and observed through port 0x61 (bit 0 gate, bit 1
speaker enable, bit 5 OUT2): Linux calibrates the TSC by programming channel 2 in mode 0 and
polling OUT2 or the counter's MSB. Channel 1 counts but drives nothing.

Modes 0 (interrupt on terminal count), 1 (one-shot), 2 (rate generator), 3 (square wave),
4 (software strobe) and 5 (hardware strobe), with lobyte, hibyte and lobyte/hibyte access and
counter latching. The counters run at 1.193182 MHz of *virtual* time (clock.py), so every value
the guest reads is a function of the instruction count alone.

Simplifications, none visible to Linux: modes 1 and 5 start counting when the count is written
(as QEMU does) as well as on a gate rising edge; the one-shot modes' single interrupt and the
periodic modes' interrupts come at whole periods after the load (the datasheet's extra load
cycle is not modelled); writing a new count restarts the channel at once; the read-back
command and BCD counting are ignored.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from .clock import NS_PER_INSN

PIT_PORTS = range(0x40, 0x44)
SYSTEM_CONTROL_PORT = 0x61
PIT_HZ = 1_193_182
IRQ_LINE = 0
ONE_SHOT_MODES = frozenset({0, 1, 4, 5})
REFRESH_TICKS = 18          # channel 1 as BIOSes program it: DRAM refresh every 15.1 us

# port 0x61 bits
GATE2 = 0x01
SPEAKER = 0x02
WRITABLE_61 = GATE2 | SPEAKER | 0x0C     # and the parity / I/O channel check enables
REFRESH = 0x10
OUT2 = 0x20


def ticks_at(now: int) -> int:
    """PIT input ticks elapsed at virtual time ``now`` (instruction periods)."""
    return now * NS_PER_INSN * PIT_HZ // 1_000_000_000


def time_of_tick(tick: int) -> int:
    """First virtual time (instruction periods) at which ``tick`` ticks have elapsed."""
    return -(-tick * 1_000_000_000 // (NS_PER_INSN * PIT_HZ))


@dataclass(frozen=True)
class ChannelState:
    """A saved Channel: the same fields."""

    mode: int
    access: int
    reload: int
    start_tick: int | None
    paused_tick: int | None
    fired: int
    gate: bool
    write_low_next: bool
    pending_low: int
    latch: int | None
    read_low_next: bool


@dataclass(frozen=True)
class PitState:
    channels: tuple[ChannelState, ...]
    system_control: int


@dataclass
class Channel:
    mode: int = 0
    access: int = 3          # 1 lobyte, 2 hibyte, 3 lobyte then hibyte
    reload: int = 0          # 0 means 65536
    start_tick: int | None = None   # when counting started; None: no count written yet
    paused_tick: int | None = None  # gate low in a mode it suspends: when counting stopped
    fired: int = 0           # channel 0: interrupts raised since start (one-shot modes: 0 or 1)
    gate: bool = True
    write_low_next: bool = True
    pending_low: int = 0
    latch: int | None = None
    read_low_next: bool = True

    def save(self) -> ChannelState:
        return ChannelState(**vars(self))   # a field missing from ChannelState fails here

    def restore(self, state: ChannelState) -> None:
        for f in fields(state):
            setattr(self, f.name, getattr(state, f.name))

    @property
    def period(self) -> int:
        return self.reload or 0x10000

    def elapsed(self, tick: int) -> int:
        """Ticks counted since the start (only valid when ``start_tick`` is set)."""
        assert self.start_tick is not None
        return (tick if self.paused_tick is None else self.paused_tick) - self.start_tick

    def count(self, tick: int) -> int:
        """The counting element's value at ``tick``."""
        if self.start_tick is None:
            return self.reload
        elapsed, period = self.elapsed(tick), self.period
        if self.mode in ONE_SHOT_MODES:
            return (period - elapsed) & 0xFFFF
        remaining = period - elapsed % period
        if self.mode == 3:                    # counts down by two, twice per period
            remaining = (remaining * 2) % period or period
        return remaining & 0xFFFF

    def out(self, tick: int) -> bool:
        """The OUT pin at ``tick``, per the 8254 datasheet's waveforms."""
        if self.start_tick is None:
            return self.mode != 0             # mode 0: low from the control word on
        elapsed, period = self.elapsed(tick), self.period
        if self.mode in (0, 1):
            return elapsed >= period          # low until terminal count, then high
        if self.mode in (4, 5):
            return elapsed != period          # one low pulse at terminal count
        if not self.gate:
            return True                       # modes 2 and 3: gate low forces OUT high
        if self.mode == 2:
            return elapsed % period != period - 1   # low for the tick the count is 1
        return elapsed % period < (period + 1) // 2     # mode 3: high for the larger half

    def set_gate(self, high: bool, tick: int) -> None:
        if high == self.gate:
            return
        self.gate = high
        if self.start_tick is None:
            return
        if high:
            if self.mode in (0, 4):           # resume where counting stopped
                assert self.paused_tick is not None
                self.start_tick += tick - self.paused_tick
            else:                             # a rising edge (re)triggers modes 1, 2, 3, 5
                self.start_tick = tick
                self.fired = 0
            self.paused_tick = None
        elif self.mode in (0, 2, 3, 4):       # gate low stops counting; modes 1, 5 ignore it
            self.paused_tick = tick


class Pit:
    # wiring, and the cache of next_deadline's last conversion (a function of the channel)
    NOT_SAVED = frozenset({"now", "raise_irq", "deadline_tick", "deadline"})

    def __init__(self, now: Callable[[], int], raise_irq: Callable[[int], None]) -> None:
        self._now = now
        self._raise_irq = raise_irq
        self.channels = [Channel(), Channel(), Channel(gate=False)]
        self.system_control = 0               # port 0x61 bits 0-3
        self._deadline_tick: int | None = None  # next_deadline's last conversion
        self._deadline = 0

    def save(self) -> PitState:
        return PitState(tuple(ch.save() for ch in self.channels), self.system_control)

    def restore(self, state: PitState) -> None:
        for channel, saved in zip(self.channels, state.channels, strict=True):
            channel.restore(saved)
        self.system_control = state.system_control
        self._deadline_tick = None

    @property
    def channel(self) -> Channel:
        """Channel 0, the one that interrupts."""
        return self.channels[0]

    # timer interface (clock.Timer): channel 0's interrupts
    def _irq_tick(self, index: int) -> int:
        ch = self.channel
        assert ch.start_tick is not None
        return ch.start_tick + ch.period * (index + 1)

    def _armed(self) -> bool:
        ch = self.channel
        return ch.start_tick is not None and not (ch.mode in ONE_SHOT_MODES and ch.fired)

    def next_deadline(self) -> int | None:
        ch = self.channel
        if ch.start_tick is None or ch.mode in ONE_SHOT_MODES and ch.fired:   # not _armed()
            return None
        tick = ch.start_tick + ch.period * (ch.fired + 1)      # _irq_tick(ch.fired)
        if tick != self._deadline_tick:     # asked on every time charge: convert once
            self._deadline_tick, self._deadline = tick, time_of_tick(tick)
        return self._deadline

    def expire(self, now: int) -> None:
        ch = self.channel
        tick = ticks_at(now)
        while self._armed() and self._irq_tick(ch.fired) <= tick:
            ch.fired += 1
            self._raise_irq(IRQ_LINE)

    # port interface
    def current_count(self, index: int = 0) -> int:
        return self.channels[index].count(ticks_at(self._now())) & 0xFFFF

    def port_write(self, port: int, size: int, value: int) -> None:
        value &= 0xFF
        if port == SYSTEM_CONTROL_PORT:
            self.system_control = value & WRITABLE_61
            self.channels[2].set_gate(bool(value & GATE2), ticks_at(self._now()))
        elif port == 0x43:
            self._control(value)
        elif port in PIT_PORTS:
            self._write_count(self.channels[port - 0x40], value)

    def _control(self, value: int) -> None:
        index = value >> 6
        if index == 3:
            return                                       # read-back: not modelled
        ch = self.channels[index]
        access = (value >> 4) & 3
        if access == 0:
            if ch.latch is None:
                ch.latch = self.current_count(index)
                ch.read_low_next = True
            return
        mode = (value >> 1) & 7
        ch.mode = mode - 4 if mode in (6, 7) else mode
        ch.access = access
        ch.write_low_next = True
        ch.start_tick = ch.paused_tick = None
        ch.fired = 0

    def _write_count(self, ch: Channel, value: int) -> None:
        if ch.access == 1:
            self._load(ch, value)
        elif ch.access == 2:
            self._load(ch, value << 8)
        elif ch.write_low_next:
            ch.pending_low = value
            ch.write_low_next = False
        else:
            ch.write_low_next = True
            self._load(ch, ch.pending_low | value << 8)

    def _load(self, ch: Channel, reload: int) -> None:
        tick = ticks_at(self._now())
        ch.reload = reload
        ch.start_tick = tick
        # gate low holds the count in the modes the gate suspends or re-triggers
        ch.paused_tick = tick if not ch.gate and ch.mode in (0, 2, 3, 4) else None
        ch.fired = 0

    def port_read(self, port: int, size: int) -> int:
        if port == SYSTEM_CONTROL_PORT:
            tick = ticks_at(self._now())
            refresh = REFRESH if (tick // REFRESH_TICKS) & 1 else 0
            out2 = OUT2 if self.channels[2].out(tick) else 0
            return self.system_control | refresh | out2
        if port not in range(0x40, 0x43):
            return 0xFF
        index = port - 0x40
        ch = self.channels[index]
        value = ch.latch if ch.latch is not None else self.current_count(index)
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
