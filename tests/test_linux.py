"""Booting Linux: the bzImage setup header, payload unpacking, the boot_params layout, the
initramfs, and choosing the kernel package to fetch."""
from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from dbgvm.core.descriptors import VMM_HOLE
from dbgvm.core.loader import LoadError
from dbgvm.linux import fetch as fetch_mod
from dbgvm.linux.boot import (BOOT_PARAMS_ADDR, CMDLINE_ADDR, is_linux_kernel, kernel_cmdline,
                              load_linux)
from dbgvm.linux.bzimage import parse_setup_header, unpack
from dbgvm.linux.initramfs import Entry, build_initramfs, write_cpio
from dbgvm.linux.modules import BuiltModules

LOAD = 0x1000000
PAGE_OFFSET = 0xC0000000


def tiny_vmlinux(code: bytes = b"\xf4" * 64, bss: int = 0x3000) -> bytes:
    """An ELF32 i386 'vmlinux': one segment linked at PAGE_OFFSET + 16 MiB, loaded at 16 MiB,
    entered at its physical address as the kernel's linker script sets it."""
    ehdr = struct.pack("<16sHHIIIIIHHHHHH", b"\x7fELF\x01\x01\x01" + bytes(9), 2, 3, 1, LOAD,
                       52, 0, 0, 52, 32, 1, 40, 0, 0)
    phdr = struct.pack("<8I", 1, 0x1000, PAGE_OFFSET + LOAD, LOAD, len(code),
                       len(code) + bss, 5, 0x1000)
    return (ehdr + phdr).ljust(0x1000, b"\0") + code


def compress(method: str, data: bytes) -> bytes:
    """The payload as the kernel's build makes it: compressed, the size appended (gzip's own
    trailer holds it)."""
    size = struct.pack("<I", len(data))
    if method == "gzip":
        return gzip.compress(data, mtime=0)
    if method == "xz":
        return lzma.compress(data, lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=[
            {"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2}]) + size
    if method == "lzma":
        return lzma.compress(data, lzma.FORMAT_ALONE) + size
    if method == "bzip2":
        return bz2.compress(data) + size
    if method == "zstd":
        zstandard = pytest.importorskip("zstandard")
        return zstandard.ZstdCompressor(write_content_size=False).compress(data) + size
    lz4_block = pytest.importorskip("lz4.block")
    block = lz4_block.compress(data, store_size=False)
    return b"\x02\x21\x4c\x18" + struct.pack("<I", len(block)) + block + size


def bzimage(payload: bytes, *, version: int = 0x020F, loadflags: int = 1,
            initrd_addr_max: int = 0x7FFFFFFF, init_size: int = 0x20000,
            setup_sects: int = 1) -> bytes:
    """A bzImage: a boot sector with the setup header, setup sectors, then 'protected-mode
    code' whose tail is the payload."""
    boot = bytearray(512 * ((setup_sects or 4) + 1))        # 0 means 4
    boot[0x1F1] = setup_sects
    struct.pack_into("<H", boot, 0x1FE, 0xAA55)
    struct.pack_into("<BB4sH", boot, 0x200, 0xEB, 0x6A, b"HdrS", version)
    struct.pack_into("<H", boot, 0x20E, 0x300 - 0x200)
    boot[0x300:0x320] = b"6.1.0-99-686 (test) #1 SMP".ljust(32, b"\0")
    boot[0x211] = loadflags
    code = b"\x90" * 0x40
    struct.pack_into("<I", boot, 0x1F4, (len(code) + len(payload) + 15) // 16)
    struct.pack_into("<I", boot, 0x214, 0x100000)
    struct.pack_into("<IIBBHI", boot, 0x22C, initrd_addr_max, 0x1000000, 1, 13, 0, 2047)
    struct.pack_into("<II", boot, 0x248, len(code), len(payload))
    struct.pack_into("<QI", boot, 0x258, LOAD, init_size)
    return bytes(boot) + code + payload


@pytest.fixture
def kernel(tmp_path):
    path = tmp_path / "vmlinuz"
    path.write_bytes(bzimage(compress("xz", tiny_vmlinux())))
    return path


def u32(data: bytes, offset: int) -> int:
    return struct.unpack_from("<I", data, offset)[0]


# -- the bzImage ----------------------------------------------------------------------------

def test_setup_header_fields():
    raw = bzimage(compress("xz", tiny_vmlinux()), setup_sects=0)
    header = parse_setup_header(raw, "k")
    assert header.version == 0x020F and header.setup_sects == 4      # 0 means 4
    assert header.protected_mode_offset == 5 * 512
    assert header.code32_start == 0x100000 and header.cmdline_size == 2047
    assert header.pref_address == LOAD and header.init_size == 0x20000
    assert header.relocatable and header.kernel_alignment == 0x1000000
    assert header.release == "6.1.0-99-686"
    assert header.raw[0] == 0 and len(header.raw) == 0x26C - 0x1F1


@pytest.mark.parametrize("method", ["xz", "gzip", "lzma", "bzip2", "zstd", "lz4"])
def test_payload_unpacks_to_the_vmlinux(method):
    elf = tiny_vmlinux(bytes(range(256)) * 64)
    raw = bzimage(compress(method, elf))
    assert unpack(raw, parse_setup_header(raw, "k"), "k") == (method, elf)


def test_xz_payload_uses_the_x86_filter():
    elf = tiny_vmlinux(b"\xe8\x00\x01\x00\x00" * 200)      # calls: what BCJ rewrites
    payload = compress("xz", elf)
    assert lzma.LZMADecompressor().decompress(payload) == elf    # the filter is undone


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:0x200] + b"XXXX" + raw[0x204:], "neither a bzImage"),
    (lambda raw: raw[:0x206] + b"\x07\x02" + raw[0x208:], "boot protocol 2.07 is too old"),
    (lambda raw: raw[:0x211] + b"\x00" + raw[0x212:], "zImage"),
    (lambda raw: raw[:-40], "payload at"),
    (lambda raw: raw[:-20] + bytes(16) + raw[-4:], "corrupt compressed payload"),
    (lambda raw: raw[:0x440] + b"\x89LZO" + raw[0x444:], "LZO"),
    (lambda raw: raw[:0x440] + b"ABCD" + raw[0x444:], "unknown payload"),
    (lambda raw: raw[:-4] + b"\x01\x00\x00\x00", "trailer says 1"),
])
def test_bad_bzimages_are_one_line_errors(tmp_path, damage, message):
    path = tmp_path / "bad"
    path.write_bytes(damage(bzimage(compress("xz", tiny_vmlinux()))))
    with pytest.raises(LoadError) as info:
        load_linux(path, 64 << 20)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_payload_that_is_not_an_elf(tmp_path):
    path = tmp_path / "k"
    path.write_bytes(bzimage(compress("gzip", b"not an elf at all")))
    with pytest.raises(LoadError, match="not an ELF vmlinux"):
        load_linux(path, 64 << 20)


# -- the boot layout --------------------------------------------------------------------------

def chunk_at(boot, addr):
    return next(c for c in boot.image.chunks if c.paddr == addr)


def test_vmlinux_loads_at_its_physical_address(kernel):
    boot = load_linux(kernel, 64 << 20, "console=ttyS0")
    image = boot.image
    assert image.entry == LOAD and not image.multiboot and image.symbols == {}
    assert dict(image.entry_registers) == {"esi": BOOT_PARAMS_ADDR, "ebx": 0, "ebp": 0,
                                           "edi": 0}
    segment = chunk_at(boot, LOAD)
    assert segment.data == b"\xf4" * 64 and segment.memsz == 64 + 0x3000
    assert boot.kind == "bzImage, xz vmlinux" and boot.release == "6.1.0-99-686"
    assert boot.kernel_range == (LOAD, LOAD + 0x20000)       # init_size is kept free
    assert "6.1.0-99-686" in boot.describe()


def test_boot_params(kernel):
    ram = 64 << 20
    boot = load_linux(kernel, ram, "console=ttyS0 quiet", b"\x55" * 5000)
    params = chunk_at(boot, BOOT_PARAMS_ADDR).data
    assert len(params) == 4096
    assert params[0x202:0x206] == b"HdrS" and params[0x1EF] == 0       # header; sentinel 0
    assert params[0x210] == 0xFF and params[0x211] & 1                  # loader, LOADED_HIGH
    assert u32(params, 0x228) == CMDLINE_ADDR and u32(params, 0x23C) == 0
    assert chunk_at(boot, CMDLINE_ADDR).data == b"console=ttyS0 quiet reservetop=4M\0"
    assert boot.cmdline == "console=ttyS0 quiet reservetop=4M"
    entries = [struct.unpack_from("<QQI", params, 0x2D0 + 20 * i) for i in range(params[0x1E8])]
    top = ram - (128 << 10)
    assert entries == [(0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xE0000, 0x20000, 2),
                       (0x100000, top - 0x100000, 1), (top, 128 << 10, 2)]
    image, size = u32(params, 0x218), u32(params, 0x21C)
    assert size == 5000 and image % 4096 == 0 and top - 4096 < image + size <= top
    assert chunk_at(boot, image).data == b"\x55" * 5000
    assert boot.initrd_range == (image, image + size)


def test_screen_info_stays_zero_so_no_vga_console_is_assumed(kernel):
    params = chunk_at(load_linux(kernel, 64 << 20), BOOT_PARAMS_ADDR).data
    assert params[:0x40] == bytes(0x40)


def test_initrd_respects_initrd_addr_max(tmp_path):
    path = tmp_path / "k"
    path.write_bytes(bzimage(compress("xz", tiny_vmlinux()), initrd_addr_max=0x1FFFFFF))
    boot = load_linux(path, 256 << 20, initrd=bytes(10000))
    start, end = boot.initrd_range
    assert end <= 0x2000000 and start == (0x2000000 - 10000) & ~0xFFF


def test_initrd_that_does_not_fit_above_the_kernel(kernel):
    with pytest.raises(LoadError, match=r"^rd\.img: an initrd of .* give the guest more RAM"):
        load_linux(kernel, 20 << 20, initrd=bytes(4 << 20), initrd_name="rd.img")


def test_kernel_that_does_not_fit_in_ram(kernel):
    with pytest.raises(LoadError, match=r"does not fit in guest RAM"):
        load_linux(kernel, 16 << 20)


def test_reservetop_matches_the_vmm_hole():
    assert kernel_cmdline("", False) == f"reservetop={((1 << 32) - VMM_HOLE) >> 20}M"
    assert kernel_cmdline("a reservetop=8M", False) == "a reservetop=8M"    # the user's wins
    assert kernel_cmdline("a", True) == "a reservetop=4M nokaslr"


def test_command_line_longer_than_the_kernel_takes(kernel):
    with pytest.raises(LoadError, match="longer than the kernel's 2047"):
        load_linux(kernel, 64 << 20, "x" * 2040)


def test_boot_decompressor_loads_the_protected_mode_code(kernel):
    raw = kernel.read_bytes()
    boot = load_linux(kernel, 64 << 20, "console=ttyS0", boot_decompressor=True)
    assert boot.image.entry == 0x100000
    assert chunk_at(boot, 0x100000).data == raw[1024:]
    assert boot.kernel_range == (0x100000, LOAD + 0x20000)
    assert boot.cmdline.endswith(" nokaslr")


def test_uncompressed_vmlinux_and_how_it_is_recognised(tmp_path, kernel):
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(tiny_vmlinux())
    assert is_linux_kernel(vmlinux) and is_linux_kernel(kernel)
    boot = load_linux(vmlinux, 64 << 20, initrd=b"x")
    assert boot.kind == "vmlinux" and boot.image.entry == LOAD
    with pytest.raises(LoadError, match="has no decompressor"):
        load_linux(vmlinux, 64 << 20, boot_decompressor=True)
    params = chunk_at(boot, BOOT_PARAMS_ADDR).data
    assert params[0x202:0x206] == b"HdrS" and u32(params, 0x238) == 2047
    multiboot = bytearray(tiny_vmlinux())
    multiboot[0x80:0x8C] = struct.pack("<III", 0x1BADB002, 0, (-0x1BADB002) & 0xFFFFFFFF)
    (tmp_path / "mb").write_bytes(multiboot)
    identity = bytearray(tiny_vmlinux())
    struct.pack_into("<I", identity, 52 + 8, LOAD)                    # p_vaddr == p_paddr
    (tmp_path / "flat").write_bytes(identity)
    (tmp_path / "text").write_text("hello")
    for other in ("mb", "flat", "text", "missing"):
        assert not is_linux_kernel(tmp_path / other)


# -- the initramfs ----------------------------------------------------------------------------

def read_cpio(data: bytes) -> list[tuple[int, str, int, int, tuple[int, int], bytes]]:
    """(ino, name, mode, mtime, rdev, data) of each newc member, the trailer included."""
    members, pos = [], 0
    while True:
        assert data[pos:pos + 6] == b"070701" and pos % 4 == 0
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        ino, mode, _, _, _, mtime, size, _, _, major, minor, namesize, _ = fields
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        assert data[name_start + namesize - 1] == 0
        body = name_start + namesize + (-(110 + namesize) % 4)
        members.append((ino, name, mode, mtime, (major, minor), data[body:body + size]))
        pos = body + size + (-size % 4)
        if name == "TRAILER!!!":
            assert pos == len(data)
            return members


def test_cpio_writer():
    archive = write_cpio([Entry("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
                          Entry("bin", stat.S_IFDIR | 0o755),
                          Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
                          Entry("init", stat.S_IFREG | 0o755, b"#!/bin/sh\n")])
    members = read_cpio(archive)
    assert [(m[0], m[1]) for m in members] == [(1, "bin"), (2, "bin/sh"), (3, "dev/console"),
                                               (4, "init"), (0, "TRAILER!!!")]
    assert members[1][2] == stat.S_IFLNK | 0o777 and members[1][5] == b"busybox"
    assert members[2][4] == (5, 1) and members[3][5] == b"#!/bin/sh\n"
    assert all(m[3] == 0 for m in members)


def test_initramfs_content_and_reproducibility(tmp_path):
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF fake busybox")
    first, second = build_initramfs(busybox), build_initramfs(busybox)
    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()
    assert first[4:8] == bytes(4)                                       # gzip mtime 0
    members = {m[1]: m for m in read_cpio(zlib.decompress(first, 31))}
    assert members["bin/busybox"][5] == busybox.read_bytes()
    assert members["bin/sh"][5] == b"busybox"
    assert members["init"][2] == stat.S_IFREG | 0o755
    assert members["init"][5].startswith(b"#!/bin/sh\n") and b"cttyhack" in members["init"][5]
    assert members["dev/console"][2] == stat.S_IFCHR | 0o600 and members["dev/console"][4] \
        == (5, 1)
    assert {"proc", "sys", "dev", "sbin", "usr/bin", "usr/sbin"} <= set(members)


# -- fetching -------------------------------------------------------------------------------

APT_SEARCH = """\
linux-image-6.1.0-9-686-unsigned - Linux 6.1 for modern PCs
linux-image-6.1.0-50-686-unsigned - Linux 6.1 for modern PCs
linux-image-6.1.0-48-686-unsigned - Linux 6.1 for modern PCs
linux-image-6.1.0-51-686-pae-unsigned - Linux 6.1 for modern PCs (PAE)
linux-image-6.1.0-52-686-unsigned-dbg - Debug symbols
"""


def test_newest_kernel_package_is_chosen_by_abi_number():
    assert fetch_mod.newest_kernel_package(APT_SEARCH) == "linux-image-6.1.0-50-686-unsigned"
    assert fetch_mod.newest_kernel_package("") is None
    assert fetch_mod.kernel_release("linux-image-6.1.0-50-686-unsigned") == "6.1.0-50-686"


def test_cached_kernel_is_the_newest_with_busybox(tmp_path):
    assert fetch_mod.cached(tmp_path) is None
    for abi in (9, 50, 48):
        (tmp_path / f"vmlinuz-6.1.0-{abi}-686").write_bytes(b"k")
    assert fetch_mod.cached(tmp_path) is None                           # no busybox yet
    (tmp_path / "busybox").write_bytes(b"b")
    assert fetch_mod.cached(tmp_path) == (tmp_path / "vmlinuz-6.1.0-50-686", "6.1.0-50-686")


def test_fetch_from_the_cache_runs_no_apt(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = tmp_path / "dbgvm" / "linux"
    cache.mkdir(parents=True)
    (cache / "vmlinuz-6.1.0-7-686").write_bytes(b"k")
    (cache / "busybox").write_bytes(b"b")
    (cache / "modules-6.1.0-7-686").mkdir()
    for path in fetch_mod.KERNEL_MODULES:
        (cache / "modules-6.1.0-7-686" / Path(path).name).write_bytes(b"m")
    (cache / "headers-6.1.0-7-686").mkdir()
    (cache / "headers-6.1.0-7-686" / fetch_mod.IDENTITY).write_text("headers")
    monkeypatch.setattr(fetch_mod, "_run", lambda *a, **k: pytest.fail("apt was run"))
    monkeypatch.setattr(fetch_mod, "build_modules",
                        lambda headers, cache, log: BuiltModules(cache, {"hal_console": b"d"}))
    logged: list[str] = []
    files = fetch_mod.fetch(logged.append)
    assert files.release == "6.1.0-7-686" and files.initrd.read_bytes()[:2] == b"\x1f\x8b"
    assert fetch_mod.fetch(logged.append) == files and len(logged) == 1   # built once


# -- the real kernel --------------------------------------------------------------------------

def test_real_debian_kernel(linux_kernel):
    raw = linux_kernel.kernel.read_bytes()
    header = parse_setup_header(raw, str(linux_kernel.kernel))
    assert header.version >= 0x020F and header.release == linux_kernel.release
    method, elf = unpack(raw, header, str(linux_kernel.kernel))
    assert method == "xz" and elf[:5] == b"\x7fELF\x01" and u32(elf, 16) >> 16 == 3  # EM_386
    initrd = linux_kernel.initrd.read_bytes()
    boot = load_linux(linux_kernel.kernel, 128 << 20, "console=ttyS0", initrd)
    assert boot.kernel_range[0] == 0x1000000 == boot.image.entry
    assert min(c.paddr for c in boot.image.chunks if c.paddr >= 0x100000) == 0x1000000
    assert boot.initrd_range[0] >= boot.kernel_range[1]


def test_missing_optional_decompressor_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)                 # import fails
    path = tmp_path / "k"
    path.write_bytes(bzimage(b"\x28\xb5\x2f\xfd" + bytes(16)))
    with pytest.raises(LoadError, match=r"k: a zstd-compressed kernel needs the Python "
                       r"package 'zstandard'"):
        load_linux(path, 64 << 20)


def test_fetch_command_prints_paths(linux_kernel):
    proc = subprocess.run([sys.executable, "-m", "dbgvm", "linux", "fetch", "--print-paths"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{linux_kernel.kernel}\n{linux_kernel.initrd}\n"


def test_gdb_is_told_no_file_the_stub_serves_one(kernel, tmp_path):
    from dbgvm.cli import gdb_command_line, served_symbols
    assert gdb_command_line("127.0.0.1", 1234, False) == \
        "gdb -ex 'target remote 127.0.0.1:1234'"
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(tiny_vmlinux())
    # a tiny kernel without kallsyms: nothing to serve for the bzImage; the vmlinux, an ELF,
    # is served itself
    assert served_symbols(str(kernel), None) is None
    served = served_symbols(str(vmlinux), None)
    assert served is not None and served.path == str(vmlinux.resolve())