"""Loading a 32-bit ELF kernel, and the Multiboot v1 hand-off QEMU's ``-kernel`` gives.

The loader only produces a :class:`BootImage` (what goes where, and the entry registers); the
machine writes it into guest RAM. Every problem with the file is a :class:`LoadError` whose
message is one line naming the file and the problem.
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from unicorn.x86_const import UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_EIP

from .descriptors import VMM_HOLE
from .guest_registers import write_register

if TYPE_CHECKING:
    from .cpu_context import CpuContext

MULTIBOOT_MAGIC = 0x1BADB002
MULTIBOOT_BOOTLOADER_MAGIC = 0x2BADB002
MULTIBOOT_SEARCH = 8192
MB_INFO_ADDR = 0x9500        # where QEMU's Multiboot loader puts it (EBX at entry)
MB_INFO_LIMIT = 0x9FC00
BOOTLOADER_NAME = b"dbgvm\0"
BIOS_RESERVED_TOP = 128 << 10
# Multiboot info flags
MBI_MEMORY, MBI_BOOTDEV, MBI_CMDLINE, MBI_MODS, MBI_MMAP, MBI_LOADER = 1, 2, 4, 8, 64, 512


class LoadError(Exception):
    """The kernel or a module cannot be loaded; the message is one line."""


@dataclass(frozen=True)
class Chunk:
    paddr: int
    data: bytes
    memsz: int  # bytes from paddr that the image covers (data, then zeros)


@dataclass(frozen=True)
class BootImage:
    chunks: tuple[Chunk, ...]
    entry: int
    multiboot: bool
    eax: int
    ebx: int
    symbols: dict[str, int]
    # other general registers the entry protocol sets, by name ("esi": the Linux boot
    # protocol's boot_params); written after EAX/EBX
    entry_registers: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Module:
    path: str
    data: bytes
    cmdline: str


def has_multiboot_header(head: bytes) -> bool:
    for off in range(0, min(len(head), MULTIBOOT_SEARCH) - 11, 4):
        magic, flags, checksum = struct.unpack_from("<III", head, off)
        if magic == MULTIBOOT_MAGIC and (magic + flags + checksum) & 0xFFFFFFFF == 0:
            return True
    return False


def _check_range(what: str, paddr: int, size: int, ram_size: int) -> None:
    end = paddr + size
    if paddr >= VMM_HOLE or end > VMM_HOLE:
        raise LoadError(f"{what} at {paddr:#x}..{end:#x} lies in the monitor hole "
                        f"({VMM_HOLE:#x} and up)")
    if end > ram_size:
        raise LoadError(f"{what} at {paddr:#x}..{end:#x} is outside guest RAM "
                        f"({ram_size >> 20} MiB)")


def _read_elf(path: Path, ram_size: int, raw: bytes | None = None
              ) -> tuple[list[Chunk], int, dict[str, int], bytes]:
    if raw is None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise LoadError(f"{path}: cannot read: {exc.strerror}") from None
    if raw[:4] != b"\x7fELF":
        raise LoadError(f"{path}: not an ELF file")
    if raw[4] != 1:
        raise LoadError(f"{path}: not a 32-bit ELF (ELF class {raw[4]})")
    try:
        elf = ELFFile(io.BytesIO(raw))
        if elf["e_machine"] != "EM_386":
            raise LoadError(f"{path}: not an i386 ELF (machine {elf['e_machine']})")
        chunks = []
        segments = []
        for seg in elf.iter_segments():
            if seg["p_type"] != "PT_LOAD" or seg["p_memsz"] == 0:
                continue
            paddr, memsz = seg["p_paddr"], seg["p_memsz"]
            _check_range(f"{path}: segment", paddr, memsz, ram_size)
            data = seg.data()
            if len(data) > memsz:
                raise LoadError(f"{path}: segment at {paddr:#x} has filesz > memsz")
            chunks.append(Chunk(paddr, data, memsz))
            segments.append((seg["p_vaddr"], paddr, memsz))
        if not chunks:
            raise LoadError(f"{path}: no loadable segment")
        entry = elf["e_entry"]
        for vaddr, paddr, memsz in segments:
            if vaddr <= entry < vaddr + memsz:
                entry = entry - vaddr + paddr  # a higher-half kernel starts at its load address
                break
        symbols = {}
        symtab = elf.get_section_by_name(".symtab")
        if symtab is not None:
            for sym in symtab.iter_symbols():
                if sym.name and sym["st_info"]["type"] in ("STT_FUNC", "STT_NOTYPE",
                                                           "STT_OBJECT"):
                    symbols.setdefault(sym.name, sym["st_value"])
    except ELFError as exc:
        raise LoadError(f"{path}: malformed ELF: {exc}") from None
    except (struct.error, ValueError) as exc:
        raise LoadError(f"{path}: malformed ELF: {exc}") from None
    return chunks, entry, symbols, raw


def _page_up(value: int) -> int:
    return (value + 0xFFF) & ~0xFFF


def load(path: str | Path, ram_size: int, cmdline: str = "",
         modules: tuple[Module, ...] = (), data: bytes | None = None) -> BootImage:
    """Lay out the kernel and, for a Multiboot kernel, its modules and info block.

    ``data``: the kernel's bytes when they do not come from the file (a replay's kernel, carried
    by the trace); ``path`` is then only the kernel's name, the first word of the command line
    the guest sees, as it was when the run was recorded."""
    path = Path(path)
    chunks, entry, symbols, raw = _read_elf(path, ram_size, data)
    if not has_multiboot_header(raw[:MULTIBOOT_SEARCH]):
        if modules:
            raise LoadError(f"{path}: --initrd needs a Multiboot kernel")
        return BootImage(tuple(chunks), entry, False, 0, 0, symbols)

    # Modules go page-aligned after the kernel, as QEMU places them.
    next_free = _page_up(max(c.paddr + c.memsz for c in chunks))
    mod_entries = []
    for mod in modules:
        _check_range(f"{mod.path}: module", next_free, len(mod.data), ram_size)
        chunks.append(Chunk(next_free, mod.data, len(mod.data)))
        mod_entries.append((next_free, next_free + len(mod.data), mod.cmdline))
        next_free = _page_up(next_free + len(mod.data))

    # Info block, module list, memory map and strings, all in low memory after MB_INFO_ADDR.
    strings = bytearray()
    strings_base = MB_INFO_ADDR + 0x1000

    def add_string(text: bytes) -> int:
        addr = strings_base + len(strings)
        strings.extend(text)
        return addr

    cmdline_addr = add_string(str(path).encode() + (b" " + cmdline.encode() if cmdline else b"")
                              + b"\0")
    loader_addr = add_string(BOOTLOADER_NAME)
    mods_addr = MB_INFO_ADDR + 0x100
    mods = b"".join(struct.pack("<4I", start, end, add_string(text.encode() + b"\0"), 0)
                    for start, end, text in mod_entries)
    mmap_addr = MB_INFO_ADDR + 0x800
    # The memory map and sizes QEMU's firmware reports: 639 KiB low (the EBDA takes the last
    # KiB), and the top 128 KiB of RAM reserved for firmware tables.
    top = ram_size - BIOS_RESERVED_TOP
    mmap = b"".join(struct.pack("<IQQI", 20, base, length, kind) for base, length, kind in (
        (0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xF0000, 0x10000, 2),
        (0x100000, top - 0x100000, 1), (top, BIOS_RESERVED_TOP, 2)))
    mem_lower, mem_upper = 0x9FC00 >> 10, (top >> 10) - 1024
    flags = MBI_MEMORY | MBI_BOOTDEV | MBI_CMDLINE | MBI_MODS | MBI_MMAP | MBI_LOADER
    info = struct.pack("<11I", flags, mem_lower, mem_upper, 0x8000FFFF, cmdline_addr,
                       len(mod_entries), mods_addr, 0, 0, 0, 0)
    info += struct.pack("<II", len(mmap), mmap_addr)
    info += bytes(64 - len(info)) + struct.pack("<I", loader_addr)
    if strings_base + len(strings) > MB_INFO_LIMIT or len(mods) > 0x700:
        raise LoadError(f"{path}: command line and module list too long for the info block")
    boot = [Chunk(MB_INFO_ADDR, info, len(info)), Chunk(mods_addr, mods, len(mods)),
            Chunk(mmap_addr, mmap, len(mmap)), Chunk(strings_base, bytes(strings), len(strings))]
    for chunk in chunks:
        for b in boot:
            if chunk.paddr < b.paddr + b.memsz and b.paddr < chunk.paddr + chunk.memsz:
                raise LoadError(f"{path}: segment at {chunk.paddr:#x} overlaps the Multiboot "
                                f"info block at {MB_INFO_ADDR:#x}")
    return BootImage(tuple(boot + chunks), entry, True, MULTIBOOT_BOOTLOADER_MAGIC,
                     MB_INFO_ADDR, symbols)


def place(m: "CpuContext", image: BootImage) -> None:
    """Place a boot image in guest RAM and set the Multiboot entry registers."""
    for chunk in image.chunks:
        m.ram[chunk.paddr:chunk.paddr + len(chunk.data)] = chunk.data
        tail = chunk.memsz - len(chunk.data)
        if tail > 0:
            start = chunk.paddr + len(chunk.data)
            m.ram[start:start + tail] = bytes(tail)
    m.regs.write(UC_X86_REG_EIP, image.entry)
    if image.multiboot:
        m.regs.write(UC_X86_REG_EAX, image.eax)
        m.regs.write(UC_X86_REG_EBX, image.ebx)
    for name, value in image.entry_registers:
        write_register(m, name, value)
    m.uc.ctl_flush_tb()
