"""Kernel symbols without a debug package: the kernel's own symbol table, kallsyms.

A kernel built with CONFIG_KALLSYMS (every distribution kernel) carries the names and addresses
of its functions in .rodata, for oopses and /proc/kallsyms. The vmlinux in a bzImage is
stripped of its ELF .symtab, but not of these tables, which scripts/kallsyms.c (Linux 6.1)
writes in this order, each label aligned to 4 bytes on i386:

* ``kallsyms_offsets``: one s32 per symbol, sorted by address; with
  CONFIG_KALLSYMS_BASE_RELATIVE (and no CONFIG_KALLSYMS_ABSOLUTE_PERCPU, which i386 does not
  have) a symbol's address is ``kallsyms_relative_base + (u32)offset``;
* ``kallsyms_relative_base``: a pointer (u32 on i386);
* ``kallsyms_num_syms``: a u32;
* ``kallsyms_names``: per symbol, a length (ULEB128: one byte below 0x80, else two) then that
  many token numbers; the expanded string's first character is the symbol's type (``t``,
  ``T``, ``W``, ...), the rest its name;
* ``kallsyms_markers``: a u32 per 256 symbols, where each group starts in kallsyms_names;
* ``kallsyms_token_table``: 256 NUL-terminated strings, what each token byte expands to;
* ``kallsyms_token_index``: 256 u16, each token's offset in the token table.

None of these has a symbol of its own here, so the reader finds them by content: every
character that occurs in a symbol name stands for itself in the token table, so the digits
make the run ``"0\\0" "1\\0" ... "9\\0"`` at tokens 0x30..0x39; the token index after the
table confirms it; the markers end where the token table starts, and kallsyms_num_syms is
the u32 before the names whose entries, walked, end at the markers.

Recovered tables are cached by the kernel file's SHA-256 in
``$XDG_CACHE_HOME/dbgvm/linux/symbols/``, one ``address type name`` line per symbol.
"""
from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

DIGIT_TOKENS = b"".join(bytes([c]) + b"\0" for c in b"0123456789")
ALIGN = 4                    # scripts/kallsyms.c's ALGN on a 32-bit kernel
CACHE_VERSION = "kallsyms-1"
MAX_SYMBOLS = 1 << 20       # far more than any kernel has (Debian's 686: ~45,000)


@dataclass(frozen=True)
class KernelSymbol:
    address: int
    type: str                # nm's letter: t/T text, w/W weak, d/D data, ...
    name: str


class KallsymsError(ValueError):
    """The kernel has no kallsyms tables this reader understands."""


def read_kallsyms(vmlinux: bytes) -> list[KernelSymbol]:
    """The symbols of an i386 vmlinux ELF, in kallsyms' order (by address)."""
    try:
        elf = ELFFile(io.BytesIO(vmlinux))
        regions = [(seg["p_vaddr"], seg.data()) for seg in elf.iter_segments()
                   if seg["p_type"] == "PT_LOAD" and seg["p_filesz"]]
    except (ELFError, struct.error, ValueError) as exc:
        raise KallsymsError(f"not an ELF vmlinux: {exc}") from None
    for vaddr, data in regions:
        found = _find_in(data, vaddr)
        if found is not None:
            return found
    raise KallsymsError("no kallsyms tables found (a kernel without CONFIG_KALLSYMS?)")


def _find_in(data: bytes, vaddr: int) -> list[KernelSymbol] | None:
    """The symbols whose tables lie in ``data`` (loaded at ``vaddr``), else None."""
    start = 0
    while (digits := data.find(DIGIT_TOKENS, start)) >= 0:
        start = digits + 1
        tables = _tables_around(data, vaddr, digits)
        if tables is not None:
            return tables
    return None


def _aligned(pos: int, vaddr: int) -> int:
    """``pos`` rounded up so that ``vaddr + pos`` is ALIGN-aligned."""
    return pos + (-(vaddr + pos) % ALIGN)


def _tables_around(data: bytes, vaddr: int, digits: int) -> list[KernelSymbol] | None:
    # token 0x30 ("0") starts at ``digits``: 0x30 NUL-terminated tokens precede it
    table = digits
    for _ in range(0x30):
        table = data.rfind(b"\0", 0, table - 1) + 1
        if table <= 0:
            return None
    if (vaddr + table) % ALIGN:
        return None
    tokens, index_at, pos = [], [], table
    for _ in range(256):
        end = data.find(b"\0", pos)
        if end < 0 or end == pos:
            return None
        tokens.append(data[pos:end])
        index_at.append(pos - table)
        pos = end + 1
    index = _aligned(pos, vaddr)
    if list(struct.unpack_from("<256H", data, index)) != index_at:
        return None
    found = _names_and_markers(data, vaddr, table)
    if found is None:
        return None
    names_at, count = found
    base, = struct.unpack_from("<I", data, names_at - 8)
    offsets = struct.unpack_from(f"<{count}I", data, names_at - 8 - 4 * count)
    if list(offsets) != sorted(offsets):
        return None
    symbols, pos = [], names_at
    for i in range(count):
        length, pos = _length(data, pos)
        text = b"".join(map(tokens.__getitem__, data[pos:pos + length])).decode("ascii",
                                                                                "replace")
        pos += length
        symbols.append(KernelSymbol((base + offsets[i]) & 0xFFFFFFFF, text[:1], text[1:]))
    return symbols


def _names_and_markers(data: bytes, vaddr: int, table: int) -> tuple[int, int] | None:
    """Where kallsyms_names starts and kallsyms_num_syms, given where the token table starts.

    In 6.1 as released the markers end at the token table; Debian's 6.1 (stable 6.1.y, as
    6.2 and later) has ``kallsyms_seqs_of_names`` between them, 3 bytes per symbol."""
    marks = _markers_before(data, table)
    if marks is not None:
        found = _names_before(data, vaddr, table, marks, None)
        if found is not None:
            return found
    markers_end = table - ALIGN
    while markers_end > 0 and table - markers_end <= 3 * MAX_SYMBOLS + 3:
        gap = table - markers_end
        # 3 * count bytes, padded: 3 * count <= gap <= 3 * count + 3
        for count in range(max(1, -(-(gap - 3) // 3)), gap // 3 + 1):
            groups = (count + 255) // 256
            first = markers_end - 4 * groups
            if first < 0 or data[first:first + 4] != b"\0\0\0\0":
                continue
            marks = _markers_before(data, markers_end)
            if marks is None or len(marks) != groups:
                continue
            found = _names_before(data, vaddr, markers_end, marks, count)
            if found is not None:
                return found
        markers_end -= ALIGN
    return None


def _markers_before(data: bytes, end: int) -> list[int] | None:
    """kallsyms_markers ending at ``end``: strictly decreasing u32 going backwards, down to
    the 0 that marks the first group."""
    marks, pos = [], end - 4
    while pos >= 0:
        value, = struct.unpack_from("<I", data, pos)
        if marks and value >= marks[-1]:
            return None
        marks.append(value)
        if value == 0:
            return marks[::-1]
        pos -= 4
    return None


def _length(data: bytes, pos: int) -> tuple[int, int]:
    """A name's length (ULEB128, one or two bytes since Linux 6.1) and where its tokens
    start."""
    length = data[pos]
    if length & 0x80:
        return (length & 0x7F) | (data[pos + 1] << 7), pos + 2
    return length, pos + 1


def _walk(data: bytes, pos: int, count: int, limit: int) -> int | None:
    """Where ``count`` names from ``pos`` end, or None when that would pass ``limit``."""
    for _ in range(count):
        if pos >= limit:
            return None
        length, pos = _length(data, pos)
        pos += length
    return pos if pos <= limit else None


def _names_before(data: bytes, vaddr: int, markers_end: int, marks: list[int],
                  count: int | None) -> tuple[int, int] | None:
    """Where kallsyms_names starts and kallsyms_num_syms (``count`` when known): the u32
    before the names, such that the names, walked, pass each marker and end (padded) where
    the markers start."""
    groups = len(marks)
    markers_at = markers_end - 4 * groups
    low, high = (count, count) if count else (256 * (groups - 1) + 1, 256 * groups)
    # the last group's names (at most 256 of at most 2 + 255 bytes) follow the last marker
    names_at = (markers_at - marks[-1]) & ~(ALIGN - 1)
    earliest = max(8, names_at - 256 * 257 - ALIGN)
    while names_at >= earliest:
        found, = struct.unpack_from("<I", data, names_at - 4)
        if low <= found <= high and 4 * found + 8 <= names_at \
                and (vaddr + names_at) % ALIGN == 0:
            end = _check_names(data, names_at, found, marks, markers_at)
            if end is not None and _aligned(end, vaddr) == markers_at:
                return names_at, found
        names_at -= ALIGN
    return None


def _check_names(data: bytes, names_at: int, count: int, marks: list[int],
                 limit: int) -> int | None:
    pos = names_at
    for group, mark in enumerate(marks):
        if pos != names_at + mark:
            return None
        pos = _walk(data, pos, min(256, count - 256 * group), limit)
        if pos is None:
            return None
    return pos


# -- the cache ---------------------------------------------------------------------------

def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/dbgvm/linux/symbols``, ~/.cache by default."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dbgvm" / "linux" / "symbols"


def kernel_symbols(kernel: bytes, vmlinux: Callable[[], bytes]) -> list[KernelSymbol]:
    """The kallsyms of ``kernel`` (a bzImage's or vmlinux's bytes), from the cache when
    there, else read from its vmlinux (``vmlinux()`` unpacks it) and cached; none for a
    kernel without kallsyms. LoadError from ``vmlinux()`` passes through."""
    digest = hashlib.sha256(kernel).hexdigest()
    path = cache_dir() / f"{digest}.txt"
    try:
        cached = _load(path.read_text("ascii"))
    except (OSError, ValueError):
        cached = None
    if cached is not None:
        return cached
    try:
        symbols = read_kallsyms(vmlinux())
    except KallsymsError:
        return []               # not cached: test kernels need not fill the cache
    _store(path, symbols)
    return symbols


def _load(text: str) -> list[KernelSymbol] | None:
    lines = text.splitlines()
    if not lines or lines[0] != CACHE_VERSION:
        return None
    out = []
    for line in lines[1:]:
        address, kind, name = line.split(" ", 2)
        out.append(KernelSymbol(int(address, 16), kind, name))
    return out


def _store(path: Path, symbols: Iterable[KernelSymbol]) -> None:
    """Write the cache file atomically; a cache that cannot be written is only a cost."""
    text = "\n".join([CACHE_VERSION, *(f"{s.address:08x} {s.type} {s.name}"
                                       for s in symbols)]) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text, "ascii")
        os.replace(tmp, path)
    except OSError:
        pass


def symbol_map(symbols: Iterable[KernelSymbol]) -> dict[str, int]:
    """name -> address; of a name that several static functions share, the first (lowest)
    address."""
    out: dict[str, int] = {}
    for sym in symbols:
        out.setdefault(sym.name, sym.address)
    return out
