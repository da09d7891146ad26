"""What a HAL device is: a channel, its ops, and a synchronous submit.

Devices never see guest memory: the host (host.py) validates the packet and hands them a copy
of its payload; a device answers with a Reply the host writes back. Receiving is the host's
business too (posted buffers): a device only calls ``deliver``.
"""
from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .abi import Channel, Status


@dataclass(frozen=True)
class Reply:
    status: Status
    payload: bytes | None = None     # written after the header; `length` becomes its size
    info: str = ""                   # the decoded one-line summary for the hal event


# (channel, op, payload) -> how many payload bytes the oldest posted buffer took (at most its
# capacity), or None when no buffer is posted
Deliver = Callable[[Channel, int, bytes], "int | None"]


class Device(Protocol):
    channel: Channel
    ops: type[enum.IntEnum]
    rx_capacity: int                 # smallest posted-buffer capacity it accepts; 0: no rx

    def min_length(self, op: int) -> int:
        """Smallest payload ``op`` needs (the host refuses shorter packets with BADLEN)."""

    def submit(self, op: int, payload: bytes) -> Reply: ...

    def describe(self, op: int, payload: bytes) -> str:
        """One line for the `hal` event of a packet the host hands to the guest."""

    def attach(self, deliver: Deliver) -> None:
        """Called once by the host: how the device hands packets to the guest."""

    def rx_posted(self) -> None:
        """The guest posted a receive buffer (a device with waiting input can fill it now)."""


class SubmitOnly:
    """Base of a device the guest only submits to: it receives nothing, so it needs no
    posted buffers, no deliver callback and no rx summaries."""

    rx_capacity = 0

    def describe(self, op: int, payload: bytes) -> str:
        return ""

    def attach(self, deliver: Deliver) -> None:
        pass

    def rx_posted(self) -> None:
        pass
