"""Command lines to command objects: the lark grammar (monitor.lark) and what it means.

Everything a command line can get wrong is found here, before anything runs: syntax, unknown
registers, event kinds, catch arguments, format letters. So a command that parses has only
run-time reasons left to fail (an unmapped address, an unknown symbol, a running guest).
"""
from __future__ import annotations

import ast
import re
from functools import cache
from importlib import resources

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from ..core.debug import WatchKind
from ..core.events import EventKind
from ..core.guest_registers import READERS
from . import syntax as S
from .errors import CommandError, Problem, fail
from .expr import Binary, Negate, Number, Op, Register, Symbol, start_column

REGISTER_NAMES: frozenset[str] = frozenset(READERS)
PT_OPS = ("fill", "dirty", "flush", "zap", "invlpg", "reflect")
HAL_CHANNELS = ("system", "console", "block", "net")
_EXPR_START = {"NUMBER", "REGISTER", "NAME", "LPAR", "MINUS"}
_FRIENDLY = {"NUMBER": "a number", "REGISTER": "a $register", "NAME": "a symbol",
             "WORD": "a word", "FMT": "format letters", "REST": "text", "$END": "the end",
             "X": "'x'", "XP": "'xp'"}


@cache
def _lark() -> Lark:
    grammar = resources.files(__package__).joinpath("monitor.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def _describe_expected(expected: set[str]) -> str:
    names = set(expected)
    words = []
    if _EXPR_START <= names:
        names -= _EXPR_START
        words.append("an expression")
    patterns = {t.name: t.pattern for t in _lark().terminals}
    for name in sorted(names):
        pattern = patterns.get(name)
        if name in _FRIENDLY:
            words.append(_FRIENDLY[name])
        elif pattern is not None and pattern.type == "str":
            words.append(repr(pattern.value))
        else:
            words.append(name.lower())
    return " or ".join(words) if len(words) <= 2 else ", ".join(words[:-1]) + " or " + words[-1]


def _first_word(line: str) -> tuple[str, int]:
    match = re.match(r"\s*([^\s/]*)", line)
    assert match is not None
    return match.group(1), match.start(1)


def parse(line: str) -> S.Command | None:
    """The command on this line (None for an empty line or a comment); CommandError says
    what is wrong and where."""
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    word, column = _first_word(line)
    if word not in S.COMMAND_WORDS:
        raise fail(Problem.UNKNOWN_COMMAND, column, word=word, line=line.strip())
    try:
        tree = _lark().parse(line)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, line) from None
    try:
        return _Build().transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, CommandError):
            raise exc.orig_exc from None
        raise


def _syntax_error(exc: UnexpectedInput, line: str) -> CommandError:
    if isinstance(exc, UnexpectedCharacters):
        return fail(Problem.BAD_CHARACTER, exc.pos_in_stream, found=line[exc.pos_in_stream])
    if isinstance(exc, UnexpectedEOF):
        return fail(Problem.UNEXPECTED_END, len(line.rstrip()),
                    expected=_describe_expected(set(exc.expected)))
    assert isinstance(exc, UnexpectedToken)
    expected = set(exc.accepts or exc.expected)
    if exc.token.type == "$END":
        return fail(Problem.UNEXPECTED_END, len(line.rstrip()),
                    expected=_describe_expected(expected))
    if exc.token.type == "REST":
        # only the catch-all terminal matched: a character that belongs nowhere
        return fail(Problem.BAD_CHARACTER, exc.token.start_pos, found=exc.token[0])
    return fail(Problem.UNEXPECTED_TOKEN, exc.token.start_pos, found=str(exc.token),
                expected=_describe_expected(expected))


def _number(token: Token) -> int:
    """Hex with 0x, else decimal (a leading zero does not mean octal)."""
    return int(token, 16) if token[:2].lower() == "0x" else int(token, 10)


def _unescape(text: str, column: int) -> bytes:
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


class _Build(Transformer):
    """Parse tree -> command objects and expressions (validating names on the way)."""

    # -- expressions ------------------------------------------------------------------------
    def number(self, children: list[Token]) -> Number:
        return Number(_number(children[0]), children[0].start_pos)

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

    def _binary(op: Op):  # noqa: N805 - a method factory
        @v_args(meta=True)
        def build(self, meta, children) -> Binary:
            left, right = children
            return Binary(op, left, right, meta.start_pos)
        return build

    add, sub, mul, div = (_binary(Op.ADD), _binary(Op.SUB), _binary(Op.MUL), _binary(Op.DIV))

    # -- commands ---------------------------------------------------------------------------
    def start(self, children):
        return children[0] if children else None

    def on(self, _):
        return True

    def off(self, _):
        return False

    def continue_(self, _):
        return S.Continue()

    def step(self, children):
        return S.Step(children[0] if children else None)

    def rstep(self, children):
        return S.ReverseStep(children[0] if children else None)

    def rcontinue(self, _):
        return S.ReverseContinue()

    def goto(self, children):
        return S.Goto(children[0])

    def stop(self, _):
        return S.StopCommand()

    def break_(self, children):
        return S.Break(children[0])

    def delete(self, children):
        if not children:
            return S.Delete()
        return S.Delete(_number(children[0]), children[0].start_pos)

    def info(self, children):
        return children[0] if children else S.Info()

    def info_breakpoints(self, _):
        return S.InfoBreakpoints()

    # QEMU's `info` views, as the monitor's own commands
    def info_registers(self, _):
        return S.Regs()

    def info_tlb(self, _):
        return S.PtPages()

    def info_mem(self, _):
        return S.PtMap()

    def info_pic(self, _):
        return S.PicCommand()

    def watch_read(self, _):
        return WatchKind.READ

    def watch_write(self, _):
        return WatchKind.WRITE

    def watch_access(self, _):
        return WatchKind.ACCESS

    def watch(self, children):
        kind = children.pop(0) if isinstance(children[0], WatchKind) else WatchKind.WRITE
        return S.Watch(kind, *children)

    def catch(self, children: list[Token]):
        if not children:
            return S.Catch()
        word = children[0]
        try:
            kind = S.CatchKind(str(word))
        except ValueError:
            raise fail(Problem.CATCH_KIND, word.start_pos, name=str(word)) from None
        if len(children) == 1:
            return S.Catch(kind)
        arg = children[1]
        if kind in (S.CatchKind.TRAP, S.CatchKind.IRQ):
            try:
                vector = int(arg, 0)
            except ValueError:
                vector = -1
            if not 0 <= vector <= 255:
                raise fail(Problem.CATCH_VECTOR, arg.start_pos, kind=kind.value, text=str(arg))
            return S.Catch(kind, vector=vector)
        if kind is S.CatchKind.PT:
            if arg not in PT_OPS:
                raise fail(Problem.PT_OP, arg.start_pos, name=str(arg))
            return S.Catch(kind, name=str(arg))
        if kind is S.CatchKind.HAL:
            if arg not in HAL_CHANNELS:
                raise fail(Problem.HAL_CHANNEL, arg.start_pos, name=str(arg))
            return S.Catch(kind, name=str(arg))
        if kind is S.CatchKind.SYSCALL:
            # a number, or a name of the guest's table (Linux: execve, openat, ...)
            try:
                return S.Catch(kind, vector=int(arg, 0))
            except ValueError:
                return S.Catch(kind, name=str(arg))
        raise fail(Problem.CATCH_ARGUMENT, arg.start_pos, kind=kind.value)

    def uncatch(self, _):
        return S.Uncatch()

    def trace(self, children):
        if not children:
            return S.Trace()
        on = children[0]
        if len(children) == 1:
            if on:
                raise fail(Problem.UNEXPECTED_END, 8, expected="event kinds (or 'all')")
            return S.Trace(False, frozenset(EventKind))
        return S.Trace(on, _kinds(children[1]))

    def events(self, children):
        kind = last = None
        for child in children:
            if isinstance(child, Token) and child.type == "WORD":
                kinds = _kinds(child)
                if len(kinds) != 1:
                    raise fail(Problem.UNKNOWN_KIND, child.start_pos, name=str(child))
                kind = next(iter(kinds))
            else:
                last = child
        return S.Events(kind, last)

    def regs(self, _):
        return S.Regs()

    def set(self, children):
        token, value = children
        name = token.lstrip("$").lower()
        if name not in REGISTER_NAMES:
            raise fail(Problem.UNKNOWN_REGISTER, token.start_pos, name=token.lstrip("$"))
        return S.SetRegister(name, value, token.start_pos)

    def examine(self, children):
        which = children.pop(0)
        radix, unit, fmt_count = S.Radix.HEX, S.Unit.BYTE, None
        if children and isinstance(children[0], Token) and children[0].type == "FMT":
            fmt = children.pop(0)
            digits = re.match(r"\d*", fmt).group(0)
            if digits:
                fmt_count = int(digits)
            for offset, letter in enumerate(fmt[len(digits):], len(digits)):
                if letter in "bhw":
                    unit = {"b": S.Unit.BYTE, "h": S.Unit.HALF, "w": S.Unit.WORD}[letter]
                elif letter in "xduc s":
                    radix = S.Radix(letter)
                else:
                    raise fail(Problem.BAD_FORMAT, fmt.start_pos + offset, letter=letter)
        address = children[0]
        count = children[1] if len(children) > 1 else None
        if count is not None and fmt_count is not None:
            raise fail(Problem.COUNT_TWICE, start_column(count))
        return S.Examine(which == "xp", radix, unit, address, count, fmt_count)

    def disas(self, children):
        return S.Disas(*children)

    def pt_walk(self, children):
        return S.PtWalk(children[0])

    def pt_stats(self, _):
        return S.PtStats()

    def pt_map(self, _):
        return S.PtMap()

    def pt_pages(self, _):
        return S.PtPages()

    def gdt(self, _):
        return S.Gdt()

    def idt(self, _):
        return S.Idt()

    def tss(self, _):
        return S.Tss()

    def pic(self, _):
        return S.PicCommand()

    def pit(self, _):
        return S.PitCommand()

    def hal(self, _):
        return S.HalStats()

    def quit(self, _):
        return S.Quit()

    def help(self, children):
        if not children:
            return S.Help()
        topic = " ".join(children)
        if not S.lookup(topic):
            raise fail(Problem.UNKNOWN_TOPIC, children[0].start_pos, name=topic)
        return S.Help(topic)

    def vm(self, children):
        if not children:
            return S.Vm()
        return S.Vm(_number(children[0]), children[0].start_pos)

    def send(self, children):
        text = children[0].rstrip()
        if text[:1] in ("'", '"'):
            return S.Send(_unescape(text, children[0].start_pos))
        return S.Send(text.encode("utf-8") + b"\n")

    def setp(self, children):
        return S.SetPhysical(children[0], tuple(children[1:]))

    def step_irqs(self, children):
        return S.StepIrqs(children[0])


# lark names rules after keywords; these collide with Python's
setattr(_Build, "continue", _Build.continue_)
setattr(_Build, "break", _Build.break_)


def _kinds(token: Token) -> frozenset[EventKind]:
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
