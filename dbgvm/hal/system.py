"""Channel 0: power the VM off with an exit status."""
from __future__ import annotations

import struct
from collections.abc import Callable

from .abi import Channel, Status, SystemOp
from .device import Reply, SubmitOnly


class SystemDevice(SubmitOnly):
    channel = Channel.SYSTEM
    ops = SystemOp

    def __init__(self, power_off: Callable[[int, str], None]) -> None:
        self._power_off = power_off

    def min_length(self, op: int) -> int:
        return 4

    def submit(self, op: int, payload: bytes) -> Reply:
        status, = struct.unpack_from("<I", payload)
        status &= 0xFF
        self._power_off(status, f"guest powered off (HAL system POWEROFF), status {status}")
        return Reply(Status.OK, info=f"poweroff status={status}")
