"""What every command's grammar and builders share (commands/*.py have the rest): the
expression grammar and the terminals, tokens of a command line to values, expressions to Expr
trees."""
from __future__ import annotations

import ast

from lark import Token, Transformer, v_args

from ..core.events import EventKind
from ..core.guest_registers import READERS
from .errors import Problem, fail
from .expr import Binary, Negate, Number, Op, Register, Symbol

REGISTER_NAMES: frozenset[str] = frozenset(READERS)

GRAMMAR = r"""
// What the monitor's command grammars share (docs/monitor.md); registry.py puts `start` and
// `?command` (one alternative per command rule) and each command module's rules before it.
// Parsed with LALR and a contextual lexer, so a keyword is only a keyword where the grammar
// expects one: `x x` examines the symbol x. A shift/reduce conflict makes `x foo -4` mean
// `x (foo-4)`; write `x foo (-4)` for a negative count.

on_off: "on" -> on
      | "off" -> off

// Expressions: + - * / with the usual precedence, unary minus, parentheses.
?expr: sum
?sum: product
    | sum "+" product -> add
    | sum "-" product -> sub
?product: unary
        | product "*" unary -> mul
        | product "/" unary -> div
?unary: atom
      | "-" unary -> neg
?atom: NUMBER -> number
     | REGISTER -> register
     | NAME -> symbol
     | "(" sum ")"

NUMBER: /0[xX][0-9a-fA-F]+|[0-9]+/
REGISTER: /\$[A-Za-z_][A-Za-z0-9_]*/
NAME: /[A-Za-z_.][A-Za-z0-9_.]*/
WORD: /[A-Za-z0-9_.,:-]+/

%ignore /[ \t]+/
"""


def number(token: Token) -> int:
    """Hex with 0x, else decimal (a leading zero does not mean octal)."""
    return int(token, 16) if token[:2].lower() == "0x" else int(token, 10)


def unescape(text: str, column: int) -> bytes:
    """A quoted string with Python's escapes, as bytes (latin-1 when it fits)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise fail(Problem.BAD_STRING, column, detail=str(exc).split(" (")[0]) from None
    if not isinstance(value, str):
        raise fail(Problem.BAD_STRING, column, detail="not a string")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def event_kinds(token: Token) -> frozenset[EventKind]:
    """``vif,irq`` or ``all``; UNKNOWN_KIND points at the first unknown one."""
    if token == "all":
        return frozenset(EventKind)
    kinds = set()
    offset = 0
    for part in str(token).split(","):
        if part:
            try:
                kinds.add(EventKind(part))
            except ValueError:
                raise fail(Problem.UNKNOWN_KIND, token.start_pos + offset, name=part) from None
        offset += len(part) + 1
    if not kinds:
        raise fail(Problem.UNKNOWN_KIND, token.start_pos, name=str(token))
    return frozenset(kinds)


def _binary(op: Op):
    @v_args(meta=True)
    def build(self, meta, children) -> Binary:
        left, right = children
        return Binary(op, left, right, meta.start_pos)
    return build


class ExpressionBuilder(Transformer):
    """The rules of GRAMMAR: expressions (validating register names) and on/off. The
    registry derives the command builder from it, adding each command module's builders."""

    def number(self, children: list[Token]) -> Number:
        return Number(number(children[0]), children[0].start_pos)

    def register(self, children: list[Token]) -> Register:
        token = children[0]
        name = token[1:].lower()
        if name not in REGISTER_NAMES:
            raise fail(Problem.UNKNOWN_REGISTER, token.start_pos, name=token[1:])
        return Register(name, token.start_pos)

    def symbol(self, children: list[Token]) -> Symbol:
        return Symbol(str(children[0]), children[0].start_pos)

    @v_args(meta=True)
    def neg(self, meta, children) -> Negate:
        return Negate(children[0], meta.start_pos)

    add, sub, mul, div = (_binary(Op.ADD), _binary(Op.SUB), _binary(Op.MUL), _binary(Op.DIV))

    def start(self, children):
        return children[0] if children else None

    def on(self, _):
        return True

    def off(self, _):
        return False
