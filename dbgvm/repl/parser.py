"""Command lines to command objects: the grammar the registry assembles from the command
modules (commands/registry.py), and the builders that give it meaning.

Everything a command line can get wrong is found here, before anything runs: syntax, unknown
registers, event kinds, catch arguments, format letters. So a command that parses has only
run-time reasons left to fail (an unmapped address, an unknown symbol, a running guest).
"""
from __future__ import annotations

import re
from functools import cache

from lark import Lark
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from .commands.base import Command
from .commands.registry import REGISTRY
from .errors import CommandError, Problem, fail

_EXPR_START = {"NUMBER", "REGISTER", "NAME", "LPAR", "MINUS"}
_FRIENDLY = {"NUMBER": "a number", "REGISTER": "a $register", "NAME": "a symbol",
             "WORD": "a word", "FMT": "format letters", "REST": "text", "$END": "the end",
             "X": "'x'", "XP": "'xp'"}


@cache
def _lark() -> Lark:
    return Lark(REGISTRY.grammar, parser="lalr", propagate_positions=True,
                maybe_placeholders=False)


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


def parse(line: str) -> Command | None:
    """The command on this line (None for an empty line or a comment); CommandError says
    what is wrong and where."""
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    word, column = _first_word(line)
    if word not in REGISTRY.command_words:
        raise fail(Problem.UNKNOWN_COMMAND, column, word=word, line=line.strip())
    try:
        tree = _lark().parse(line)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, line) from None
    try:
        return REGISTRY.builder().transform(tree)
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
