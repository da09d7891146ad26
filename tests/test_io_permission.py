"""IN/OUT at a CPL above IOPL consult the TSS's I/O permission bitmap (SDM vol. 1, 19.5)."""
from __future__ import annotations

import struct

from dbgvm.core.io_permission import io_allowed
from dbgvm.core.vcpu import VirtualCpu

TSS = 0x5000


def _cpu_and_memory(iomap_base: int, bitmap: bytes, limit: int):
    vcpu = VirtualCpu(cpl=3, iopl=0)
    vcpu.tr.selector, vcpu.tr.base, vcpu.tr.limit = 0x28, TSS, limit
    memory = bytearray(0x2000)
    struct.pack_into("<H", memory, 0x66, iomap_base)
    memory[iomap_base:iomap_base + len(bitmap)] = bitmap
    return vcpu, lambda addr, size: bytes(memory[addr - TSS:addr - TSS + size])


def test_bitmap_grants_only_ports_whose_bits_are_clear():
    # ports 0xE8..0xEF in byte 0x1D: bit 1 (0xE9) clear, the others set; a final 0xFF byte
    bitmap = b"\xff" * 0x1D + b"\xfd" + b"\xff" * 2
    vcpu, read = _cpu_and_memory(0x68, bitmap, 0x68 + len(bitmap) - 1)
    assert io_allowed(vcpu, read, 0xE9, 1)
    assert not io_allowed(vcpu, read, 0xE8, 1)
    assert not io_allowed(vcpu, read, 0xF4, 1)
    assert not io_allowed(vcpu, read, 0xE9, 2)       # 0xEA's bit is set


def test_no_bitmap_or_one_beyond_the_limit_grants_nothing():
    vcpu, read = _cpu_and_memory(0x68, b"\x00" * 0x40, 0x67)      # base past the limit
    assert not io_allowed(vcpu, read, 0x10, 1)
    # the two bitmap bytes a port needs must both lie within the limit
    vcpu, read = _cpu_and_memory(0x68, b"\x00" * 0x40, 0x68 + 2)
    assert io_allowed(vcpu, read, 0x08, 1)            # bytes 0x69, 0x6A
    assert not io_allowed(vcpu, read, 0x10, 1)        # bytes 0x6A, 0x6B: beyond


def test_cpl_at_or_below_iopl_needs_no_bitmap():
    vcpu, read = _cpu_and_memory(0x68, b"", 0x67)
    vcpu.iopl = 3
    assert io_allowed(vcpu, read, 0xF4, 1)
    vcpu.iopl, vcpu.cpl = 0, 0
    assert io_allowed(vcpu, read, 0xF4, 4)
