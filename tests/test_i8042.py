"""i8042 with nothing plugged in: the commands Linux's i8042 and atkbd/psmouse probing send."""
from __future__ import annotations

import pytest

from dbgvm.board.i8042 import I8042

OBF, IBF, SYS, AUXDATA, TIMEOUT = 0x01, 0x02, 0x04, 0x20, 0x40


class Rig:
    def __init__(self) -> None:
        self.irqs: list[int] = []
        self.resets = 0
        self.kbc = I8042(self.irqs.append, self._reset)

    def _reset(self) -> None:
        self.resets += 1

    def status(self) -> int:
        return self.kbc.port_read(0x64, 1)

    def command(self, cmd: int, *params: int, replies: int = 0) -> list[int]:
        """As Linux's __i8042_command: wait for IBF clear, write, read replies on OBF."""
        assert not self.status() & IBF
        self.kbc.port_write(0x64, 1, cmd)
        for param in params:
            assert not self.status() & IBF
            self.kbc.port_write(0x60, 1, param)
        out = []
        for _ in range(replies):
            assert self.status() & OBF, "reply missing: Linux would time out"
            out.append(self.kbc.port_read(0x60, 1))
        return out


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_starts_empty_and_passes_self_test(rig):
    assert rig.status() & (OBF | IBF) == 0        # i8042_flush finds nothing: controller
    assert rig.status() & SYS                     # system flag: POST passed
    assert rig.command(0xAA, replies=1) == [0x55]
    assert rig.command(0xAB, replies=1) == [0x00]
    assert rig.command(0xA9, replies=1) == [0x00]


def test_ctr_reads_back_stably_and_is_written_with_0x60(rig):
    first, second = rig.command(0x20, replies=1), rig.command(0x20, replies=1)
    assert first == second
    rig.command(0x60, 0x74)
    assert rig.command(0x20, replies=1) == [0x74]
    assert rig.status() & OBF == 0


def test_aux_enable_disable_toggle_ctr_bit_5(rig):
    rig.command(0xA7)
    assert rig.command(0x20, replies=1)[0] & 0x20
    rig.command(0xA8)
    assert not rig.command(0x20, replies=1)[0] & 0x20
    rig.command(0xAD)
    assert rig.command(0x20, replies=1)[0] & 0x10
    rig.command(0xAE)
    assert not rig.command(0x20, replies=1)[0] & 0x10


def test_aux_loopback_echoes_as_aux_data_and_is_not_a_mux(rig):
    rig.command(0x60, 0x44)                       # interrupts off
    for value in (0xF0, 0x56):
        rig.kbc.port_write(0x64, 1, 0xD3)
        rig.kbc.port_write(0x60, 1, value)
        assert rig.status() & (OBF | AUXDATA) == OBF | AUXDATA
        assert rig.kbc.port_read(0x60, 1) == value
    rig.kbc.port_write(0x64, 1, 0xD3)
    rig.kbc.port_write(0x60, 1, 0xA4)
    assert rig.kbc.port_read(0x60, 1) == 0xA4     # echoed unchanged: no mux version
    assert rig.irqs == []


def test_aux_irq_delivery_test(rig):
    rig.command(0x60, 0x47)                       # KBDINT | AUXINT | SYS | XLATE
    rig.kbc.port_write(0x64, 1, 0xD3)
    rig.kbc.port_write(0x60, 1, 0xA5)
    assert rig.irqs == [12]
    assert rig.status() & AUXDATA
    assert rig.kbc.port_read(0x60, 1) == 0xA5


def test_bytes_for_absent_devices_time_out_with_fe(rig):
    rig.command(0x60, 0x47)
    rig.kbc.port_write(0x60, 1, 0xF2)             # atkbd: GET ID to the keyboard
    assert rig.irqs == [1]
    assert rig.status() & (OBF | TIMEOUT | AUXDATA) == OBF | TIMEOUT
    assert rig.kbc.port_read(0x60, 1) == 0xFE
    rig.kbc.port_write(0x64, 1, 0xD4)             # psmouse: GET ID to the mouse
    rig.kbc.port_write(0x60, 1, 0xF2)
    assert rig.irqs == [1, 12]
    assert rig.status() & (OBF | TIMEOUT | AUXDATA) == OBF | TIMEOUT | AUXDATA
    assert rig.kbc.port_read(0x60, 1) == 0xFE
    assert rig.status() & OBF == 0


def test_queued_bytes_each_interrupt(rig):
    rig.command(0x60, 0x45)
    rig.kbc.port_write(0x64, 1, 0xD2)             # write keyboard output buffer, twice
    rig.kbc.port_write(0x60, 1, 0x1C)
    rig.kbc.port_write(0x64, 1, 0xD2)
    rig.kbc.port_write(0x60, 1, 0x9C)
    assert rig.irqs == [1]
    assert rig.kbc.port_read(0x60, 1) == 0x1C
    assert rig.irqs == [1, 1]                     # the next byte is a new edge
    assert rig.kbc.port_read(0x60, 1) == 0x9C


def test_reset_line(rig):
    rig.command(0xFE)
    assert rig.resets == 1
    rig.command(0xFF)                             # pulses no line
    assert rig.resets == 1
    rig.command(0xD1, 0x02)                       # output port bit 0 low: reset
    assert rig.resets == 2
