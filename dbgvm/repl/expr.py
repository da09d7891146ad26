"""Monitor expressions: numbers, $registers, ELF symbols, + - * / and parentheses.

Parsing makes a tree of these nodes, each remembering the column it starts at, so that an
evaluation failure (an unknown symbol, a division by zero) can point the caret at the culprit.
Evaluation needs only a way to read a register and the symbol table: no Unicorn, no Machine.
"""
from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .errors import Problem, fail


class Op(str, enum.Enum):
    ADD = "+"
    SUB = "-"
    MUL = "*"
    DIV = "/"


@dataclass(frozen=True)
class Number:
    value: int
    column: int


@dataclass(frozen=True)
class Register:
    name: str                # without the $
    column: int


@dataclass(frozen=True)
class Symbol:
    name: str
    column: int


@dataclass(frozen=True)
class Binary:
    op: Op
    left: "Expr"
    right: "Expr"
    column: int


@dataclass(frozen=True)
class Negate:
    operand: "Expr"
    column: int


Expr = Number | Register | Symbol | Binary | Negate


@dataclass(frozen=True)
class Scope:
    """What names mean while evaluating: registers of the current VM and its symbols."""

    register: Callable[[str], int]
    symbols: Mapping[str, int]


def evaluate(expr: Expr, scope: Scope) -> int:
    """The value as a Python integer (callers mask to 32 bits where an address is meant).
    Division truncates toward zero, as in C."""
    match expr:
        case Number(value=value):
            return value
        case Register(name=name):
            return scope.register(name)
        case Symbol(name=name, column=column):
            if name not in scope.symbols:
                raise fail(Problem.UNKNOWN_SYMBOL, column, name=name)
            return scope.symbols[name]
        case Negate(operand=operand):
            return -evaluate(operand, scope)
        case Binary(op=op, left=left, right=right):
            a, b = evaluate(left, scope), evaluate(right, scope)
            if op is Op.ADD:
                return a + b
            if op is Op.SUB:
                return a - b
            if op is Op.MUL:
                return a * b
            if b == 0:
                raise fail(Problem.DIVISION_BY_ZERO, right.column)
            quotient = abs(a) // abs(b)
            return quotient if (a < 0) == (b < 0) else -quotient
    raise TypeError(f"not an expression: {expr!r}")


def start_column(expr: Expr) -> int:
    """Where the expression's text begins (a Binary's column is that of its operator)."""
    while isinstance(expr, Binary):
        expr = expr.left
    return expr.column
