"""Who may use IN/OUT: the virtual CPL against the virtual IOPL, then the TSS's I/O bitmap.

At real CPL 3 Unicorn never faults IN/OUT (they always reach the port hooks), so the VMM
makes the check the processor would make (SDM vol. 1, 19.5): code at a CPL above IOPL may use
a port only when every bit for its bytes in the I/O permission bitmap of the current TSS is
clear; a bitmap that is absent or beyond the TSS limit grants nothing. Refused accesses fault
with #GP(0).
"""
from __future__ import annotations

import struct
from collections.abc import Callable

from .faults import GuestFault, GuestStop
from .vcpu import VirtualCpu

IOMAP_BASE_OFFSET = 0x66       # the 32-bit TSS's I/O map base address field

ReadLinear = Callable[[int, int], bytes]


def io_allowed(vcpu: VirtualCpu, read_linear: ReadLinear, port: int, size: int) -> bool:
    if vcpu.cpl <= vcpu.iopl:
        return True
    tr = vcpu.tr
    if tr.selector & 0xFFFC == 0 or tr.limit < IOMAP_BASE_OFFSET + 1:
        return False
    try:
        # the processor reads the two bitmap bytes holding the port's bits (an access can
        # straddle a byte), and both must lie within the TSS limit
        offset = struct.unpack("<H", read_linear(tr.base + IOMAP_BASE_OFFSET, 2))[0] + port // 8
        if offset + 1 > tr.limit:
            return False
        bits = struct.unpack("<H", read_linear(tr.base + offset, 2))[0]
    except (GuestFault, GuestStop):
        return False               # the bitmap is not readable: nothing is granted
    return not (bits >> (port % 8)) & ((1 << size) - 1)
