"""``x``, ``xp``, ``setp``, ``disas``: guest memory, read without side effects (no accessed or
dirty bit set, no shadow fill), and written physically."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lark import Token

from ..errors import Problem, fail
from ..expr import Expr, start_column
from ..memory_view import Radix, Unit, dump
from .base import Command, CommandModule

if TYPE_CHECKING:
    from .interpreter import CommandInterpreter

MAX_UNITS = 4096
MAX_STRINGS = 64
DEFAULT_DISAS = 10
MAX_DISAS = 1000
_UNITS = {"b": Unit.BYTE, "h": Unit.HALF, "w": Unit.WORD}


@dataclass(frozen=True)
class Examine(Command):
    physical: bool
    radix: Radix
    unit: Unit
    address: Expr
    count: Expr | None = None
    fmt_count: int | None = None
    names = ("x", "xp")
    usage = "x[/FMT] ADDR [COUNT]   xp[/FMT] ADDR [COUNT]"
    help = ("Show COUNT units of guest memory at ADDR: 'x' virtual (through the guest's page "
            "tables, without touching A/D bits), 'xp' physical. FMT letters: x hex (default), "
            "d signed, u unsigned, c characters, s string; b bytes (default), h 16-bit, "
            "w 32-bit. COUNT defaults to 16 bytes' worth.")


@dataclass(frozen=True)
class SetPhysical(Command):
    address: Expr
    values: tuple[Expr, ...]
    names = ("setp",)
    usage = "setp ADDR BYTE..."
    help = "Write bytes to guest-physical memory."


@dataclass(frozen=True)
class Disas(Command):
    address: Expr | None = None
    count: Expr | None = None
    names = ("disas",)
    usage = "disas [ADDR] [N]"
    help = "Disassemble N (default 10) instructions at ADDR (default eip), with symbols."


def examine(m: CommandInterpreter, command: Examine) -> str:
    addr = m.address(command.address)
    column = start_column(command.address)
    if command.radix is Radix.STRING:
        strings = m.count(command.count, command.fmt_count or 1, MAX_STRINGS)
        return _strings(m, addr, strings, command.physical, column)
    default = command.fmt_count or max(1, 16 // int(command.unit))
    count = m.count(command.count, default, MAX_UNITS)
    size = count * int(command.unit)
    if command.physical:
        data = _physical(m, addr, size, column)
        return dump(data, addr, command.radix, command.unit)
    m.check_mapped(addr, size, column)
    data = m.machine.debug.read_virtual(addr, size)
    return dump(data, addr, command.radix, command.unit, m.vm.symbols)


def _physical(m: CommandInterpreter, addr: int, size: int, column: int) -> bytes:
    try:
        return m.machine.read_physical(addr, size)
    except ValueError:
        raise fail(Problem.OUTSIDE_RAM, column, addr=addr, size=size) from None


def _strings(m: CommandInterpreter, addr: int, count: int, physical: bool, column: int) -> str:
    out = []
    at = addr
    for _ in range(count):
        if physical:
            ram = m.machine.ram_size
            if not 0 <= at < ram:
                raise fail(Problem.OUTSIDE_RAM, column, addr=at, size=1)
            data = m.machine.read_physical(at, min(256, ram - at))
        else:
            m.check_mapped(at, 1, column)
            data = m.mapped_prefix(at, 256)
        end = data.find(b"\0")
        text = data if end < 0 else data[:end]
        label = "" if physical else m.vm.symbols.label(at)
        out.append(f"{at:08x}{label}: {text.decode('latin-1')!r}\n")
        at += len(text) + 1
    return "".join(out)


def set_physical(m: CommandInterpreter, command: SetPhysical) -> str:
    addr = m.value(command.address)
    values = []
    for expr in command.values:
        value = m.value(expr)
        if not 0 <= value <= 0xFF:
            raise fail(Problem.NOT_A_BYTE, start_column(expr), value=value)
        values.append(value)
    if addr < 0 or addr + len(values) > m.machine.ram_size:
        raise fail(Problem.OUTSIDE_RAM, start_column(command.address), addr=addr,
                   size=len(values))
    m.machine.write_physical(addr, bytes(values))
    return f"wrote {len(values)} bytes at physical {addr:#x}\n"


def disas(m: CommandInterpreter, command: Disas) -> str:
    addr = m.address(command.address) if command.address is not None else m.linear_eip()
    count = m.count(command.count, DEFAULT_DISAS, MAX_DISAS)
    if command.address is not None:
        m.check_mapped(addr, 1, start_column(command.address))

    def read(at: int, size: int) -> bytes | None:
        return m.mapped_prefix(at, size) or None
    lines = m.disassembler.lines(read, addr, count, m.vm.symbols, m.linear_eip())
    return "\n".join(lines) + "\n"


def _build_examine(children: list) -> Examine:
    which = children.pop(0)
    radix, unit, fmt_count = Radix.HEX, Unit.BYTE, None
    if children and isinstance(children[0], Token) and children[0].type == "FMT":
        fmt = children.pop(0)
        digits = re.match(r"\d*", fmt).group(0)
        if digits:
            fmt_count = int(digits)
        for offset, letter in enumerate(fmt[len(digits):], len(digits)):
            if letter in _UNITS:
                unit = _UNITS[letter]
            elif letter in "xduc s":
                radix = Radix(letter)
            else:
                raise fail(Problem.BAD_FORMAT, fmt.start_pos + offset, letter=letter)
    address = children[0]
    count = children[1] if len(children) > 1 else None
    if count is not None and fmt_count is not None:
        raise fail(Problem.COUNT_TWICE, start_column(count))
    return Examine(which == "xp", radix, unit, address, count, fmt_count)


MODULE = CommandModule(
    grammar='''
examine: (X | XP) ("/" FMT)? expr expr?
setp: "setp" expr expr+
disas: "disas" (expr expr?)?

X: "x"
XP: "xp"
FMT: /[0-9a-z]+/
''',
    rules=("examine", "setp", "disas"),
    builders={
        "examine": _build_examine,
        "setp": lambda children: SetPhysical(children[0], tuple(children[1:])),
        "disas": lambda children: Disas(*children),
    },
    handlers={Examine: examine, SetPhysical: set_physical, Disas: disas},
)
