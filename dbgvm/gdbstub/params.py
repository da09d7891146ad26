"""Packet parameters, parsed in one place from each handler's schema.

As in QEMU's gdbstub (each ``GdbCmdParseEntry`` carries a schema such as ``"L,L"``), a handler
table entry names the shape of its arguments and gets them parsed and range-checked before
it runs; a handler never sees a malformed or out-of-range number. A schema is a sequence of
field letters, each followed by the separator that ends it (the last field runs to the end of
the packet), a ``?`` after a field makes it optional (absent: None):

====  ========================================================================================
``a``  a guest address: hex, below 2**32 (the guest is 32-bit: 0x100000000 is no alias of 0)
``l``  the length of hex-encoded memory data (``m``, ``M``): at most MAX_PACKET / 2 bytes
``L``  the length of binary data or of a transfer (``X``, qXfer): at most MAX_PACKET bytes
``k``  a breakpoint kind or a watched length (``Z``/``z``): at most MAX_WATCH bytes
``o``  an offset (qXfer): below 2**32
``n``  a small number (``Z`` type): below 2**32
``r``  a register number: one of the target description's registers
``x``  hex-encoded bytes (an even number of hex digits)
``w``  raw bytes up to the separator (qXfer's object, operation and annex)
``b``  binary bytes, the rest of the packet (already unescaped by the framing)
``*``  the rest of the packet, raw: the handler parses it (vCont actions, thread ids, ...)
====  ========================================================================================

Numbers are 1 to 16 hex digits and nothing else: no sign, no ``0x``, no blanks, no ``_``
(Python's ``int(text, 16)`` takes all of those). An address followed by a length (``a,l``,
``a,L``, ``a,k``) must not run past 2**32. Anything else is a PacketError, answered ``E01``.
"""
from __future__ import annotations

import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import rsp
from .target_description import REGISTERS

MAX_WATCH = 0x1000            # the monitor's limit on a watched range too
ADDRESS_SPACE = 1 << 32
_HEX_NUMBER = re.compile(rb"[0-9a-fA-F]{1,16}")

# field letter -> exclusive upper bound of the number
_NUMBERS = {
    "a": ADDRESS_SPACE,
    "o": ADDRESS_SPACE,
    "n": ADDRESS_SPACE,
    "l": rsp.MAX_PACKET // 2 + 1,
    "L": rsp.MAX_PACKET + 1,
    "k": MAX_WATCH + 1,
    "r": len(REGISTERS),
}
_LENGTHS = frozenset("lLk")
_BYTES = frozenset("xwb*")
_REST = frozenset("b*")       # only ever last: they take the rest of the packet
SEPARATORS = frozenset(",:;=")


class PacketError(ValueError):
    """A malformed or impossible request; answered with an E packet."""


@dataclass(frozen=True)
class Field:
    kind: str
    optional: bool
    separator: bytes | None       # what ends it; None: the end of the packet


def compile_schema(schema: str) -> tuple[Field, ...]:
    fields: list[Field] = []
    i = 0
    while i < len(schema):
        kind = schema[i]
        if kind not in _NUMBERS and kind not in _BYTES:
            raise ValueError(f"schema {schema!r}: unknown field {kind!r}")
        i += 1
        optional = schema[i:i + 1] == "?"
        i += optional
        separator = None
        if i < len(schema):
            if schema[i] not in SEPARATORS:
                raise ValueError(f"schema {schema!r}: {schema[i]!r} is no separator")
            if kind in _REST:
                raise ValueError(f"schema {schema!r}: {kind!r} must be last")
            separator = schema[i].encode()
            i += 1
        fields.append(Field(kind, optional, separator))
    return tuple(fields)


def number(text: bytes, bound: int = ADDRESS_SPACE) -> int:
    if not _HEX_NUMBER.fullmatch(text):
        raise PacketError(f"bad hex number {text[:20]!r}")
    value = int(text, 16)
    if value >= bound:
        raise PacketError(f"{value:#x} is out of range")
    return value


def unhex(text: bytes) -> bytes:
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise PacketError("bad hex data") from None


def parse(fields: tuple[Field, ...], args: bytes) -> list[Any]:
    """The values of ``args`` by ``fields`` (PacketError when they do not fit)."""
    values: list[Any] = []
    rest = args
    for field in fields:
        if field.separator is None:
            text, rest = rest, b""
        else:
            text, found, rest = rest.partition(field.separator)
            if not found and not (field.optional and not text):
                raise PacketError(f"expected {field.separator.decode()!r}")
        if field.optional and not text:
            values.append(None)
        elif field.kind in _NUMBERS:
            values.append(number(text, _NUMBERS[field.kind]))
        elif field.kind == "x":
            values.append(unhex(text))
        else:
            values.append(text)
    if rest:
        raise PacketError("trailing characters")
    for (field, value), (after, length) in zip(zip(fields, values),
                                               zip(fields[1:], values[1:])):
        if field.kind == "a" and after.kind in _LENGTHS and value is not None \
                and length is not None and value + length > ADDRESS_SPACE:
            raise PacketError("the range runs past the end of the address space")
    return values


@dataclass(frozen=True)
class Command:
    """A handler table entry: the handler and the schema of its arguments."""

    schema: str
    handler: Callable[..., bytes | None]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_fields", compile_schema(self.schema))

    def __call__(self, args: bytes) -> bytes | None:
        return self.handler(*parse(self._fields, args))  # type: ignore[attr-defined]
