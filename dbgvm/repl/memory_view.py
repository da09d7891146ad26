"""Guest memory as text: dumps for ``x``/``xp`` and disassembly for ``disas``.

Both work on bytes already read (through the debugger's side-effect-free accessors), so they
never touch guest state.
"""
from __future__ import annotations

import enum
import re
import struct
from collections.abc import Callable

from capstone import CS_ARCH_X86, CS_GRP_CALL, CS_GRP_JUMP, CS_MODE_32, Cs
from capstone.x86 import X86_OP_IMM

from .symbols import SymbolTable


class Unit(enum.IntEnum):
    """The size of one unit of a dump (gdb's b, h, w)."""

    BYTE = 1
    HALF = 2
    WORD = 4


class Radix(str, enum.Enum):
    """How a dump shows its units (gdb's x, d, u, c, s)."""

    HEX = "x"
    SIGNED = "d"
    UNSIGNED = "u"
    CHAR = "c"
    STRING = "s"


PER_LINE = {Unit.BYTE: 16, Unit.HALF: 8, Unit.WORD: 4}
_FORMATS = {Unit.BYTE: "B", Unit.HALF: "H", Unit.WORD: "I"}
MAX_INSN = 15


def dump(data: bytes, start: int, radix: Radix, unit: Unit,
         symbols: SymbolTable | None = None) -> str:
    """Lines of ``ADDR[ <sym>]: unit unit ...``; ``s`` shows NUL-terminated strings."""
    if radix is Radix.STRING:
        return _strings(data, start, symbols)
    per_line = 16 if radix is Radix.CHAR else PER_LINE[unit]
    step = 1 if radix is Radix.CHAR else int(unit)
    lines = []
    for off in range(0, len(data), per_line * step):
        chunk = data[off:off + per_line * step]
        label = symbols.label(start + off) if symbols else ""
        if radix is Radix.CHAR:
            cells = [_char(b) for b in chunk]
        else:
            values = struct.unpack(f"<{len(chunk) // step}{_FORMATS[unit]}", chunk)
            cells = [_cell(v, radix, unit) for v in values]
        lines.append(f"{start + off:08x}{label}: " + " ".join(cells))
    return "\n".join(lines) + "\n"


def _cell(value: int, radix: Radix, unit: Unit) -> str:
    bits = 8 * int(unit)
    if radix is Radix.HEX:
        return f"{value:0{2 * int(unit)}x}"
    if radix is Radix.SIGNED:
        return str(value - (1 << bits) if value >> (bits - 1) else value)
    return str(value)


def _char(byte: int) -> str:
    text = chr(byte)
    if 0x20 <= byte < 0x7F:
        return f"'{text}'"
    return {0: "'\\0'", 9: "'\\t'", 10: "'\\n'", 13: "'\\r'"}.get(byte, f"'\\x{byte:02x}'")


def _strings(data: bytes, start: int, symbols: SymbolTable | None) -> str:
    lines = []
    offset = 0
    while offset < len(data):
        end = data.find(b"\0", offset)
        end = len(data) if end < 0 else end
        text = data[offset:end].decode("latin-1")
        label = symbols.label(start + offset) if symbols else ""
        lines.append(f"{start + offset:08x}{label}: {text!r}"[:200])
        offset = end + 1
    return "\n".join(lines) + "\n"


ReadBytes = Callable[[int, int], bytes | None]


class Disassembler:
    """Capstone in 32-bit mode with symbol annotations for branch targets and addresses."""

    def __init__(self) -> None:
        self._cs = Cs(CS_ARCH_X86, CS_MODE_32)
        self._cs.detail = True

    def lines(self, read: ReadBytes, addr: int, count: int, symbols: SymbolTable,
              current: int | None) -> list[str]:
        out = []
        for _ in range(count):
            code = read(addr, MAX_INSN)
            if code is None:
                out.append(f"   {addr:#010x}: (not mapped)")
                break
            insn = next(self._cs.disasm(code, addr, 1), None)
            marker = "=> " if addr == current else "   "
            where = symbols.address(addr)
            if insn is None:
                out.append(f"{marker}{where}:  (bad)  .byte {code[0]:#04x}")
                addr += 1
                continue
            text = f"{insn.mnemonic} {insn.op_str}".strip()
            out.append(f"{marker}{where}:  {text}{self._annotation(insn, symbols)}")
            addr += insn.size
        return out

    def first(self, code: bytes, addr: int) -> tuple[str, int] | None:
        insn = next(self._cs.disasm(code, addr, 1), None)
        return None if insn is None else (f"{insn.mnemonic} {insn.op_str}".strip(), insn.size)

    @staticmethod
    def _annotation(insn, symbols: SymbolTable) -> str:
        if insn.group(CS_GRP_JUMP) or insn.group(CS_GRP_CALL):
            imms = [op.imm for op in insn.operands if op.type == X86_OP_IMM]
            if imms:
                return symbols.label(imms[0] & 0xFFFFFFFF)
            return ""
        for text in re.findall(r"0x[0-9a-f]+", insn.op_str):
            name = symbols.exact(int(text, 16))
            if name is not None:
                return f" <{name}>"
        return ""
