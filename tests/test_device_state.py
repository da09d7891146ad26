"""Each device outside the core (the board's, the HAL's) saves a frozen state and restores it
in place, as the core's components do (tests/test_core_state.py).

Two checks per device: its state type names every attribute the device has, apart from the
ones it declares NOT_SAVED (so an attribute added later fails here until it is saved or
declared), and a round trip: save, change the device through its own interface, restore,
and the device behaves and saves as before. Then a whole VM with a board, a disk and the HAL
goes back in time with a snapshot."""
from __future__ import annotations

import dataclasses
import struct

import pytest

from dbgvm.board.acpi import PM1_CNT_BLK, PM1_EVT_BLK, AcpiPm
from dbgvm.board.board import Board
from dbgvm.board.i8042 import DATA_PORT, STATUS_PORT, I8042
from dbgvm.board.rtc import CmosRtc
from dbgvm.board.uart import Uart16550
from dbgvm.core.assembly import build_machine
from dbgvm.core.hypercalls import HypercallArgs
from dbgvm.core.loader import load
from dbgvm.domains import DomainConfig, Domains
from dbgvm.guest import bundled_kernel
from dbgvm.hal.abi import Status
from dbgvm.hal.block import BlockDevice
from dbgvm.hal.console import ConsoleDevice
from dbgvm.hal.host import Hal, HalStats
from dbgvm.hal.net import NetDevice, Switch

UART = 0x3F8
RBR, IER, MCR, SCR = UART, UART + 1, UART + 4, UART + 7
RTC_INDEX, RTC_DATA = 0x70, 0x71


def assert_state_names_every_attribute(device: object, state: object) -> None:
    """A device keeping its registers in a ``registers`` dataclass saves each of its fields;
    any other attribute is saved under its own name or declared NOT_SAVED."""
    attributes = {name.lstrip("_") for name in vars(device)}
    not_saved = getattr(type(device), "NOT_SAVED", frozenset())
    assert not_saved <= attributes, "NOT_SAVED names an attribute that does not exist"
    saved = attributes - not_saved
    if "registers" in saved:
        saved = saved - {"registers"} | {f.name for f in dataclasses.fields(device.registers)}
    assert saved == {f.name for f in dataclasses.fields(state)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(state, dataclasses.fields(state)[0].name, None)


# -- the board's devices -------------------------------------------------------------------

def test_uart_round_trip():
    out, irqs = bytearray(), []
    uart = Uart16550(out.extend, irqs.append)
    uart.port_write(MCR, 1, 0x0B)                 # DTR, RTS, OUT2
    uart.port_write(IER, 1, 0x01)                 # receive-data interrupt
    uart.port_write(SCR, 1, 0x5A)
    uart.feed(b"abc")
    saved = uart.save()
    assert_state_names_every_attribute(uart, saved)
    assert uart.port_read(RBR, 1) == ord("a")
    uart.port_write(SCR, 1, 0)
    uart.port_write(MCR, 1, 0)
    uart.feed(b"later")
    uart.restore(saved)
    assert uart.save() == saved
    assert [uart.port_read(RBR, 1) for _ in range(3)] == list(b"abc")
    assert uart.port_read(SCR, 1) == 0x5A and uart.port_read(MCR, 1) == 0x0B
    assert (saved.rx_fifo, saved.host_input) == (b"a", b"bc")     # FIFOs off: RBR only


def test_uart_waiting_input_is_taken_once():
    uart = Uart16550(lambda data: None, lambda line: None)
    uart.feed(b"typed")                           # RTS low: nothing enters the FIFO
    assert uart.take_waiting_input() == b"typed"
    assert uart.take_waiting_input() == b"" and not uart.has_unread_input


def _rtc_read(rtc: CmosRtc, index: int) -> int:
    rtc.port_write(RTC_INDEX, 1, index)
    return rtc.port_read(RTC_DATA, 1)


def test_rtc_round_trip():
    now = [0]
    rtc = CmosRtc(lambda: now[0], 1709251198, 4 << 20)
    rtc.port_write(RTC_INDEX, 1, 0x40)
    rtc.port_write(RTC_DATA, 1, 0x77)             # CMOS RAM
    saved = rtc.save()
    assert_state_names_every_attribute(rtc, saved)
    seconds = rtc.seconds()
    rtc.port_write(RTC_INDEX, 1, 0x40)
    rtc.port_write(RTC_DATA, 1, 0x11)
    rtc.port_write(RTC_INDEX, 1, 0x09)
    rtc.port_write(RTC_DATA, 1, 0x30)             # the guest sets the year to 2030
    assert rtc.seconds() != seconds
    rtc.restore(saved)
    assert rtc.save() == saved
    assert rtc.seconds() == seconds and _rtc_read(rtc, 0x40) == 0x77
    assert _rtc_read(rtc, 0x09) == 0x24


def test_i8042_round_trip():
    irqs, resets = [], []
    kbc = I8042(irqs.append, lambda: resets.append(True))
    kbc.port_write(STATUS_PORT, 1, 0xAA)          # self-test: 0x55 waits in the output buffer
    kbc.port_write(STATUS_PORT, 1, 0x60)          # a configuration byte comes next
    saved = kbc.save()
    assert_state_names_every_attribute(kbc, saved)
    kbc.port_write(DATA_PORT, 1, 0x47)
    assert kbc.port_read(DATA_PORT, 1) == 0x55
    kbc.restore(saved)
    assert kbc.save() == saved
    assert kbc.port_read(STATUS_PORT, 1) & 0x01   # the byte is back in the buffer
    kbc.port_write(DATA_PORT, 1, 0x03)            # ... and the data byte still expected
    assert kbc.port_read(DATA_PORT, 1) == 0x55
    kbc.port_write(STATUS_PORT, 1, 0x20)
    assert kbc.port_read(DATA_PORT, 1) == 0x03 and not resets


def test_acpi_pm_round_trip():
    offs = []
    pm = AcpiPm(lambda: 0, lambda: offs.append(True))
    pm.port_write(PM1_EVT_BLK + 2, 2, 0x0120)
    saved = pm.save()
    assert_state_names_every_attribute(pm, saved)
    pm.port_write(PM1_EVT_BLK + 2, 2, 0)
    pm.port_write(PM1_CNT_BLK, 2, 0x0401)         # sleep type 1, not S5: no power-off
    pm.restore(saved)
    assert pm.save() == saved
    assert pm.port_read(PM1_EVT_BLK + 2, 2) == 0x0120 and pm.port_read(PM1_CNT_BLK, 2) == 1
    assert not offs


# -- the HAL's devices ---------------------------------------------------------------------

def _post(machine, hal: Hal, addr: int, channel: int, capacity: int) -> None:
    machine.write_physical(addr, struct.pack("<HHIIi", channel, 0, capacity, 0, 0))
    assert hal.handle(HypercallArgs(2, addr, 0, 0)).eax == Status.OK


def test_hal_and_console_round_trip():
    machine = build_machine(ram_mb=2)
    console = ConsoleDevice(lambda data: None)
    hal = Hal(machine, [console])
    _post(machine, hal, 0x2000, 1, 4)
    console.feed(b"ab")                           # fills the buffer: rx seq 1
    _post(machine, hal, 0x3000, 1, 4)
    console.feed(b"")
    hal_saved, console_saved = hal.save(), console.save()
    assert_state_names_every_attribute(hal, hal_saved)
    assert_state_names_every_attribute(hal.stats, hal_saved.stats)
    assert_state_names_every_attribute(console, console_saved)
    assert console_saved.eof and console_saved.eof_sent and console_saved.guest_reads
    console.feed(b"lost")
    hal.handle(HypercallArgs(0x77, 0, 0, 0))      # a refused call, counted
    _post(machine, hal, 0x4000, 1, 4)
    hal.restore(hal_saved)
    console.restore(console_saved)
    assert hal.save() == hal_saved and console.save() == console_saved
    assert console.waiting_input == 0 and hal.stats.refused == HalStats().refused
    _post(machine, hal, 0x2000, 1, 4)
    console.restore(dataclasses.replace(console_saved, input=b"cd"))
    console.feed(b"e")                            # into the restored posted buffer: seq 2
    # length 3, and seq 3: the delivery into 0x4000 after the save (seq 3) was undone
    assert struct.unpack_from("<HHIIi", machine.ram, 0x2000)[2:4] == (3, 3)


def test_net_round_trip():
    machine = build_machine(ram_mb=2)
    net = NetDevice(0, Switch(), lambda frame, sent_ns: None, lambda: 0)
    Hal(machine, [net])
    net.receive(b"\xff" * 60)                     # no buffer posted: dropped
    saved = net.save()
    assert_state_names_every_attribute(net, saved)
    net.receive(b"\xff" * 60)
    assert net.dropped["no-rx-buffer"] == 2
    net.restore(saved)
    assert net.save() == saved and net.dropped["no-rx-buffer"] == 1


def test_block_round_trip(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(512 * 8))
    disk = BlockDevice(str(path))

    def write(sector: int, fill: bytes) -> None:
        request = struct.pack("<II", sector, 1) + fill * 512
        assert disk.submit(3, request).status is Status.OK

    def read(sector: int) -> bytes:
        return disk.submit(2, struct.pack("<II", sector, 1) + bytes(512)).payload[8:]
    write(1, b"a")
    saved = disk.save()
    assert_state_names_every_attribute(disk, saved)
    assert_state_names_every_attribute(disk._overlay, saved.overlay)
    write(1, b"b")
    write(2, b"c")
    disk.restore(saved)
    assert disk.save() == saved
    assert read(1) == b"a" * 512 and read(2) == bytes(512)
    disk.close()


# -- a whole VM ----------------------------------------------------------------------------

def test_a_snapshot_brings_a_vm_with_a_board_and_hal_devices_back(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(512 * 64))
    sink: list[bytes] = []
    domains = Domains(load(bundled_kernel(), 64 << 20), 1,
                      DomainConfig(64, disk=str(disk), board=Board(), rtc_start=1709251198),
                      lambda vm, data: sink.append(data))
    domain = domains.domains[0]
    machine = domain.machine
    devices = {"hal": domain.hal, "console": domain.console, "net": domain.net,
               "block": domain.block, "uart": domain.board.uart, "rtc": domain.board.rtc,
               "i8042": domain.board.i8042, "acpi": domain.board.acpi}
    store = machine.snapshot_store()
    assert devices.keys() <= store.parts.keys()
    machine.run(2_000_000)                        # booted: the shell waits for a line
    domains.console_input(0, b"disk write 3 written\n")   # applied at the next quantum
    store.take(machine.icount, machine.clock.now())
    saved = {name: device.save() for name, device in devices.items()}
    machine.run(3_000_000)
    ahead = {name: device.save() for name, device in devices.items()}
    assert ahead["hal"] != saved["hal"] and ahead["block"] != saved["block"]
    store.restore(0)
    assert {name: device.save() for name, device in devices.items()} == saved
    machine.run(3_000_000)
    again = {name: device.save() for name, device in devices.items()}
    # the same sectors written again, to a new slot: the one written first is a snapshot's
    assert again.pop("block") != ahead.pop("block") and again == ahead
    sector = domain.block.submit(2, struct.pack("<II", 3, 1) + bytes(512)).payload[8:]
    assert sector.startswith(b"written")
    assert "switch forwarded 0 (to an unknown MAC: 0)" in domains.hal_stats(0)
    domains.close()
