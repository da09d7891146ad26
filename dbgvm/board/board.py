"""Which PC devices a machine has, and attaching them to it.

A ``Board`` is a description (recorded with a run: a replay must build the same machine);
``attach`` creates the devices, puts them on the machine's port bus, hands their state to the
machine's snapshots and wires their side effects: UART output to the console, the i8042 reset
line and ACPI soft-off to the end of the run (as QEMU's -no-reboot: exit status 0).

ACPI tables are not written here: ``attach`` returns them and the caller places them in guest
RAM when it loads the boot image (``Machine.write_physical``), after which nothing may
overwrite them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.machine import Machine
from .acpi import AcpiPm, acpi_tables
from .i8042 import DATA_PORT, STATUS_PORT, I8042
from .rtc import RTC_PORTS, CmosRtc
from .uart import Uart16550

POWER_OFF_MESSAGE = "guest powered off"
RESET_MESSAGE = "guest reset"


@dataclass(frozen=True)
class Board:
    """The legacy PC devices present (the 8259 pair, the 8254 and port 0x61 always are)."""

    uart: bool = True
    rtc: bool = True
    i8042: bool = True
    acpi: bool = True


@dataclass
class AttachedDevices:
    uart: Uart16550 | None = None
    rtc: CmosRtc | None = None
    i8042: I8042 | None = None
    acpi: AcpiPm | None = None
    acpi_tables: list[tuple[int, bytes]] = field(default_factory=list)


def attach(machine: Machine, board: Board, *, console: Callable[[bytes], None],
           start_time: int) -> AttachedDevices:
    """Create ``board``'s devices on ``machine``. ``console`` receives the UART's output;
    ``start_time`` (Unix seconds) is what the RTC reads at virtual time 0. Feed console
    input to ``devices.uart.feed`` (through ``machine.inputs``, so it is recorded)."""
    devices = AttachedDevices()
    ports = machine.ports

    def power_off() -> None:
        machine.power_off(0, POWER_OFF_MESSAGE)

    def reset() -> None:
        machine.power_off(0, RESET_MESSAGE)

    if board.uart:
        devices.uart = Uart16550(console, machine.raise_irq)
        ports.register(devices.uart.ports, devices.uart)
        machine.register_state("uart", devices.uart)
    if board.rtc:
        devices.rtc = CmosRtc(machine.clock.now, start_time, machine.ram_size)
        ports.register(RTC_PORTS, devices.rtc)
        machine.register_state("rtc", devices.rtc)
    if board.i8042:
        devices.i8042 = I8042(machine.raise_irq, reset)
        ports.register(range(DATA_PORT, DATA_PORT + 1), devices.i8042)
        ports.register(range(STATUS_PORT, STATUS_PORT + 1), devices.i8042)
        machine.register_state("i8042", devices.i8042)
    if board.acpi:
        devices.acpi = AcpiPm(machine.clock.now, power_off)
        for block in AcpiPm.PORTS:
            ports.register(block, devices.acpi)
        machine.register_state("acpi", devices.acpi)
        devices.acpi_tables = acpi_tables()
    return devices
