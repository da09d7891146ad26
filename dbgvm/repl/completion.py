"""What the prompt knows about the language: Tab completion and highlighting.

Completion offers what the grammar accepts at the cursor: command words first, then the
arguments of the command (each command module's completer: event kinds, catch kinds, pt ops,
on/off, ...), $registers after a ``$``, and the kernel's symbols wherever an expression may
go. Highlighting marks the command word (red when unknown), numbers, registers and known
symbols.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.lexers import Lexer
from prompt_toolkit.styles import Style

from .arguments import REGISTER_NAMES
from .commands.base import CompletionRequest
from .commands.registry import REGISTRY

if TYPE_CHECKING:
    from .commands import CommandInterpreter

STYLE = Style.from_dict({
    "command": "bold ansicyan",
    "error": "ansired",
    "number": "ansiyellow",
    "register": "ansigreen",
    "symbol": "ansimagenta",
    "bottom-toolbar": "reverse",
})


class MonitorCompleter(Completer):
    def __init__(self, monitor: "CommandInterpreter") -> None:
        self._monitor = monitor

    def _candidates(self, words: list[str], current: str) -> Iterable[str]:
        if not words:
            return sorted(REGISTRY.command_words)
        if current.startswith("$"):
            return ["$" + name for name in sorted(REGISTER_NAMES)]
        symbols = sorted(self._monitor.vm.symbols.by_name)
        completer = REGISTRY.completer(words[0])
        if completer is None:
            return symbols
        return completer(CompletionRequest(words, symbols, REGISTRY.command_names))

    def get_completions(self, document: Document, complete_event: CompleteEvent
                        ) -> Iterable[Completion]:
        before = document.text_before_cursor
        match = re.search(r"[^\s,+\-*/()=]*$", before)
        current = match.group(0) if match else ""
        head = before[:len(before) - len(current)]
        words = head.split()
        if head.endswith(",") and words:
            words[-1] += ","          # still inside a comma list of the same argument
        if words and "/" in words[0]:
            words[0] = words[0].split("/")[0]
        for candidate in self._candidates(words, current):
            if candidate.startswith(current):
                yield Completion(candidate, start_position=-len(current))


_TOKEN = re.compile(r"(?P<space>\s+)|(?P<number>0[xX][0-9a-fA-F]+|\d+)|"
                    r"(?P<register>\$\w+)|(?P<word>[A-Za-z_.][\w.\-]*)|(?P<other>.)")


class MonitorLexer(Lexer):
    def __init__(self, monitor: "CommandInterpreter") -> None:
        self._monitor = monitor

    def lex_document(self, document: Document):
        lines = document.lines

        def line_fragments(number: int):
            line = lines[number] if number < len(lines) else ""
            fragments = []
            first = True
            for match in _TOKEN.finditer(line):
                kind, text = match.lastgroup, match.group(0)
                style = ""
                if kind == "word" and first:
                    style = "class:command" if text in REGISTRY.command_words else "class:error"
                elif kind == "number":
                    style = "class:number"
                elif kind == "register":
                    known = text[1:].lower() in REGISTER_NAMES
                    style = "class:register" if known else "class:error"
                elif kind == "word" and text in self._monitor.vm.symbols.by_name:
                    style = "class:symbol"
                if kind != "space":
                    first = False
                fragments.append((style, text))
            return fragments
        return line_fragments
