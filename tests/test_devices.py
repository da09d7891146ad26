"""8259A PIC pair and 8254 PIT channel 0, against the datasheets' behaviour."""
from __future__ import annotations

from dbgvm.core.pic import Pic
from dbgvm.core.pit import PIT_HZ, Pit, ticks_at, time_of_tick


def initialised_pic(master_base=0x20, slave_base=0x28, auto_eoi=False) -> Pic:
    pic = Pic()
    icw4 = 0x03 if auto_eoi else 0x01
    for port, base, icw3 in ((0x20, master_base, 4), (0xA0, slave_base, 2)):
        pic.port_write(port, 1, 0x11)        # ICW1: edge, cascade, ICW4 needed
        pic.port_write(port + 1, 1, base)    # ICW2
        pic.port_write(port + 1, 1, icw3)    # ICW3
        pic.port_write(port + 1, 1, icw4)    # ICW4
    pic.port_write(0x21, 1, 0x00)
    pic.port_write(0xA1, 1, 0x00)
    return pic


def test_vectors_follow_icw2_and_masks_hold_requests():
    pic = initialised_pic()
    pic.port_write(0x21, 1, 0x01)            # mask IRQ0
    pic.raise_irq(0)
    assert not pic.pending()
    assert pic.port_read(0x20, 1) == 0x01    # OCW3 default: IRR
    pic.port_write(0x21, 1, 0x00)
    assert pic.acknowledge() == (0x20, 0)
    assert pic.port_read(0x21, 1) == 0x00    # IMR reads back


def test_priority_and_in_service_blocking():
    pic = initialised_pic()
    pic.raise_irq(3)
    pic.raise_irq(1)
    assert pic.acknowledge() == (0x21, 1)    # lower line, higher priority
    # IRQ 3 waits while IRQ 1 is in service
    assert pic.acknowledge() is None
    pic.port_write(0x20, 1, 0x0B)            # OCW3: read ISR
    assert pic.port_read(0x20, 1) == 0x02
    pic.raise_irq(0)                         # higher priority than the one in service
    assert pic.acknowledge() == (0x20, 0)
    pic.port_write(0x20, 1, 0x20)            # non-specific EOI ends IRQ 0 (highest in service)
    pic.port_write(0x20, 1, 0x61)            # specific EOI for IRQ 1
    assert pic.acknowledge() == (0x23, 3)


def test_slave_cascades_through_master_line_2():
    pic = initialised_pic()
    pic.raise_irq(12)
    assert pic.pending()
    assert pic.acknowledge() == (0x2C, 12)
    pic.port_write(0x20, 1, 0x0B)
    assert pic.port_read(0x20, 1) == 0x04    # master has line 2 in service
    pic.port_write(0xA0, 1, 0x0B)
    assert pic.port_read(0xA0, 1) == 0x10


def test_auto_eoi_leaves_nothing_in_service():
    pic = initialised_pic(auto_eoi=True)
    pic.raise_irq(0)
    assert pic.acknowledge() == (0x20, 0)
    pic.raise_irq(0)
    assert pic.acknowledge() == (0x20, 0)


def make_pit():
    now = [0]
    irqs: list[int] = []
    pit = Pit(lambda: now[0], irqs.append)
    return pit, now, irqs


def program(pit, mode: int, reload: int) -> None:
    pit.port_write(0x43, 1, 0x30 | (mode << 1))
    pit.port_write(0x40, 1, reload & 0xFF)
    pit.port_write(0x40, 1, reload >> 8)


def test_tick_conversion_round_trips():
    for tick in (0, 1, 11932, 10**7):
        assert ticks_at(time_of_tick(tick)) == tick
        assert ticks_at(time_of_tick(tick) - 1) < tick or tick == 0
    # one second of virtual time holds PIT_HZ ticks
    assert ticks_at(100_000_000) == PIT_HZ


def test_mode2_is_periodic():
    pit, now, irqs = make_pit()
    program(pit, 2, 1000)
    deadlines = []
    for _ in range(3):
        deadline = pit.next_deadline()
        deadlines.append(deadline)
        now[0] = deadline
        pit.expire(deadline)
    assert irqs == [0, 0, 0]
    assert [ticks_at(d) for d in deadlines] == [1000, 2000, 3000]


def test_mode0_fires_once():
    pit, now, irqs = make_pit()
    program(pit, 0, 500)
    deadline = pit.next_deadline()
    assert ticks_at(deadline) == 500
    now[0] = deadline * 10
    pit.expire(now[0])
    assert irqs == [0]
    assert pit.next_deadline() is None


def test_mode3_square_wave_interrupts_every_period():
    pit, now, irqs = make_pit()
    program(pit, 3, 2000)
    now[0] = time_of_tick(6000)
    pit.expire(now[0])
    assert irqs == [0, 0, 0]


def test_latched_count_reads_low_then_high():
    pit, now, irqs = make_pit()
    program(pit, 2, 0x1234)
    now[0] = time_of_tick(0x34)
    pit.port_write(0x43, 1, 0x00)            # latch channel 0
    now[0] = time_of_tick(0x100)             # the latch holds the old value
    low = pit.port_read(0x40, 1)
    high = pit.port_read(0x40, 1)
    assert (high << 8 | low) == 0x1234 - 0x34


def test_masked_lines():
    pic = initialised_pic()
    assert not pic.masked(0) and not pic.masked(12)
    pic.port_write(0x21, 1, 0x05)            # mask IRQ0 and the cascade
    assert pic.masked(0) and pic.masked(12) and not pic.masked(1)
    assert Pic().masked(0)                   # before initialisation every line is masked
