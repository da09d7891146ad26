"""Minimal ACPI: the tables that let Linux power the machine off, and the PM1 registers.

Tables (ACPI 1.0 layouts, the simplest Linux 6.1 accepts): an RSDP, an RSDT naming one FADT
(revision 1), a FACS and a DSDT whose only object is ``\\_S5_``. They live in the BIOS area at
0xF0000 where Linux scans for the RSDP, a range every PC memory map (and the Multiboot map
loader.py writes) reserves, so they do not depend on the RAM size and Linux never reuses them.

The FADT: SMI_CMD is 0, so the system is always in ACPI mode (no hand-over); fixed power and
sleep buttons are absent (flags), so no fixed event is ever enabled; C2/C3 are unsupported
(latencies above the limits); there are no GPE blocks; SCI_INT is 9. PM1a event and control
blocks and the PM timer sit where QEMU's PIIX4 puts them (0x600, 0x604, 0x608).

The PM registers: PM1 status reads 0 (no event source exists: nothing ever sets a status bit,
so the SCI, IRQ 9, is never raised and Linux's SCI handler never runs), PM1 enable and control
read back what was written, SCI_EN reads 1, SLP_EN reads 0. Writing SLP_EN with SLP_TYP of S5
powers off; other sleep types are not offered by the DSDT and are ignored. The PM timer is a
24-bit counter at 3.579545 MHz of virtual time.
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..core.clock import NS_PER_INSN

ACPI_BASE = 0xF0000
RSDP_SCAN = range(0xE0000, 0x100000)    # where Linux looks for the RSDP (16-byte aligned)
SCI_IRQ = 9
PM1_EVT_BLK, PM1_CNT_BLK, PM_TMR_BLK = 0x600, 0x604, 0x608
PM1_EVT_LEN, PM1_CNT_LEN, PM_TMR_LEN = 4, 2, 4
PM_TIMER_HZ = 3_579_545
PM_TIMER_MASK = 0xFFFFFF                # 24 bits (FADT flag TMR_VAL_EXT clear)
S5_SLP_TYP = 5

PM1_CNT_SCI_EN = 0x0001
PM1_CNT_SLP_TYP = 0x1C00
PM1_CNT_SLP_EN = 0x2000

OEM_ID = b"DBGVM "
OEM_TABLE_ID = b"DBGVMPC "

# offsets of the tables from the base; the FACS must be 64-byte aligned
_RSDP, _RSDT, _FADT, _FACS, _DSDT = 0x00, 0x20, 0x60, 0x100, 0x140

# FADT flags: WBINVD works, C1 supported, no fixed power or sleep button, RTC wake not fixed
_FADT_FLAGS = 0x01 | 0x04 | 0x10 | 0x20 | 0x40
_P_LVL2_LAT, _P_LVL3_LAT = 101, 1001    # above 100 / 1000 us: C2 and C3 not supported


def checksum(data: bytes) -> int:
    """The byte that makes ``data`` (with a zero checksum byte) sum to 0 mod 256."""
    return -sum(data) & 0xFF


def _with_checksum(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] = checksum(out)
    return bytes(out)


def _table(signature: bytes, revision: int, body: bytes) -> bytes:
    """A system description table: the 36-byte header, then ``body``, checksummed."""
    header = struct.pack("<4sIBB6s8sI4sI", signature, 36 + len(body), revision, 0, OEM_ID,
                         OEM_TABLE_ID, 1, b"DBGV", 1)
    return _with_checksum(header + body, 9)


def pkg_length(body_length: int) -> bytes:
    """AML PkgLength (ACPI 6.5, 20.2.4) for a package whose contents after the PkgLength
    are ``body_length`` bytes: the encoded length counts the PkgLength bytes themselves."""
    if body_length + 1 < 0x40:
        return bytes([body_length + 1])
    for extra in (1, 2, 3):
        total = body_length + 1 + extra
        if total < 1 << (4 + 8 * extra):
            return bytes([extra << 6 | total & 0x0F]) + (total >> 4).to_bytes(extra, "little")
    raise ValueError(f"AML package of {body_length} bytes is too long")


def _aml_integer(value: int) -> bytes:
    if value == 0:
        return b"\x00"                                      # ZeroOp
    if value == 1:
        return b"\x01"                                      # OneOp
    if value <= 0xFF:
        return b"\x0A" + bytes([value])                     # BytePrefix
    raise ValueError("only byte constants are needed")


def s5_aml() -> bytes:
    """``Name (\\_S5_, Package () {5, 5, 0, 0})``: SLP_TYPa and SLP_TYPb for soft-off."""
    elements = b"".join(_aml_integer(v) for v in (S5_SLP_TYP, S5_SLP_TYP, 0, 0))
    contents = bytes([4]) + elements                        # NumElements, then elements
    package = b"\x12" + pkg_length(len(contents)) + contents        # PackageOp
    return b"\x08" + b"\\_S5_" + package                    # NameOp, root-relative name


def _fadt(facs: int, dsdt: int) -> bytes:
    body = struct.pack(
        "<IIBBHIBBBBIIIIIIIIBBBBBBBBHHHHBBBBBHBI",
        facs, dsdt, 0, 0, SCI_IRQ, 0, 0, 0, 0, 0,           # no SMI_CMD: always ACPI mode
        PM1_EVT_BLK, 0, PM1_CNT_BLK, 0, 0, PM_TMR_BLK, 0, 0,
        PM1_EVT_LEN, PM1_CNT_LEN, 0, PM_TMR_LEN, 0, 0, 0, 0,
        _P_LVL2_LAT, _P_LVL3_LAT, 0, 0, 0, 0, 0, 0, 0x32, 0, 0, _FADT_FLAGS)
    return _table(b"FACP", 1, body)


def _facs() -> bytes:
    """ACPI 1.0 FACS: no waking vector, no global lock; it has no checksum."""
    return struct.pack("<4sIIIII", b"FACS", 64, 0, 0, 0, 0).ljust(64, b"\x00")


def acpi_tables(base: int = ACPI_BASE) -> list[tuple[int, bytes]]:
    """Every table as (physical address, bytes), to be written into guest RAM before boot."""
    if base % 64 or base not in RSDP_SCAN:
        raise ValueError(f"ACPI tables at {base:#x}: must be 64-byte aligned in the BIOS area")
    fadt = _fadt(base + _FACS, base + _DSDT)
    rsdt = _table(b"RSDT", 1, struct.pack("<I", base + _FADT))
    rsdp = _with_checksum(struct.pack("<8sB6sBI", b"RSD PTR ", 0, OEM_ID, 0, base + _RSDT), 8)
    dsdt = _table(b"DSDT", 1, s5_aml())
    tables = [(base + _RSDP, rsdp), (base + _RSDT, rsdt), (base + _FADT, fadt),
              (base + _FACS, _facs()), (base + _DSDT, dsdt)]
    for (addr, data), (next_addr, _) in zip(tables, tables[1:]):
        assert addr + len(data) <= next_addr, "ACPI tables overlap"
    return tables


@dataclass
class PmRegisters:
    """The PM1a enable and control registers, as the device works on them (PM1 status is
    never set; the timer follows virtual time)."""

    pm1_enable: int = 0
    pm1_control: int = PM1_CNT_SCI_EN


@dataclass(frozen=True)
class PmState:
    """The registers as a snapshot keeps them (the same fields)."""

    pm1_enable: int
    pm1_control: int


class AcpiPm:
    """The PM1a event and control registers and the PM timer, on the port bus."""

    NOT_SAVED = frozenset({"now", "power_off"})     # wiring

    PORTS = (range(PM1_EVT_BLK, PM1_EVT_BLK + PM1_EVT_LEN),
             range(PM1_CNT_BLK, PM1_CNT_BLK + PM1_CNT_LEN),
             range(PM_TMR_BLK, PM_TMR_BLK + PM_TMR_LEN))

    def __init__(self, now: Callable[[], int], power_off: Callable[[], None]) -> None:
        """``now``: virtual time in instruction periods; ``power_off``: the guest entered
        S5."""
        self._now = now
        self._power_off = power_off
        self.registers = PmRegisters()

    def save(self) -> PmState:
        return PmState(**vars(self.registers))   # a field missing from PmState fails here

    def restore(self, state: PmState) -> None:
        self.registers = PmRegisters(**vars(state))

    def timer(self) -> int:
        """The PM timer's count at the current virtual time."""
        ns = self._now() * NS_PER_INSN
        return ns * PM_TIMER_HZ // 1_000_000_000 & PM_TIMER_MASK

    def _register(self, port: int) -> tuple[int, int]:
        """(value, its first port) of the 16- or 32-bit register holding ``port``."""
        if port >= PM_TMR_BLK:
            return self.timer(), PM_TMR_BLK
        if port >= PM1_CNT_BLK:
            return self.registers.pm1_control | PM1_CNT_SCI_EN, PM1_CNT_BLK
        if port >= PM1_EVT_BLK + 2:
            return self.registers.pm1_enable, PM1_EVT_BLK + 2
        return 0, PM1_EVT_BLK            # PM1 status: no event source, never set

    def port_read(self, port: int, size: int) -> int:
        value = 0
        for i in range(size):
            register, first = self._register(port + i)
            value |= (register >> 8 * (port + i - first) & 0xFF) << 8 * i
        return value

    def port_write(self, port: int, size: int, value: int) -> None:
        for i in range(size):
            self._write_byte(port + i, value >> 8 * i & 0xFF)

    def _write_byte(self, port: int, byte: int) -> None:
        s = self.registers
        if port in range(PM1_EVT_BLK + 2, PM1_EVT_BLK + 4):
            shift = 8 * (port - PM1_EVT_BLK - 2)
            s.pm1_enable = s.pm1_enable & ~(0xFF << shift) | byte << shift
        elif port in range(PM1_CNT_BLK, PM1_CNT_BLK + 2):
            shift = 8 * (port - PM1_CNT_BLK)
            control = s.pm1_control & ~(0xFF << shift) | byte << shift
            s.pm1_control = control & ~PM1_CNT_SLP_EN | PM1_CNT_SCI_EN
            if control & PM1_CNT_SLP_EN and \
                    (control & PM1_CNT_SLP_TYP) >> 10 == S5_SLP_TYP:
                self._power_off()
        # PM1 status is write-1-to-clear of bits that are never set; the timer is read-only
