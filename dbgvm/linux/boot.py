"""Booting an unmodified 32-bit Linux kernel through its 32-bit boot protocol.

Three kinds of file are accepted: a bzImage, whose vmlinux is unpacked in Python and loaded
at its physical addresses (the default, as QEMU's PVH and Firecracker boot a vmlinux: the
guest does not spend a billion emulated instructions decompressing itself); a bzImage whose
own decompressor is loaded at ``code32_start`` and run (``boot_decompressor``, to debug that
code); and an uncompressed i386 vmlinux, such as the one in Debian's -dbg package, whose
symbols are kept. All of them enter at a 32-bit entry point with paging off and ESI pointing
at ``struct boot_params`` (the "zero page"), as Documentation/x86/boot.rst describes.

The core loader does not know about Linux (it must not import this package); a front end
asks :func:`is_linux_kernel` first and then calls :func:`load_linux`.
"""
from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..core.descriptors import VMM_HOLE
from ..core.loader import BIOS_RESERVED_TOP, MULTIBOOT_SEARCH, BootImage, Chunk, LoadError
from ..core.loader import has_multiboot_header
from .bzimage import LOADED_HIGH, PREF_ADDRESS_VERSION, SETUP_HEADER_OFFSET, is_bzimage
from .bzimage import parse_setup_header, unpack
from .kallsyms import KallsymsError, kernel_symbols, symbol_map

# Low memory, below 640 KiB and clear of the kernel (1 MiB and up): where QEMU's Linux loader
# puts the real-mode part and the command line.
BOOT_PARAMS_ADDR = 0x10000
BOOT_PARAMS_SIZE = 0x1000
CMDLINE_ADDR = 0x20000
LOW_MEMORY_TOP = 0x9FC00
# struct boot_params
E820_ENTRIES_OFFSET, E820_TABLE_OFFSET, E820_MAX = 0x1E8, 0x2D0, 128
SETUP_HEADER_END = 0x290      # boot_params.hdr may not run past this
E820_RAM, E820_RESERVED = 1, 2
KASLR_FLAG = 0x02
LOADER_UNDEFINED = 0xFF       # type_of_loader of a boot loader without an assigned id
# The kernel keeps its fixmap and vmalloc area below this; the VMM owns the rest.
RESERVETOP = f"reservetop={((1 << 32) - VMM_HOLE) >> 20}M"
# A vmlinux links at PAGE_OFFSET + its physical address; 1 GiB is the smallest split.
MIN_PAGE_OFFSET = 0x40000000
HEAD_SIZE = 64 << 10
# Values every i386 kernel since 2.6.31 declares, for a vmlinux that has no setup header.
VMLINUX_VERSION, VMLINUX_CMDLINE_SIZE, VMLINUX_INITRD_MAX = 0x020F, 2047, 0x7FFFFFFF


@dataclass(frozen=True)
class LinuxBoot:
    """A Linux boot laid out: the image to load, and what a front end shows about it."""
    image: BootImage
    cmdline: str              # what the kernel gets, dbgvm's additions included
    kind: str                 # "bzImage, xz vmlinux", "bzImage, own decompressor", "vmlinux"
    release: str              # the kernel release when the file says it, else ""
    kernel_range: tuple[int, int]      # physical memory the kernel occupies or needs
    initrd_range: tuple[int, int] | None

    def describe(self) -> str:
        """One line for a boot message."""
        text = f"Linux {self.release or '(unknown release)'} ({self.kind}) at " \
               f"{self.kernel_range[0]:#x}"
        if self.initrd_range is not None:
            start, end = self.initrd_range
            text += f", initrd {end - start} bytes at {start:#x}"
        return f"{text}; command line: {self.cmdline}"


def _open(path: str | Path, data: bytes | None) -> BinaryIO:
    """The kernel's bytes: ``data`` when given (a replay's kernel, from its trace), else the
    file."""
    return io.BytesIO(data) if data is not None else open(path, "rb")


def is_linux_kernel(path: str | Path, data: bytes | None = None) -> bool:
    """Whether ``path`` is a bzImage or an i386 vmlinux (and not a Multiboot kernel).

    A vmlinux is told from other ELF kernels by what the kernel's linker script does: it is
    not Multiboot, and it links at PAGE_OFFSET plus the physical address it loads at."""
    try:
        with _open(path, data) as f:
            head = f.read(HEAD_SIZE)
            if is_bzimage(head):
                return True
            if head[:4] != b"\x7fELF" or len(head) < 52 or head[4] != 1:
                return False
            if struct.unpack_from("<H", head, 18)[0] != 3 or has_multiboot_header(
                    head[:MULTIBOOT_SEARCH]):
                return False
            phoff, = struct.unpack_from("<I", head, 28)
            phentsize, phnum = struct.unpack_from("<HH", head, 42)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError:
        return False
    for i in range(len(table) // max(phentsize, 32)):
        p_type, _, vaddr, paddr = struct.unpack_from("<4I", table, i * phentsize)
        if p_type == 1 and vaddr - paddr >= MIN_PAGE_OFFSET:
            return True
    return False


def kernel_cmdline(cmdline: str, boot_decompressor: bool) -> str:
    """The user's command line with what dbgvm needs appended: ``reservetop`` keeps the
    kernel's fixmap out of the VMM's top 4 MiB (unless the user chose a value), and
    the decompressor is told ``nokaslr`` so that the kernel lands where its symbols say."""
    words = cmdline.split()
    if not any(w.startswith("reservetop=") for w in words):
        words.append(RESERVETOP)
    if boot_decompressor and "nokaslr" not in words:
        words.append("nokaslr")
    return " ".join(words)


def load_linux(path: str | Path, ram_size: int, cmdline: str = "",
               initrd: bytes | None = None, *, initrd_name: str = "initrd",
               boot_decompressor: bool = False, data: bytes | None = None) -> LinuxBoot:
    """Lay out a Linux boot: kernel, initrd, command line and boot_params. ``data``: the
    kernel's bytes when they do not come from ``path`` (a replay)."""
    path = Path(path)
    name = str(path)
    try:
        with _open(path, data) as f:
            head = f.read(HEAD_SIZE)
            if is_bzimage(head):
                raw = head + f.read()
            elif head[:4] == b"\x7fELF":
                if boot_decompressor:
                    raise LoadError(f"{name}: a vmlinux has no decompressor to run (that "
                                    f"needs a bzImage)")
                f.seek(0)
                chunks, entry, span, symbols = _elf_image(f, name, ram_size, True)
                if not symbols:         # stripped: the kernel's own table then
                    f.seek(0)
                    whole = f.read()
                    symbols = _kallsyms(whole, lambda: whole)
                return _finish(name, ram_size, cmdline, initrd, initrd_name,
                               _vmlinux_header(), chunks, entry, span, symbols,
                               kind="vmlinux", release="", decompressor=False)
            else:
                raise LoadError(f"{name}: neither a bzImage nor an ELF vmlinux")
    except OSError as exc:
        raise LoadError(f"{name}: cannot read: {exc.strerror}") from None
    header = parse_setup_header(raw, name)
    if boot_decompressor:
        if header.version < PREF_ADDRESS_VERSION:
            raise LoadError(f"{name}: running the kernel's decompressor needs boot protocol "
                            f"2.10 or later (for init_size)")
        code = raw[header.protected_mode_offset:]
        start = header.code32_start
        end = max(start + len(code), header.pref_address + header.init_size)
        chunks = (Chunk(start, code, len(code)),)
        # with nokaslr the decompressor puts the kernel at its link address: same symbols
        symbols = _kallsyms(raw, lambda: unpack(raw, header, name)[1])
        return _finish(name, ram_size, cmdline, initrd, initrd_name, header.raw, chunks,
                       start, (start, end), symbols, kind="bzImage, own decompressor",
                       release=header.release, decompressor=True)
    method, vmlinux = unpack(raw, header, name)
    chunks, entry, span, _ = _elf_image(io.BytesIO(vmlinux), f"{name} (vmlinux)", ram_size,
                                        False)
    # the decompressor would use init_size from the load address: keep it free too
    span = (span[0], max(span[1], span[0] + header.init_size))
    return _finish(name, ram_size, cmdline, initrd, initrd_name, header.raw, chunks, entry,
                   span, _kallsyms(raw, lambda: vmlinux), kind=f"bzImage, {method} vmlinux",
                   release=header.release,
                   decompressor=False)


def _kallsyms(kernel: bytes, vmlinux: Callable[[], bytes]) -> dict[str, int]:
    """The kernel's own symbol table (name -> address), cached by the kernel's SHA-256; empty
    for a kernel without kallsyms or one whose vmlinux does not unpack (a boot of the
    decompressor may still be wanted then)."""
    try:
        return symbol_map(kernel_symbols(kernel, vmlinux))
    except (KallsymsError, LoadError):
        return {}


def _vmlinux_header() -> bytes:
    """A setup header for a vmlinux that has none: the fields the kernel itself reads."""
    hdr = bytearray(0x26C - SETUP_HEADER_OFFSET)
    struct.pack_into("<H", hdr, 0x1FE - SETUP_HEADER_OFFSET, 0xAA55)
    struct.pack_into("<4sH", hdr, 0x202 - SETUP_HEADER_OFFSET, b"HdrS", VMLINUX_VERSION)
    hdr[0x211 - SETUP_HEADER_OFFSET] = LOADED_HIGH
    struct.pack_into("<I", hdr, 0x22C - SETUP_HEADER_OFFSET, VMLINUX_INITRD_MAX)
    struct.pack_into("<I", hdr, 0x238 - SETUP_HEADER_OFFSET, VMLINUX_CMDLINE_SIZE)
    return bytes(hdr)


def _elf_image(stream: BinaryIO, name: str, ram_size: int, want_symbols: bool
               ) -> tuple[tuple[Chunk, ...], int, tuple[int, int], dict[str, int]]:
    """PT_LOAD segments at their physical addresses, the physical entry point, the physical
    span of the segments and, when wanted and present, the symbol table."""
    try:
        elf = ELFFile(stream)
        if elf.elfclass != 32 or elf["e_machine"] != "EM_386":
            raise LoadError(f"{name}: not an i386 ELF32 vmlinux")
        chunks, entry = [], elf["e_entry"]
        physical_entry = None
        for seg in elf.iter_segments():
            if seg["p_type"] != "PT_LOAD" or seg["p_memsz"] == 0:
                continue
            vaddr, paddr, memsz = seg["p_vaddr"], seg["p_paddr"], seg["p_memsz"]
            if seg["p_filesz"] > memsz:
                raise LoadError(f"{name}: segment at {paddr:#x} has filesz > memsz")
            _check_fits(f"{name}: segment", paddr, paddr + memsz, ram_size)
            chunks.append(Chunk(paddr, seg.data(), memsz))
            # startup_32 runs with paging off: enter at the physical address of e_entry
            if vaddr <= entry < vaddr + memsz:
                physical_entry = entry - vaddr + paddr
            elif paddr <= entry < paddr + memsz and physical_entry is None:
                physical_entry = entry
        if not chunks:
            raise LoadError(f"{name}: no loadable segment")
        if physical_entry is None:
            raise LoadError(f"{name}: entry point {entry:#x} is in no loadable segment")
        symbols: dict[str, int] = {}
        symtab = elf.get_section_by_name(".symtab") if want_symbols else None
        if symtab is not None:
            for sym in symtab.iter_symbols():
                if sym.name and sym["st_info"]["type"] in ("STT_FUNC", "STT_NOTYPE",
                                                           "STT_OBJECT"):
                    symbols.setdefault(sym.name, sym["st_value"])
    except (ELFError, struct.error, ValueError) as exc:
        raise LoadError(f"{name}: malformed ELF: {exc}") from None
    span = (min(c.paddr for c in chunks), max(c.paddr + c.memsz for c in chunks))
    return tuple(chunks), physical_entry, span, symbols


def _check_fits(what: str, start: int, end: int, ram_size: int) -> None:
    top = min(ram_size - BIOS_RESERVED_TOP, VMM_HOLE)
    if end > top:
        raise LoadError(f"{what} at {start:#x}..{end:#x} does not fit in guest RAM below "
                        f"{top:#x} ({ram_size >> 20} MiB): give the guest more RAM (-m)")


def e820_map(ram_size: int) -> tuple[tuple[int, int, int], ...]:
    """(base, length, type): the map dbgvm's Multiboot loader reports, with 0xE0000 up
    reserved as well, where the BIOS-area tables (ACPI) live."""
    top = ram_size - BIOS_RESERVED_TOP
    return ((0, LOW_MEMORY_TOP, E820_RAM), (LOW_MEMORY_TOP, 0xA0000 - LOW_MEMORY_TOP,
                                             E820_RESERVED),
            (0xE0000, 0x20000, E820_RESERVED), (0x100000, top - 0x100000, E820_RAM),
            (top, BIOS_RESERVED_TOP, E820_RESERVED))


def place_initrd(size: int, initrd_addr_max: int, ram_size: int, kernel_end: int,
                 name: str) -> int:
    """Where the initrd goes: page-aligned, as high as the kernel allows under the reserved
    top of RAM (the VMM hole is above all RAM), as QEMU places it."""
    limit = min(initrd_addr_max + 1, ram_size - BIOS_RESERVED_TOP, VMM_HOLE)
    addr = (limit - size) & ~0xFFF
    if size > limit or addr < kernel_end:
        raise LoadError(f"{name}: an initrd of {size} bytes does not fit between the kernel "
                        f"(ending at {kernel_end:#x}) and {limit:#x}: give the guest more RAM "
                        f"(-m)")
    return addr


def boot_params(setup_header: bytes, ram_size: int, cmdline_addr: int,
                ramdisk: tuple[int, int] | None) -> bytes:
    """The zero page. Everything not set here stays 0: no screen_info (the kernel then
    assumes no VGA text console), no EFI, no APM, hardware_subarch X86_SUBARCH_PC, and a 0
    sentinel so the kernel trusts the fields."""
    params = bytearray(BOOT_PARAMS_SIZE)
    hdr = setup_header[:SETUP_HEADER_END - SETUP_HEADER_OFFSET]
    params[SETUP_HEADER_OFFSET:SETUP_HEADER_OFFSET + len(hdr)] = hdr
    params[0x210] = LOADER_UNDEFINED
    # loaded high; not randomised (a decompressor run sets the flag again itself)
    params[0x211] = (params[0x211] | LOADED_HIGH) & ~KASLR_FLAG
    struct.pack_into("<I", params, 0x228, cmdline_addr)
    struct.pack_into("<II", params, 0x218, *(ramdisk or (0, 0)))
    struct.pack_into("<I", params, 0x23C, 0)
    table = e820_map(ram_size)
    params[E820_ENTRIES_OFFSET] = len(table)
    for i, entry in enumerate(table):
        struct.pack_into("<QQI", params, E820_TABLE_OFFSET + 20 * i, *entry)
    return bytes(params)


def _finish(name: str, ram_size: int, cmdline: str, initrd: bytes | None, initrd_name: str,
            setup_header: bytes, chunks: tuple[Chunk, ...], entry: int,
            span: tuple[int, int], symbols: dict[str, int], *, kind: str, release: str,
            decompressor: bool) -> LinuxBoot:
    """Add boot_params, the command line and the initrd to the kernel's chunks."""
    _check_fits(f"{name}: kernel", *span, ram_size)
    if span[0] < CMDLINE_ADDR + 0x1000:
        raise LoadError(f"{name}: kernel at {span[0]:#x} overlaps boot_params/command line "
                        f"at {BOOT_PARAMS_ADDR:#x}..")
    final = kernel_cmdline(cmdline, decompressor)
    cmdline_size = _header_u32(setup_header, 0x238)
    encoded = final.encode()
    if len(encoded) > cmdline_size:
        raise LoadError(f"{name}: command line of {len(encoded)} bytes is longer than the "
                        f"kernel's {cmdline_size}")
    out = [Chunk(CMDLINE_ADDR, encoded + b"\0", len(encoded) + 1), *chunks]
    ramdisk = None
    if initrd is not None:
        addr = place_initrd(len(initrd), _header_u32(setup_header, 0x22C), ram_size, span[1],
                            initrd_name)
        ramdisk = (addr, len(initrd))
        out.append(Chunk(addr, initrd, len(initrd)))
    params = boot_params(setup_header, ram_size, CMDLINE_ADDR, ramdisk)
    out.insert(0, Chunk(BOOT_PARAMS_ADDR, params, len(params)))
    image = BootImage(tuple(out), entry, False, 0, 0, symbols,
                      (("esi", BOOT_PARAMS_ADDR), ("ebx", 0), ("ebp", 0), ("edi", 0)))
    initrd_range = (ramdisk[0], ramdisk[0] + ramdisk[1]) if ramdisk else None
    return LinuxBoot(image, final, kind, release, span, initrd_range)


def _header_u32(setup_header: bytes, offset: int) -> int:
    """A field of the setup header, by its boot_params offset."""
    return struct.unpack_from("<I", setup_header, offset - SETUP_HEADER_OFFSET)[0]
