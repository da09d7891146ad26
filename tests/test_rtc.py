"""MC146818 CMOS RTC: the date at a virtual time, encodings, setting the clock, CMOS RAM."""
from __future__ import annotations

from dbgvm.board.rtc import CmosRtc

LEAP_EVE = 1709251198          # 2024-02-29 23:59:58 UTC
SECOND = 100_000_000           # instruction periods (10 ns each)


def make(start: int = LEAP_EVE, ram_size: int = 0):
    now = [0]
    return CmosRtc(lambda: now[0], start, ram_size), now


def read(rtc: CmosRtc, index: int) -> int:
    rtc.port_write(0x70, 1, index)
    return rtc.port_read(0x71, 1)


def write(rtc: CmosRtc, index: int, value: int) -> None:
    rtc.port_write(0x70, 1, index)
    rtc.port_write(0x71, 1, value)


def date(rtc: CmosRtc) -> list[int]:
    """seconds, minutes, hours, weekday, day, month, year, century"""
    return [read(rtc, i) for i in (0, 2, 4, 6, 7, 8, 9, 0x32)]


def test_bcd_date_follows_virtual_time_across_a_leap_day():
    rtc, now = make()
    assert date(rtc) == [0x58, 0x59, 0x23, 0x05, 0x29, 0x02, 0x24, 0x20]   # Thursday
    now[0] = 3 * SECOND
    assert date(rtc) == [0x01, 0x00, 0x00, 0x06, 0x01, 0x03, 0x24, 0x20]   # Fri 1 March
    now[0] = 3 * SECOND - 1                       # whole seconds only
    assert read(rtc, 0) == 0x00


def test_binary_and_12_hour_modes():
    rtc, now = make()
    now[0] = 3 * SECOND
    write(rtc, 0x0B, 0x06)                        # binary, 24-hour
    assert date(rtc) == [1, 0, 0, 6, 1, 3, 24, 20]
    write(rtc, 0x0B, 0x00)                        # BCD, 12-hour: 00:00 is 12 AM
    assert read(rtc, 4) == 0x12
    now[0] = (3 + 13 * 3600) * SECOND             # 13:00:01 is 1 PM
    assert read(rtc, 4) == 0x81


def test_status_registers_and_nmi_bit():
    rtc, _ = make()
    assert [read(rtc, i) for i in (0x0A, 0x0B, 0x0C, 0x0D)] == [0x26, 0x02, 0x00, 0x80]
    rtc.port_write(0x70, 1, 0x80 | 0x0D)          # NMI mask bit does not change the index
    assert rtc.port_read(0x71, 1) == 0x80
    write(rtc, 0x0A, 0xA6)                        # UIP is read-only
    assert read(rtc, 0x0A) == 0x26
    write(rtc, 0x0D, 0x00)                        # D is read-only
    assert read(rtc, 0x0D) == 0x80


def test_setting_the_time_with_the_set_bit_as_linux_does():
    rtc, now = make()
    write(rtc, 0x0B, 0x82)                        # SET: the registers hold still
    for index, value in ((0, 0x00), (2, 0x45), (4, 0x13), (7, 0x04), (8, 0x07),
                         (9, 0x31), (0x32, 0x20)):
        write(rtc, index, value)
    now[0] = 5 * SECOND
    assert read(rtc, 0) == 0x00                   # frozen while SET
    write(rtc, 0x0B, 0x02)                        # run from 2031-07-04 13:45:00 (Friday)
    assert date(rtc) == [0x00, 0x45, 0x13, 0x06, 0x04, 0x07, 0x31, 0x20]
    assert rtc.seconds() == 1940939100
    now[0] = 65 * SECOND
    assert read(rtc, 2) == 0x46


def test_single_field_write_moves_the_clock():
    rtc, _ = make(946684799)                      # 1999-12-31 23:59:59
    assert date(rtc)[6:] == [0x99, 0x19]
    write(rtc, 9, 0x98)                           # year 98
    assert rtc.seconds() == 946684799 - 365 * 86400


def test_cmos_ram_and_memory_size_bytes():
    rtc, _ = make(ram_size=64 << 20)
    # base 640 KiB; 63 MiB extended = 0xFC00 KiB; 48 MiB above 16 MiB = 0x300 x 64 KiB
    assert [read(rtc, i) for i in (0x15, 0x16, 0x17, 0x18, 0x30, 0x31, 0x34, 0x35)] == \
        [0x80, 0x02, 0x00, 0xFC, 0x00, 0xFC, 0x00, 0x03]
    write(rtc, 0x40, 0x5A)
    assert read(rtc, 0x40) == 0x5A
    assert rtc.port_read(0x70, 1) == 0xFF         # the index port is write-only
