"""A Board's devices attached to a real Machine: guest port I/O reaches them, and the
i8042 reset and ACPI soft-off end the run as QEMU's -no-reboot does."""
from __future__ import annotations

import pytest

from dbgvm.board.board import Board, attach
from dbgvm.core.assembly import build_machine
from dbgvm.core.faults import StopReason
from dbgvm.core.loader import BootImage, Chunk
from dbgvm.core.machine import Machine
from dbgvm.core.port_bus import PortConflict

CODE = 0x100000
START = 1709251198


def machine_running(code: bytes, board: Board = Board()):
    machine = build_machine(ram_mb=4)
    machine.load(BootImage((Chunk(CODE, code, len(code)),), CODE, False, 0, 0, {}))
    out = bytearray()
    devices = attach(machine, board, console=out.extend, start_time=START)
    return machine, devices, out


def test_uart_output_reaches_the_console():
    # mov dx,0x3f8 ; mov al,'O' ; out dx,al ; mov al,'K' ; out dx,al ; hlt
    code = b"\x66\xba\xf8\x03\xb0O\xee\xb0K\xee\xf4"
    machine, _, out = machine_running(code)
    machine.run(100)
    assert bytes(out) == b"OK"


def test_i8042_reset_ends_the_run():
    code = b"\xb0\xfe\xe6\x64\xf4"                # mov al,0xfe ; out 0x64,al ; hlt
    machine, _, _ = machine_running(code)
    stop = machine.run(100)
    assert (stop.reason, stop.message, stop.exit_status) == \
        (StopReason.POWEROFF, "guest reset", 0)


def test_acpi_soft_off_ends_the_run():
    # mov dx,0x604 ; mov ax,0x3401 (SLP_EN | SLP_TYP 5 | SCI_EN) ; out dx,ax ; hlt
    code = b"\x66\xba\x04\x06\x66\xb8\x01\x34\x66\xef\xf4"
    machine, _, _ = machine_running(code)
    stop = machine.run(100)
    assert (stop.reason, stop.message, stop.exit_status) == \
        (StopReason.POWEROFF, "guest powered off", 0)


def test_rtc_and_port_61_are_reachable():
    # mov al,9 ; out 0x70,al ; in al,0x71 ; mov bl,al ; mov al,3 ; out 0x61,al ;
    # in al,0x61 ; hlt
    code = b"\xb0\x09\xe6\x70\xe4\x71\x88\xc3\xb0\x03\xe6\x61\xe4\x61\xf4"
    machine, _, _ = machine_running(code)
    machine.run(100)
    regs = machine.registers()
    assert regs.ebx & 0xFF == 0x24                # year 2024 in BCD
    assert regs.eax & 0x03 == 0x03                # gate 2 and speaker enable read back


def test_board_without_devices_leaves_ports_unclaimed_and_tables_out():
    machine, devices, _ = machine_running(b"\xf4", Board(False, False, False, False))
    assert devices.uart is None and devices.acpi_tables == []
    assert machine.ports.read(0x3F8, 1) is None
    assert machine.ports.read(0x71, 1) is None
    assert not {"uart", "rtc", "i8042", "acpi"} & machine.snapshot_store().parts.keys()


def test_attach_twice_is_a_port_conflict():
    machine, _, _ = machine_running(b"\xf4")
    with pytest.raises(PortConflict):
        attach(machine, Board(), console=lambda data: None, start_time=0)


def test_uart_input_goes_back_in_time_with_a_snapshot():
    machine, devices, _ = machine_running(b"\xf4")
    uart = devices.uart
    uart.port_write(0x3FC, 1, 0x0B)               # DTR, RTS, OUT2
    store = machine.snapshot_store()
    store.take(machine.icount, machine.clock.now())
    uart.feed(b"late")
    assert uart.has_unread_input
    store.restore(0)
    assert not uart.has_unread_input
    assert uart.port_read(0x3FC, 1) == 0x0B


def test_acpi_tables_can_be_written_into_guest_ram():
    machine, devices, _ = machine_running(b"\xf4")
    for addr, data in devices.acpi_tables:
        machine.write_physical(addr, data)
    assert machine.read_physical(0xF0000, 8) == b"RSD PTR "
