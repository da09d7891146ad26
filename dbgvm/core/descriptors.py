"""x86 segment descriptors: decoding, validation after early Xen, and the installed copies.

The guest's GDT/LDT stay exactly as it wrote them. The VMM validates each descriptor
(rules in docs/design.md, section 6) and installs *copies* in its own real tables: one copy per
privilege view. In the ring-0 view every guest code/data segment of DPL 0 is compressed to DPL
3 (so the deprivileged kernel can load it at real CPL 3) and guest segments of DPL > 0 that are
code are installed not-present, so that any return from virtual ring 0 to ring-3 code traps and the
VMM can switch views. In the ring-3 view descriptors keep their own DPL, so hardware checks
them as it would for a ring-3 program. In both views limits are cut so that no segment reaches
the VMM hole.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, replace
from functools import cached_property

VMM_HOLE = 0xFFC00000
HOLE_LAST_BYTE = VMM_HOLE - 1


class SystemType(enum.IntEnum):
    TSS16_AVAILABLE = 1
    LDT = 2
    TSS16_BUSY = 3
    CALL_GATE16 = 4
    TASK_GATE = 5
    INTERRUPT_GATE16 = 6
    TRAP_GATE16 = 7
    TSS32_AVAILABLE = 9
    TSS32_BUSY = 11
    CALL_GATE32 = 12
    INTERRUPT_GATE32 = 14
    TRAP_GATE32 = 15


@dataclass(frozen=True)
class Descriptor:
    """One 8-byte descriptor, decoded. ``type`` is the 4-bit type field, ``s`` the S bit."""

    raw: int

    @classmethod
    def from_bytes(cls, data: bytes) -> "Descriptor":
        return cls(struct.unpack("<Q", data)[0])

    @property
    def low(self) -> int:
        return self.raw & 0xFFFFFFFF

    @property
    def high(self) -> int:
        return self.raw >> 32

    @cached_property       # on every decode (segment bases): computed once per descriptor
    def base(self) -> int:
        return ((self.low >> 16) | ((self.high & 0xFF) << 16) | (self.high & 0xFF000000))

    @property
    def raw_limit(self) -> int:
        return (self.low & 0xFFFF) | (self.high & 0xF0000)

    @property
    def granular(self) -> bool:
        return bool(self.high & (1 << 23))

    @property
    def limit(self) -> int:
        """Limit in bytes (the last valid offset)."""
        return (self.raw_limit << 12) | 0xFFF if self.granular else self.raw_limit

    @property
    def type(self) -> int:
        return (self.high >> 8) & 0xF

    @property
    def s(self) -> bool:
        return bool(self.high & (1 << 12))

    @property
    def dpl(self) -> int:
        return (self.high >> 13) & 3

    @property
    def present(self) -> bool:
        return bool(self.high & (1 << 15))

    @property
    def big(self) -> bool:
        return bool(self.high & (1 << 22))

    @property
    def is_code(self) -> bool:
        return self.s and bool(self.type & 8)

    @property
    def is_data(self) -> bool:
        return self.s and not self.type & 8

    @property
    def conforming(self) -> bool:
        return self.is_code and bool(self.type & 4)

    @property
    def readable(self) -> bool:
        return self.is_data or bool(self.type & 2)

    @property
    def writable(self) -> bool:
        return self.is_data and bool(self.type & 2)

    @property
    def expand_down(self) -> bool:
        return self.is_data and bool(self.type & 4)

    @property
    def system_type(self) -> SystemType | None:
        if self.s:
            return None
        try:
            return SystemType(self.type)
        except ValueError:
            return None

    # gate fields
    @property
    def gate_selector(self) -> int:
        return self.low >> 16

    @property
    def gate_offset(self) -> int:
        return (self.low & 0xFFFF) | (self.high & 0xFFFF0000)

    def with_dpl(self, dpl: int) -> "Descriptor":
        return replace(self, raw=(self.raw & ~(3 << 45)) | (dpl << 45))

    def with_present(self, present: bool) -> "Descriptor":
        bit = 1 << 47
        return replace(self, raw=(self.raw | bit) if present else (self.raw & ~bit))

    def with_limit(self, limit_bytes: int) -> "Descriptor":
        """Same descriptor with the limit set (granularity chosen to express it exactly or less)."""
        if limit_bytes <= 0xFFFFF:
            field, gran = limit_bytes, 0
        else:
            field, gran = (limit_bytes + 1 >> 12) - 1 if (limit_bytes & 0xFFF) != 0xFFF else \
                limit_bytes >> 12, 1
        raw = self.raw & ~(0xFFFF | (0xF << 48) | (1 << 55))
        raw |= (field & 0xFFFF) | ((field >> 16) & 0xF) << 48 | gran << 55
        return replace(self, raw=raw)

    def with_busy(self, busy: bool) -> "Descriptor":
        bit = 1 << 41
        return replace(self, raw=(self.raw | bit) if busy else (self.raw & ~bit))

    def pack(self) -> bytes:
        return struct.pack("<Q", self.raw)


NULL = Descriptor(0)


class Table(enum.Enum):
    GDT = "gdt"
    LDT = "ldt"
    IDT = "idt"


def check(desc: Descriptor, table: Table) -> str | None:
    """Why the guest may not have this descriptor in ``table``, or None when it is accepted.

    After early Xen's check_descriptor, adapted to ring-3 deprivileging (docs/design.md). The
    base of an LDT or TSS descriptor is a *linear* address, read through the guest's paging
    (Linux keeps its TSS in the cpu_entry_area near 0xFF000000): any range below the VMM
    hole is accepted, whatever the size of guest RAM.
    """
    if not desc.present:
        return None
    if desc.s:
        if desc.base > HOLE_LAST_BYTE:
            return f"segment base {desc.base:#x} lies in the monitor hole"
        return None
    kind = desc.system_type
    if kind is None:
        return f"reserved system descriptor type {desc.type}"
    if kind in (SystemType.CALL_GATE32, SystemType.CALL_GATE16):
        # refused where the guest can see why (a desc event), rather than accepted and then
        # faulting without a reason when used
        return f"{kind.name.lower()}: far transfers through call gates are not emulated"
    if table is Table.LDT:
        return f"{kind.name.lower()} descriptor not allowed in an LDT"
    if kind in (SystemType.INTERRUPT_GATE32, SystemType.INTERRUPT_GATE16, SystemType.TRAP_GATE32,
                SystemType.TRAP_GATE16, SystemType.TASK_GATE):
        return f"{kind.name.lower()} not allowed in the GDT"
    if desc.base + desc.limit > HOLE_LAST_BYTE:
        return f"{kind.name.lower()} at {desc.base:#x}+{desc.limit:#x} reaches the monitor hole"
    return None


def truncated(desc: Descriptor) -> Descriptor:
    """The copy's limit cut so that base+limit never reaches the VMM hole."""
    if desc.expand_down:
        return desc  # valid offsets are above the limit; the base check keeps them below 4 GiB
    last = min(desc.base + desc.limit, HOLE_LAST_BYTE)
    return desc if last == desc.base + desc.limit else desc.with_limit(last - desc.base)


def installed_copy(desc: Descriptor, ring0_view: bool) -> Descriptor:
    """What the VMM puts in its real table for an accepted guest descriptor."""
    if not desc.s or not desc.present:
        # System descriptors are never used natively: loading them into a segment register
        # must fault, which an all-zero entry does.
        return NULL if not desc.s else desc
    copy = truncated(desc)
    if not ring0_view:
        return copy
    if desc.is_code and desc.dpl > 0:
        return copy.with_present(False)  # returning to virtual ring 3 must trap
    return copy.with_dpl(3)
