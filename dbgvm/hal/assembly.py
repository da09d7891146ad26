"""Attaching the HAL devices to a machine, as board.attach does for the PC devices.

``attach_hal`` creates a VM's HAL devices (system, console, and a block and net device when
asked for), puts them behind one ``Hal`` on the machine's hypercall bus, registers the network
input with the machine's input queue (so received frames are recorded and replayed), and hands
every device's state to the machine's snapshots. What joins VMs together (the switch, frames
on their way between VMs' clocks) stays with the caller, dbgvm/domains.py.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..core.clock import NS_PER_INSN
from ..core.machine import Machine
from .block import BlockDevice
from .console import ConsoleDevice
from .device import Device
from .host import Hal
from .net import NetDevice, Switch
from .system import SystemDevice

NET_INPUT = "net"           # the machine's input queue: frames this VM receives


@dataclass(frozen=True)
class NetPort:
    """Where a VM's network interface hangs: port ``index`` of ``switch``; ``deliver`` takes
    a frame sent to this VM and the virtual time (ns) it was sent at, towards the VM's input
    queue (``NET_INPUT``)."""

    index: int
    switch: Switch
    deliver: Callable[[bytes, int], None]


@dataclass(frozen=True)
class HalDisk:
    """The image behind the HAL block device; ``writable``: writes reach the file."""

    path: str
    writable: bool = False


@dataclass(frozen=True)
class AttachedHal:
    hal: Hal
    console: ConsoleDevice
    net: NetDevice | None
    block: BlockDevice | None


def attach_hal(machine: Machine, *, console: Callable[[bytes], None],
               claim_console_input: Callable[[], bytes] = lambda: b"",
               disk: HalDisk | None = None, net: NetPort | None = None) -> AttachedHal:
    """Create the HAL devices on ``machine``. ``console`` receives the guest's console
    output; ``claim_console_input`` takes input typed before the guest read the HAL console
    that waits elsewhere (ConsoleDevice). Console input is the caller's to route (it may go to
    a UART instead): feed it to ``attached.console.feed`` through ``machine.inputs``."""
    console_device = ConsoleDevice(console, claim_console_input)
    devices: list[Device] = [SystemDevice(machine.power_off), console_device]
    block = BlockDevice(disk.path, disk.writable) if disk is not None else None
    if block is not None:
        devices.append(block)
    net_device = None
    if net is not None:
        net_device = NetDevice(net.index, net.switch, net.deliver,
                               lambda: machine.clock.now() * NS_PER_INSN)
        devices.append(net_device)
        machine.inputs.register(NET_INPUT, net_device.receive)
    hal = Hal(machine, devices)
    # device state goes back in time with the machine (reverse execution)
    machine.register_state("hal", hal)
    machine.register_state("console", console_device)
    if net_device is not None:
        machine.register_state("net", net_device)
    if block is not None:
        machine.register_state("block", block)
    return AttachedHal(hal, console_device, net_device, block)
