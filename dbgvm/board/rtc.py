"""An MC146818 CMOS real-time clock and its RAM (ports 0x70 index, 0x71 data).

The time of day is the start time given at construction (Unix seconds, UTC: recorded with a
run so a replay sees the same dates) plus the *virtual* time elapsed (clock.py), so what the
guest reads depends on the instruction count alone. The guest may set the clock: the change is
kept as an offset from that time base.

Registers A-D read as a battery-backed, running clock: A holds the 32.768 kHz divider (0x26)
with UIP never set (an update is instantaneous here), B defaults to 24-hour BCD (0x02; the
DM bit selects binary, the 24/12 bit 12-hour mode), C reads 0 and D reads "valid RAM and time"
(0x80). No interrupts are generated (periodic, alarm and update-ended): the enable bits in B
are stored only, and IRQ 8 is never raised (Linux then keeps time with the PIT and TSC).
"""
from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.clock import NS_PER_INSN

RTC_PORTS = range(0x70, 0x72)
CMOS_SIZE = 128

SECONDS, MINUTES, HOURS, WEEKDAY, DAY, MONTH, YEAR = 0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
CENTURY = 0x32                          # the register the FADT names
TIME_REGISTERS = frozenset({SECONDS, MINUTES, HOURS, WEEKDAY, DAY, MONTH, YEAR, CENTURY})

REG_A_DEFAULT = 0x26                    # 32.768 kHz time base, 1.024 kHz rate select
REG_B_24H, REG_B_BINARY, REG_B_SET = 0x02, 0x04, 0x80
REG_D_VRT = 0x80
HOUR_PM = 0x80


def _bcd(value: int) -> int:
    return (value // 10) << 4 | value % 10


def _from_bcd(value: int) -> int:
    return (value >> 4) * 10 + (value & 0x0F)


def memory_size_bytes(ram_size: int) -> dict[int, int]:
    """The CMOS memory-size fields as QEMU's PC BIOS setup writes them: base memory (KiB),
    extended memory above 1 MiB (KiB, at most 0xFFFF, twice) and memory above 16 MiB in
    64 KiB units."""
    extended = min(max(ram_size - (1 << 20), 0) >> 10, 0xFFFF)
    above_16m = min(max(ram_size - (16 << 20), 0) >> 16, 0xFFFF)
    fields = {0x15: 640, 0x17: extended, 0x30: extended, 0x34: above_16m}
    out = {}
    for index, value in fields.items():
        out[index], out[index + 1] = value & 0xFF, value >> 8
    return out


@dataclass
class RtcRegisters:
    """The index register, the guest's clock setting and the CMOS RAM (registers A-D at
    their indexes), as the device works on them."""

    index: int = 0
    offset: int = 0                     # seconds the guest moved the clock by
    ram: bytearray = field(default_factory=lambda: bytearray(CMOS_SIZE))


@dataclass(frozen=True)
class RtcState:
    """The registers as a snapshot keeps them (the same fields)."""

    index: int
    offset: int
    ram: bytes


class CmosRtc:
    # wiring, and the time base recorded with a run: fixed when the board is built
    NOT_SAVED = frozenset({"now", "start_time"})

    def __init__(self, now: Callable[[], int], start_time: int, ram_size: int = 0) -> None:
        """``now``: virtual time in instruction periods; ``start_time``: Unix seconds at
        virtual time 0; ``ram_size``: fills the memory-size bytes (0: left zero)."""
        self._now = now
        self.start_time = start_time
        self.registers = RtcRegisters()
        ram = self.registers.ram
        ram[REG_A], ram[REG_B], ram[REG_D] = REG_A_DEFAULT, REG_B_24H, REG_D_VRT
        if ram_size:
            for index, value in memory_size_bytes(ram_size).items():
                ram[index] = value

    def save(self) -> RtcState:
        r = self.registers
        return RtcState(r.index, r.offset, bytes(r.ram))

    def restore(self, state: RtcState) -> None:
        self.registers = RtcRegisters(state.index, state.offset, bytearray(state.ram))

    def seconds(self) -> int:
        """The clock's current time, Unix seconds."""
        elapsed = self._now() * NS_PER_INSN // 1_000_000_000
        return self.start_time + elapsed + self.registers.offset

    # -- encoding --------------------------------------------------------------------------
    def _encode(self, value: int) -> int:
        return value if self.registers.ram[REG_B] & REG_B_BINARY else _bcd(value)

    def _decode(self, value: int) -> int:
        return value if self.registers.ram[REG_B] & REG_B_BINARY else _from_bcd(value)

    def _time_fields(self, seconds: int) -> dict[int, int]:
        t = time.gmtime(seconds)
        hour = t.tm_hour
        pm = 0
        if not self.registers.ram[REG_B] & REG_B_24H:
            pm = HOUR_PM if hour >= 12 else 0
            hour = hour % 12 or 12
        return {SECONDS: self._encode(t.tm_sec), MINUTES: self._encode(t.tm_min),
                HOURS: self._encode(hour) | pm,
                WEEKDAY: self._encode((t.tm_wday + 1) % 7 + 1),     # Sunday is 1
                DAY: self._encode(t.tm_mday), MONTH: self._encode(t.tm_mon),
                YEAR: self._encode(t.tm_year % 100), CENTURY: self._encode(t.tm_year // 100)}

    def _set_time(self, raw: dict[int, int]) -> None:
        """Set the clock from register values (as the guest encodes them)."""
        value = {k: self._decode(v) for k, v in raw.items() if k != HOURS}
        hour = self._decode(raw[HOURS] & ~HOUR_PM)
        if not self.registers.ram[REG_B] & REG_B_24H:
            hour = hour % 12 + (12 if raw[HOURS] & HOUR_PM else 0)
        year = value[CENTURY] * 100 + value[YEAR]
        try:
            target = calendar.timegm((year, value[MONTH], value[DAY], hour, value[MINUTES],
                                      value[SECONDS]))
        except (ValueError, OverflowError):
            return                        # not a date: ignored
        self.registers.offset += target - self.seconds()

    def _write_b(self, value: int) -> None:
        """While SET (bit 7) is set the clock stops updating the time registers, which the
        guest then writes one by one; clearing SET starts the clock from them (how Linux's
        mc146818_set_time sets the time without passing through invalid dates)."""
        ram = self.registers.ram
        was_set = ram[REG_B] & REG_B_SET
        if value & REG_B_SET and not was_set:
            for index, field_value in self._time_fields(self.seconds()).items():
                ram[index] = field_value
        ram[REG_B] = value
        if was_set and not value & REG_B_SET:
            self._set_time({index: ram[index] for index in TIME_REGISTERS})

    # -- port interface --------------------------------------------------------------------
    def port_read(self, port: int, size: int) -> int:
        if port == RTC_PORTS.start:
            return 0xFF                   # the index register is write-only
        index = self.registers.index
        if index in TIME_REGISTERS and not self.registers.ram[REG_B] & REG_B_SET:
            return self._time_fields(self.seconds())[index]
        if index == REG_C:
            return 0                      # no interrupt flags: nothing ever interrupts
        return self.registers.ram[index]

    def port_write(self, port: int, size: int, value: int) -> None:
        value &= 0xFF
        if port == RTC_PORTS.start:
            self.registers.index = value & 0x7F        # bit 7 masks NMI: nothing to mask here
            return
        index = self.registers.index
        ram = self.registers.ram
        if index in TIME_REGISTERS and not ram[REG_B] & REG_B_SET:
            fields = self._time_fields(self.seconds())
            fields[index] = value
            self._set_time(fields)
        elif index == REG_B:
            self._write_b(value)
        elif index == REG_A:
            ram[REG_A] = value & 0x7F   # UIP is read-only
        elif index not in (REG_C, REG_D):          # C and D are read-only
            ram[index] = value
