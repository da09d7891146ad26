"""ACPI tables (checksums, RSDP discovery, pointers, \\_S5_) and the PM1/PM timer registers."""
from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from dbgvm.board.acpi import AcpiPm, acpi_tables, pkg_length

SECOND = 100_000_000           # instruction periods


def memory() -> bytearray:
    """The first MiB of guest RAM with the tables in it."""
    ram = bytearray(1 << 20)
    for addr, data in acpi_tables():
        ram[addr:addr + len(data)] = data
    return ram


def find_rsdp(ram: bytearray) -> int:
    """Linux's acpi_find_root_pointer over the BIOS area: signature on a 16-byte boundary
    and a valid checksum over the 20 ACPI 1.0 bytes."""
    for addr in range(0xE0000, 0x100000, 16):
        if ram[addr:addr + 8] == b"RSD PTR " and sum(ram[addr:addr + 20]) & 0xFF == 0:
            return addr
    raise AssertionError("no RSDP")


def table_at(ram: bytearray, addr: int) -> bytes:
    length = struct.unpack_from("<I", ram, addr + 4)[0]
    return bytes(ram[addr:addr + length])


def walk(ram: bytearray) -> dict[bytes, bytes]:
    rsdp = find_rsdp(ram)
    assert ram[rsdp + 15] == 0                    # revision 0: ACPI 1.0, RSDT only
    rsdt = table_at(ram, struct.unpack_from("<I", ram, rsdp + 16)[0])
    tables = {b"RSDT": rsdt}
    for (entry,) in struct.iter_unpack("<I", rsdt[36:]):
        table = table_at(ram, entry)
        tables[table[:4]] = table
    fadt = tables[b"FACP"]
    facs, dsdt = struct.unpack_from("<II", fadt, 36)
    tables[b"FACS"] = table_at(ram, facs)
    tables[b"DSDT"] = table_at(ram, dsdt)
    assert facs % 64 == 0                         # the FACS must be 64-byte aligned
    return tables


def test_every_checksummed_table_sums_to_zero():
    tables = walk(memory())
    assert set(tables) == {b"RSDT", b"FACP", b"FACS", b"DSDT"}
    for signature, table in tables.items():
        if signature != b"FACS":                  # the FACS has no checksum field
            assert sum(table) & 0xFF == 0, signature
    for _, data in acpi_tables():
        if data[:8] == b"RSD PTR ":
            assert len(data) == 20 and sum(data) & 0xFF == 0


def test_fadt_fields():
    fadt = walk(memory())[b"FACP"]
    assert len(fadt) == 116 and fadt[8] == 1     # ACPI 1.0 FADT
    sci, smi_cmd = struct.unpack_from("<HI", fadt, 46)
    assert (sci, smi_cmd) == (9, 0)
    pm1a_evt, _, pm1a_cnt, _, _, pm_tmr = struct.unpack_from("<6I", fadt, 56)
    assert (pm1a_evt, pm1a_cnt, pm_tmr) == (0x600, 0x604, 0x608)
    assert tuple(fadt[88:92]) == (4, 2, 0, 4)     # PM1_EVT_LEN, PM1_CNT_LEN, PM2, PM_TMR_LEN
    assert fadt[108] == 0x32                      # century register


def test_dsdt_names_s5_package():
    dsdt = walk(memory())[b"DSDT"]
    aml = dsdt[36:]
    at = aml.index(b"_S5_")
    assert aml[at - 2:at] == b"\x08\\"            # NameOp, root
    assert aml[at + 4] == 0x12                    # PackageOp
    length = aml[at + 5]                          # one-byte PkgLength (< 0x40)
    package = aml[at + 5:at + 5 + length]
    assert package[1] == 4                        # NumElements
    assert package[2:] == b"\x0a\x05\x0a\x05\x00\x00"   # 5, 5, Zero, Zero
    assert at + 5 + length == len(aml)            # nothing trails the package


@pytest.mark.skipif(shutil.which("iasl") is None, reason="iasl (acpica-tools) not installed")
def test_iasl_disassembles_the_dsdt(tmp_path):
    dsdt = walk(memory())[b"DSDT"]
    (tmp_path / "dsdt.dat").write_bytes(dsdt)
    subprocess.run(["iasl", "-d", "dsdt.dat"], cwd=tmp_path, check=True, capture_output=True)
    text = (tmp_path / "dsdt.dsl").read_text()
    assert "Name (\\_S5, Package (0x04)" in text
    body = text[text.index("Package (0x04)"):]
    assert [line.strip().rstrip(",") for line in body.splitlines()[2:6]] == \
        ["0x05", "0x05", "Zero", "Zero"]


def test_pkg_length_encoding_per_spec():
    assert pkg_length(0) == b"\x01"
    assert pkg_length(0x3E) == b"\x3f"            # 63 in one byte
    assert pkg_length(0x3F) == b"\x41\x04"        # 65 = 0x41: lead 0x40|1, then 0x04
    assert pkg_length(4660 - 3) == b"\x84\x23\x01"   # 0x1234 needs two extra bytes


def make_pm():
    now = [0]
    offs = []
    pm = AcpiPm(lambda: now[0], lambda: offs.append(True))
    return pm, now, offs


def test_pm1_control_soft_off():
    pm, _, offs = make_pm()
    assert pm.port_read(0x604, 2) & 1 == 1        # SCI_EN: always in ACPI mode
    pm.port_write(0x604, 2, 5 << 10 | 1)          # ACPICA's write 1: SLP_TYP alone
    assert offs == []
    assert pm.port_read(0x604, 2) == 5 << 10 | 1
    pm.port_write(0x604, 2, 3 << 10 | 1 << 13)    # SLP_EN with a sleep type not offered
    assert offs == []
    pm.port_write(0x604, 2, 5 << 10 | 1 << 13 | 1)     # write 2: SLP_TYP S5 + SLP_EN
    assert offs == [True]
    assert pm.port_read(0x604, 2) & 1 << 13 == 0  # SLP_EN reads as 0


def test_pm1_status_and_enable():
    pm, _, _ = make_pm()
    pm.port_write(0x600, 2, 0xFFFF)               # ACPICA clears all status bits
    assert pm.port_read(0x600, 2) == 0
    pm.port_write(0x602, 2, 0x0121)
    assert pm.port_read(0x602, 2) == 0x0121
    assert pm.port_read(0x600, 4) == 0x0121 << 16
    assert pm.port_read(0x603, 1) == 0x01


def test_pm_timer_runs_at_3_579545_mhz_in_24_bits():
    pm, now, _ = make_pm()
    assert pm.port_read(0x608, 4) == 0
    now[0] = SECOND
    assert pm.port_read(0x608, 4) == 3_579_545
    now[0] = 5 * SECOND                           # 17_897_725 wraps at 2**24
    assert pm.port_read(0x608, 4) == 17_897_725 - (1 << 24)
