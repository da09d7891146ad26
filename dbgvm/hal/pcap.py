"""Frames as a classic pcap file (link type Ethernet), readable by tshark and Wireshark.
Timestamps are the virtual time of the sending VM, so a replayed run writes the same file.

The VMs run one after another through each time slice (dbgvm/domains.py), so frames are
sent in an order that is not their time order (VM 1 sends at t=0.2 ms after VM 0 sent at
t=0.7 ms of the same slice). Records are therefore held until ``release(t)`` says no frame
earlier than ``t`` can still be sent (every VM's clock has passed it), and written in time
order (ties in sending order): the file is in strict time order. ``close`` writes the rest."""
from __future__ import annotations

import heapq
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
        self._held: list[tuple[int, int, bytes]] = []     # (time_ns, sequence, frame)
        self._sequence = 0
        out.write(GLOBAL_HEADER.pack(MAGIC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))
        out.flush()

    def write(self, time_ns: int, frame: bytes) -> None:
        """A frame sent at virtual ``time_ns``: held until released."""
        heapq.heappush(self._held, (time_ns, self._sequence, bytes(frame)))
        self._sequence += 1

    def release(self, before_ns: int | None = None) -> None:
        """Write every held frame sent before ``before_ns`` (None: all), in time order."""
        wrote = False
        while self._held and (before_ns is None or self._held[0][0] < before_ns):
            time_ns, _, frame = heapq.heappop(self._held)
            seconds, micros = divmod(time_ns // 1000, 1_000_000)
            self._out.write(RECORD_HEADER.pack(seconds, micros, len(frame), len(frame)) +
                            frame)
            wrote = True
        if wrote:
            self._out.flush()

    def close(self) -> None:
        try:
            self.release()
        finally:
            self._out.close()
