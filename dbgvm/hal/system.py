"""Channel 0: power the VM off with an exit status."""
from __future__ import annotations

import struct
from collections.abc import Callable

from .abi import Channel, Status, SystemOp
from .device import Deliver, Reply


class SystemDevice:
    channel = Channel.SYSTEM
    ops = SystemOp
    rx_capacity = 0

    def __init__(self, power_off: Callable[[int, str], None]) -> None:
        self._power_off = power_off

    def min_length(self, op: int) -> int:
        return 4

    def submit(self, op: int, payload: bytes) -> Reply:
        status, = struct.unpack_from("<I", payload)
        status &= 0xFF
        self._power_off(status, f"guest powered off (HAL system POWEROFF), status {status}")
        return Reply(Status.OK, info=f"poweroff status={status}")

    def describe(self, op: int, payload: bytes) -> str:
        return ""

    def attach(self, deliver: Deliver) -> None:
        pass

    def rx_posted(self) -> None:
        pass
