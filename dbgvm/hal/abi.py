"""The HAL's binary interface, exactly as docs/hal.md specifies it (ABI version 1)."""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

MAGIC = 0x4C414844            # "DHAL"
VERSION = 1
IRQ_LINE = 5
MAX_PAYLOAD = 65536
MAX_POSTED = 32
HEADER = struct.Struct("<HHIIi")
HEADER_SIZE = HEADER.size    # 16
STATUS_OFFSET = 12


class Function(enum.IntEnum):
    PROBE = 0
    SUBMIT = 1
    POST_RX = 2


class Status(enum.IntEnum):
    OK = 0
    PENDING = 1
    BADADDR = -1
    BADLEN = -2
    NOCHAN = -3
    NOOP = -4
    IOERR = -5
    FORGED = -6
    FULL = -7
    BADCALL = -8


class Channel(enum.IntEnum):
    SYSTEM = 0
    CONSOLE = 1
    BLOCK = 2
    NET = 3


class SystemOp(enum.IntEnum):
    POWEROFF = 1


class ConsoleOp(enum.IntEnum):
    WRITE = 1
    INPUT = 2
    EOF = 3


class BlockOp(enum.IntEnum):
    INFO = 1
    READ = 2
    WRITE = 3
    FLUSH = 4


class NetOp(enum.IntEnum):
    INFO = 1
    SEND = 2
    FRAME = 3


def channel_name(channel: int) -> str:
    try:
        return Channel(channel).name.lower()
    except ValueError:
        return str(channel)


@dataclass(frozen=True)
class Header:
    channel: int
    op: int
    length: int
    seq: int
    status: int

    @classmethod
    def unpack(cls, raw: bytes) -> Header:
        return cls(*HEADER.unpack(raw))

    def pack(self) -> bytes:
        return HEADER.pack(self.channel, self.op, self.length, self.seq, self.status)
