"""The bzImage format: its setup header, and the compressed vmlinux inside it.

A bzImage is a real-mode setup program followed by a protected-mode decompressor that carries
the kernel (an ELF ``vmlinux``) as a compressed payload. Since boot protocol 2.08 the setup
header says where that payload is, which lets dbgvm unpack the kernel in Python and load the
ELF directly, as QEMU's and Firecracker's direct boots do, instead of running the decompressor
instruction by instruction under the VMM. Field offsets are those of
Documentation/x86/boot.rst; every problem is a one-line :class:`LoadError` naming the file.
"""
from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from dataclasses import dataclass

from ..core.loader import LoadError

HDRS_MAGIC = b"HdrS"
HDRS_OFFSET = 0x202
SETUP_HEADER_OFFSET = 0x1F1
BOOT_FLAG = 0xAA55
MIN_VERSION = 0x0208          # payload_offset/payload_length appeared in 2.08
PREF_ADDRESS_VERSION = 0x020A  # pref_address and init_size appeared in 2.10
LOADED_HIGH = 0x01            # loadflags: the protected-mode code is loaded at 0x100000
SECTOR = 512


@dataclass(frozen=True)
class SetupHeader:
    """The fields of a bzImage's setup header that a 32-bit boot needs."""
    version: int              # boot protocol, e.g. 0x020F for 2.15
    setup_sects: int          # real-mode setup sectors after the boot sector (0 read as 4)
    syssize: int              # protected-mode code size, in bytes
    loadflags: int
    code32_start: int         # where the protected-mode code expects to be loaded
    initrd_addr_max: int      # highest address the initrd may occupy
    kernel_alignment: int
    relocatable: bool
    cmdline_size: int         # longest command line, without its NUL
    payload_offset: int       # from the start of the protected-mode code
    payload_length: int
    pref_address: int         # where the decompressed kernel goes (0 before 2.10)
    init_size: int            # room the decompressor needs from pref_address (0 before 2.10)
    kernel_version: str       # the version string the header points to ("" when none)
    raw: bytes                # header bytes 0x1F1.. as the file has them, for boot_params.hdr

    @property
    def protected_mode_offset(self) -> int:
        """Where the protected-mode code starts in the file."""
        return (self.setup_sects + 1) * SECTOR

    @property
    def release(self) -> str:
        """The kernel release (``uname -r``), the first word of the version string."""
        return self.kernel_version.split(" ", 1)[0]


def is_bzimage(head: bytes) -> bool:
    """Whether these first bytes of a file carry a Linux setup header."""
    return (len(head) >= HDRS_OFFSET + 4 and head[HDRS_OFFSET:HDRS_OFFSET + 4] == HDRS_MAGIC
            and struct.unpack_from("<H", head, 0x1FE)[0] == BOOT_FLAG)


def parse_setup_header(raw: bytes, name: str) -> SetupHeader:
    """The setup header of the bzImage ``raw`` (``name`` is for messages)."""
    if not is_bzimage(raw):
        raise LoadError(f"{name}: not a bzImage (no 'HdrS' setup header at {HDRS_OFFSET:#x})")
    version = struct.unpack_from("<H", raw, 0x206)[0]
    if version < MIN_VERSION:
        raise LoadError(f"{name}: boot protocol {version >> 8}.{version & 0xFF:02d} is too old "
                        f"(2.08 or later is needed)")
    loadflags = raw[0x211]
    if not loadflags & LOADED_HIGH:
        raise LoadError(f"{name}: a zImage (not loaded high) is not supported")
    end = HDRS_OFFSET + raw[0x201]    # the setup code's first jump skips the header
    if end < 0x250 or end > len(raw):
        raise LoadError(f"{name}: malformed setup header (ends at {end:#x})")
    newer = version >= PREF_ADDRESS_VERSION
    pref_address, init_size = struct.unpack_from("<QI", raw, 0x258) if newer else (0, 0)
    header = SetupHeader(
        version=version, setup_sects=raw[0x1F1] or 4,
        syssize=struct.unpack_from("<I", raw, 0x1F4)[0] * 16, loadflags=loadflags,
        code32_start=struct.unpack_from("<I", raw, 0x214)[0],
        initrd_addr_max=struct.unpack_from("<I", raw, 0x22C)[0],
        kernel_alignment=struct.unpack_from("<I", raw, 0x230)[0],
        relocatable=bool(raw[0x234]), cmdline_size=struct.unpack_from("<I", raw, 0x238)[0],
        payload_offset=struct.unpack_from("<I", raw, 0x248)[0],
        payload_length=struct.unpack_from("<I", raw, 0x24C)[0],
        pref_address=pref_address, init_size=init_size,
        kernel_version=_version_string(raw), raw=raw[SETUP_HEADER_OFFSET:end])
    if header.protected_mode_offset >= len(raw):
        raise LoadError(f"{name}: truncated (setup of {header.setup_sects} sectors, "
                        f"file of {len(raw)} bytes)")
    return header


def _version_string(raw: bytes) -> str:
    pointer = struct.unpack_from("<H", raw, 0x20E)[0]
    if pointer == 0:
        return ""
    start = pointer + 0x200
    end = raw.find(b"\0", start, start + 256)
    return raw[start:end].decode("ascii", "replace") if end > start else ""


def payload(raw: bytes, header: SetupHeader, name: str) -> bytes:
    """The compressed kernel, as the header locates it in the protected-mode code."""
    start = header.protected_mode_offset + header.payload_offset
    if header.payload_length < 4 or start + header.payload_length > len(raw):
        raise LoadError(f"{name}: payload at {start:#x} (+{header.payload_length:#x}) is not "
                        f"inside the file")
    return raw[start:start + header.payload_length]


def unpack(raw: bytes, header: SetupHeader, name: str) -> tuple[str, bytes]:
    """The compression method ("xz", ...) and the vmlinux ELF inside the bzImage.

    Every method the kernel builds with leaves the uncompressed size in the payload's last
    4 bytes (gzip's own trailer; the others get it appended), which the kernel's build reads
    too; it is checked here so that a truncated stream cannot pass for a kernel.
    """
    data = payload(raw, header, name)
    method, out = _decompress(data, name)
    expected = struct.unpack_from("<I", data, len(data) - 4)[0]
    if len(out) != expected:
        raise LoadError(f"{name}: {method} payload unpacked to {len(out)} bytes, its trailer "
                        f"says {expected}")
    if out[:4] != b"\x7fELF":
        raise LoadError(f"{name}: the {method} payload is not an ELF vmlinux")
    return method, out


def _decompress(data: bytes, name: str) -> tuple[str, bytes]:
    """(method, output) for a payload recognised by its magic; trailing bytes are ignored."""
    try:
        if data.startswith(b"\x1f\x8b"):
            stream = zlib.decompressobj(wbits=31)
            return "gzip", _whole(stream.decompress(data), stream.eof, "gzip", name)
        if data.startswith(b"\xfd7zXZ\0"):
            # the xz container records the x86 BCJ filter the kernel uses; lzma applies it
            xz = lzma.LZMADecompressor(lzma.FORMAT_XZ)
            return "xz", _whole(xz.decompress(data), xz.eof, "xz", name)
        if data.startswith(b"\x5d\0\0"):
            alone = lzma.LZMADecompressor(lzma.FORMAT_ALONE)
            return "lzma", _whole(alone.decompress(data), alone.eof, "lzma", name)
        if data.startswith(b"BZh"):
            bz = bz2.BZ2Decompressor()
            return "bzip2", _whole(bz.decompress(data), bz.eof, "bzip2", name)
        if data.startswith(b"\x02\x21\x4c\x18"):
            return "lz4", _lz4_legacy(data, name)
        if data.startswith(b"\x28\xb5\x2f\xfd"):
            return "zstd", _zstd(data, name)
    except (zlib.error, lzma.LZMAError, OSError, EOFError) as exc:
        raise LoadError(f"{name}: corrupt compressed payload: {exc}") from None
    if data.startswith(b"\x89LZO"):
        raise LoadError(f"{name}: LZO-compressed kernels are not supported (no Python LZO)")
    raise LoadError(f"{name}: unknown payload compression (magic {data[:4].hex()})")


def _whole(out: bytes, eof: bool, method: str, name: str) -> bytes:
    if not eof:
        raise LoadError(f"{name}: the {method} payload is truncated")
    return out


LZ4_LEGACY_BLOCK = 8 << 20     # the legacy format's fixed uncompressed block size


def _lz4_legacy(data: bytes, name: str) -> bytes:
    """lz4's legacy frame (``lz4 -l``): a magic, then blocks each led by its size."""
    try:
        import lz4.block
    except ImportError:
        raise LoadError(f"{name}: an lz4-compressed kernel needs the Python package 'lz4' "
                        f"(pip install lz4)") from None
    out, pos = bytearray(), 4
    while len(data) - pos > 4:       # the last 4 bytes are the appended size
        size = struct.unpack_from("<I", data, pos)[0]
        pos += 4
        if size == 0x184C2102:        # a concatenated stream's magic
            continue
        if pos + size > len(data):
            raise LoadError(f"{name}: the lz4 payload is truncated")
        try:
            out += lz4.block.decompress(data[pos:pos + size], uncompressed_size=LZ4_LEGACY_BLOCK)
        except lz4.block.LZ4BlockError as exc:
            raise LoadError(f"{name}: corrupt lz4 payload: {exc}") from None
        pos += size
    return bytes(out)


def _zstd(data: bytes, name: str) -> bytes:
    try:
        import zstandard
    except ImportError:
        raise LoadError(f"{name}: a zstd-compressed kernel needs the Python package "
                        f"'zstandard' (pip install zstandard)") from None
    try:
        # the kernel streams it, so the frame may not record its size: decompress as a stream
        stream = zstandard.ZstdDecompressor().decompressobj()
        out = stream.decompress(data[:-4])
    except zstandard.ZstdError as exc:
        raise LoadError(f"{name}: corrupt zstd payload: {exc}") from None
    return _whole(out, stream.eof, "zstd", name)
