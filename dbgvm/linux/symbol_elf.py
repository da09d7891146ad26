"""A symbol file for gdb from the kernel's own kallsyms: a small ELF32 i386 written here.

gdb cannot read a bzImage, and Debian's vmlinux inside it has no .symtab; what it does have is
kallsyms (kallsyms.py). This module writes those symbols as an ELF that gdb loads like any
symbol file: an ``ET_EXEC`` for EM_386 whose ``.text`` and ``.init.text`` are SHT_NOBITS (no
bytes in the file: gdb reads code from the target) at the kernel's virtual addresses, ending
at the kernel's markers (``_etext``, ``_einittext``: the rodata between is in no section, so
gdb names no function there), and a ``.symtab``: text symbols (kallsyms types t/T/w/W) as
STT_FUNC sized up to the next symbol, the few others as absolute STT_NOTYPE; upper-case types
global, ``w``/``W``/``v``/``V`` weak, the rest local (locals first, as the ELF spec requires).

The file is cached next to the kallsyms cache, by the kernel's SHA-256; dbgvm serves it to
gdb (qXfer:exec-file, vFile: docs/gdb.md), so ``gdb -ex 'target remote :1234'`` knows
``schedule``. pyelftools only reads ELF: this writer is the few lines the format needs.
"""
from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..core.loader import LoadError
from .bzimage import is_bzimage, parse_setup_header, unpack
from .kallsyms import KallsymsError, KernelSymbol, cache_dir, kernel_symbols

VERSION = "symbols-1"
TEXT_TYPES = frozenset("tTwW")
WEAK_TYPES = frozenset("wWvV")
# linker-script markers at the end of a region: what follows them up to the next symbol is
# not code (the rodata after _etext, ...), so they get no size
END_MARKERS = frozenset({"_etext", "_einittext", "_edata", "_end", "__init_end",
                         "__end_rodata", "__bss_stop"})
# ELF constants
ET_EXEC, EM_386, EV_CURRENT = 2, 3, 1
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOBITS = 1, 2, 3, 8
SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
STT_NOTYPE, STT_FUNC = 0, 2
SHN_ABS = 0xFFF1
EHDR_SIZE, SHDR_SIZE, SYM_SIZE = 52, 40, 16


def _strings(names: Sequence[str]) -> tuple[bytes, list[int]]:
    table, offsets, seen = bytearray(b"\0"), [], {}
    for name in names:
        if name not in seen:
            seen[name] = len(table)
            table += name.encode("ascii", "replace") + b"\0"
        offsets.append(seen[name])
    return bytes(table), offsets


def _regions(text: Sequence[KernelSymbol], following: dict[int, int]
             ) -> list[tuple[int, int, str]]:
    """(start, end, name) of the text regions: an end marker closes one (the kernel's
    .text ends at _etext, its .init.text at _einittext), the next text symbol opens the
    next."""
    regions: list[tuple[int, int, str]] = []
    start: int | None = None
    names: set[str] = set()
    for sym in text:
        if start is None:
            start, names = sym.address, set()
        names.add(sym.name)
        if sym.name in END_MARKERS:
            regions.append((start, sym.address, _region_name(len(regions), names)))
            start = None
    if start is not None:
        last = text[-1].address
        regions.append((start, following.get(last, last + 1),
                        _region_name(len(regions), names)))
    return regions


def _region_name(index: int, names: set[str]) -> str:
    if "_sinittext" in names or "_einittext" in names:
        return ".init.text"
    return ".text" if index == 0 else f".text.{index}"


def symbol_elf(symbols: Sequence[KernelSymbol], entry: int = 0) -> bytes:
    """The ELF bytes for these symbols (any order)."""
    ordered = sorted(symbols, key=lambda s: s.address)
    addresses = sorted({s.address for s in ordered})
    following = {a: b for a, b in zip(addresses, addresses[1:])}
    regions = _regions([s for s in ordered if s.type in TEXT_TYPES], following)
    entries = []                # (binding, name, value, size, info type, section)
    region = 0
    for s in ordered:
        if s.type in WEAK_TYPES:
            binding = STB_WEAK
        else:
            binding = STB_GLOBAL if s.type.isupper() else STB_LOCAL
        if s.type in TEXT_TYPES:
            while s.address > regions[region][1] or (
                    s.address == regions[region][1] and s.name not in END_MARKERS):
                region += 1
            end = regions[region][1]
            size = 0 if s.name in END_MARKERS else min(following.get(s.address, end), end) \
                - s.address
            entries.append((binding, s.name, s.address, size, STT_FUNC, 1 + region))
        else:
            entries.append((binding, s.name, s.address, 0, STT_NOTYPE, SHN_ABS))
    entries.sort(key=lambda e: e[0] != STB_LOCAL)           # stable: by address within
    first_global = 1 + sum(e[0] == STB_LOCAL for e in entries)
    strtab, name_at = _strings([e[1] for e in entries])
    symtab = bytearray(SYM_SIZE)                             # the null symbol
    for (binding, _, value, size, kind, section), name in zip(entries, name_at):
        symtab += struct.pack("<IIIBBH", name, value & 0xFFFFFFFF, size,
                              (binding << 4) | kind, 0, section)
    shstrtab, section_names = _strings(
        [name for _, _, name in regions] + [".symtab", ".strtab", ".shstrtab"])
    n_symtab, n_strtab, n_shstrtab = section_names[-3:]
    symtab_at = EHDR_SIZE
    strtab_at = symtab_at + len(symtab)
    shstrtab_at = strtab_at + len(strtab)
    sections_at = (shstrtab_at + len(shstrtab) + 3) & ~3
    strtab_index = 1 + len(regions) + 1
    headers = [bytes(SHDR_SIZE)]
    for (start, end, _), name in zip(regions, section_names):
        headers.append(struct.pack("<10I", name, SHT_NOBITS, SHF_ALLOC | SHF_EXECINSTR, start,
                                   EHDR_SIZE, end - start, 0, 0, 16, 0))
    headers += [struct.pack("<10I", n_symtab, SHT_SYMTAB, 0, 0, symtab_at, len(symtab),
                            strtab_index, first_global, 4, SYM_SIZE),
                struct.pack("<10I", n_strtab, SHT_STRTAB, 0, 0, strtab_at, len(strtab), 0, 0,
                            1, 0),
                struct.pack("<10I", n_shstrtab, SHT_STRTAB, 0, 0, shstrtab_at, len(shstrtab),
                            0, 0, 1, 0)]
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)        # ELF32, little-endian, v1
    header = ident + struct.pack("<HHIIIIIHHHHHH", ET_EXEC, EM_386, EV_CURRENT,
                                 entry & 0xFFFFFFFF, 0, sections_at, 0, EHDR_SIZE, 0, 0,
                                 SHDR_SIZE, len(headers), len(headers) - 1)
    body = header + bytes(symtab) + strtab + shstrtab
    return body + bytes(sections_at - len(body)) + b"".join(headers)


def cached_symbol_elf(kernel: bytes, vmlinux: Callable[[], bytes]) -> Path | None:
    """The symbol ELF of ``kernel`` (a bzImage's or vmlinux's bytes; ``vmlinux()`` unpacks
    it), written once to the cache under the kernel's SHA-256; None when the kernel has no
    kallsyms or the cache cannot be written."""
    digest = hashlib.sha256(kernel).hexdigest()
    path = cache_dir() / f"{digest}.{VERSION}.elf"
    if path.is_file():
        return path
    try:
        symbols = kernel_symbols(kernel, vmlinux)
    except (KallsymsError, LoadError):
        return None
    if not symbols:
        return None
    entry = next((s.address for s in symbols if s.name == "startup_32"), 0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(symbol_elf(symbols, entry))
        os.replace(tmp, path)
    except OSError:
        return None
    return path


def _has_symtab(data: bytes) -> bool:
    try:
        symtab = ELFFile(io.BytesIO(data)).get_section_by_name(".symtab")
        return symtab is not None and symtab.num_symbols() > 1
    except (ELFError, struct.error, ValueError):
        return False


def symbol_file(kernel: str | Path, data: bytes | None = None) -> Path | None:
    """What gdb should load for this Linux kernel: the kernel itself when it is a vmlinux
    with a .symtab; for a bzImage or a stripped vmlinux, the kallsyms symbol ELF (a vmlinux
    without kallsyms: itself still); None when there is nothing (a bzImage without kallsyms,
    an unreadable file)."""
    try:
        raw = data if data is not None else Path(kernel).read_bytes()
    except OSError:
        return None
    if is_bzimage(raw[:0x300]):
        try:
            header = parse_setup_header(raw, str(kernel))
        except LoadError:
            return None
        return cached_symbol_elf(raw, lambda: unpack(raw, header, str(kernel))[1])
    if raw[:4] != b"\x7fELF":
        return None
    if _has_symtab(raw):
        return Path(kernel)
    return cached_symbol_elf(raw, lambda: raw) or Path(kernel)
