"""8254 one-shot modes and channel 2 seen through port 0x61, as Linux uses them."""
from __future__ import annotations

from dbgvm.core.pit import Pit, ticks_at, time_of_tick


def make_pit():
    now = [0]
    irqs: list[int] = []
    return Pit(lambda: now[0], irqs.append), now, irqs


def run_to(pit: Pit, now: list[int], tick: int) -> None:
    now[0] = time_of_tick(tick)
    deadline = pit.next_deadline()
    while deadline is not None and deadline <= now[0]:
        pit.expire(now[0])
        deadline = pit.next_deadline()


def test_mode4_fires_once_and_rearms_on_reload():
    pit, now, irqs = make_pit()
    pit.port_write(0x43, 1, 0x38)                 # Linux's pit_set_oneshot: ch0, lo/hi, mode 4
    pit.port_write(0x40, 1, 0xE8)
    pit.port_write(0x40, 1, 0x03)                 # 1000
    assert ticks_at(pit.next_deadline()) == 1000
    run_to(pit, now, 50_000)
    assert irqs == [0]
    assert pit.next_deadline() is None            # no second interrupt
    pit.port_write(0x40, 1, 0xF4)                 # reprogram 500: armed again
    pit.port_write(0x40, 1, 0x01)
    assert ticks_at(pit.next_deadline()) == 50_000 + 500
    run_to(pit, now, 100_000)
    assert irqs == [0, 0]


def test_mode1_and_mode5_are_one_shot_on_channel_0():
    for command in (0x32, 0x3A):
        pit, now, irqs = make_pit()
        pit.port_write(0x43, 1, command)
        pit.port_write(0x40, 1, 100)
        pit.port_write(0x40, 1, 0)
        run_to(pit, now, 10_000)
        assert irqs == [0]


def test_channel2_mode0_out_via_port_61_as_pit_calibrate_tsc_polls_it():
    pit, now, _ = make_pit()
    pit.port_write(0x61, 1, (pit.port_read(0x61, 1) & ~0x02) | 0x01)   # gate on, speaker off
    pit.port_write(0x43, 1, 0xB0)                 # ch2, lo/hi, mode 0
    latch = 59659                                 # Linux's CAL_LATCH: 50 ms
    pit.port_write(0x42, 1, latch & 0xFF)
    pit.port_write(0x42, 1, latch >> 8)
    assert pit.port_read(0x61, 1) & 0x20 == 0     # OUT2 low while counting
    now[0] = time_of_tick(latch) - 1
    assert pit.port_read(0x61, 1) & 0x20 == 0
    now[0] = time_of_tick(latch)
    assert pit.port_read(0x61, 1) & 0x20
    assert pit.port_read(0x61, 1) & 0x03 == 0x01  # gate and speaker bits read back
    # 50 ms of virtual time, as the datasheet rate says
    assert abs(now[0] * 10 - 50_000_000) < 1000


def test_channel2_msb_counts_down_for_quick_pit_calibrate():
    pit, now, _ = make_pit()
    pit.port_write(0x61, 1, 0x01)
    pit.port_write(0x43, 1, 0xB0)
    pit.port_write(0x42, 1, 0xFF)
    pit.port_write(0x42, 1, 0xFF)
    for i in range(4):
        now[0] = time_of_tick(256 * i + 10)
        pit.port_read(0x42, 1)                    # LSB, ignored
        assert pit.port_read(0x42, 1) == 0xFF - i  # MSB drops by one per 256 ticks


def test_gate_low_suspends_mode0_counting():
    pit, now, _ = make_pit()
    pit.port_write(0x61, 1, 0x01)
    pit.port_write(0x43, 1, 0xB0)
    pit.port_write(0x42, 1, 100)
    pit.port_write(0x42, 1, 0)
    now[0] = time_of_tick(40)
    pit.port_write(0x61, 1, 0x00)                 # gate off at count 60
    now[0] = time_of_tick(1000)
    assert pit.port_read(0x42, 1) == 60
    assert pit.port_read(0x42, 1) == 0
    assert pit.port_read(0x61, 1) & 0x20 == 0
    pit.port_write(0x61, 1, 0x01)                 # resumes: 60 more ticks to terminal count
    now[0] = time_of_tick(1059)
    assert pit.port_read(0x61, 1) & 0x20 == 0
    now[0] = time_of_tick(1060)
    assert pit.port_read(0x61, 1) & 0x20


def test_channel2_square_wave_duty_and_refresh_toggle():
    pit, now, _ = make_pit()
    pit.port_write(0x61, 1, 0x03)                 # gate and speaker: a beep
    pit.port_write(0x43, 1, 0xB6)                 # ch2, lo/hi, mode 3
    pit.port_write(0x42, 1, 5)                    # odd count: high 3 ticks, low 2
    pit.port_write(0x42, 1, 0)
    outs = []
    for tick in range(10):
        now[0] = time_of_tick(tick)
        outs.append(bool(pit.port_read(0x61, 1) & 0x20))
    assert outs == [True, True, True, False, False] * 2
    refresh = set()
    for tick in range(0, 72, 9):
        now[0] = time_of_tick(tick)
        refresh.add(pit.port_read(0x61, 1) & 0x10)
    assert refresh == {0, 0x10}                   # the refresh bit toggles with time


def test_channel2_does_not_interrupt():
    pit, now, irqs = make_pit()
    pit.port_write(0x61, 1, 0x01)
    pit.port_write(0x43, 1, 0xB4)                 # ch2 mode 2
    pit.port_write(0x42, 1, 10)
    pit.port_write(0x42, 1, 0)
    assert pit.next_deadline() is None
    run_to(pit, now, 1000)
    assert irqs == []
