"""The I/O port bus devices register on; the core itself knows no device."""
from __future__ import annotations

from typing import Protocol


class PortDevice(Protocol):
    def port_read(self, port: int, size: int) -> int: ...

    def port_write(self, port: int, size: int, value: int) -> None: ...


class PortConflict(ValueError):
    """Two devices claimed the same port."""


class PortBus:
    def __init__(self) -> None:
        self._devices: dict[int, PortDevice] = {}

    def register(self, ports: range, device: PortDevice) -> None:
        taken = [p for p in ports if p in self._devices]
        if taken:
            raise PortConflict(f"port {taken[0]:#x} is already claimed")
        for port in ports:
            self._devices[port] = device

    def read(self, port: int, size: int) -> int | None:
        """The device's value, or None for an unclaimed port (which reads all ones)."""
        device = self._devices.get(port)
        if device is None:
            return None
        return device.port_read(port, size) & ((1 << (8 * size)) - 1)

    def write(self, port: int, size: int, value: int) -> bool:
        """False when no device claims the port."""
        device = self._devices.get(port)
        if device is None:
            return False
        device.port_write(port, size, value)
        return True
