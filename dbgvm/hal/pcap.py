"""Frames as a classic pcap file (link type Ethernet), readable by tshark and Wireshark.
Timestamps are the virtual time of the sending VM, so a replayed run writes the same file."""
from __future__ import annotations

import struct
from typing import BinaryIO

MAGIC = 0xA1B2C3D4             # microsecond timestamps
LINKTYPE_ETHERNET = 1
SNAPLEN = 65535
GLOBAL_HEADER = struct.Struct("<IHHiIII")
RECORD_HEADER = struct.Struct("<IIII")


class PcapWriter:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        out.write(GLOBAL_HEADER.pack(MAGIC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))
        out.flush()

    def write(self, time_ns: int, frame: bytes) -> None:
        seconds, micros = divmod(time_ns // 1000, 1_000_000)
        self._out.write(RECORD_HEADER.pack(seconds, micros, len(frame), len(frame)) + frame)
        self._out.flush()

    def close(self) -> None:
        self._out.close()
