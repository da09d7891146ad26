"""What every monitor command module declares, and what the registry assembles from them.

A command module (pwndbg's layout: one module per command or tight family) holds, for its
commands, the typed command objects with their names, usage and help; the grammar fragment
that parses them and the builders that turn its parse tree into those objects; the handlers
that carry them out; and the completion of their arguments. registry.py puts the modules
together; nothing else lists commands.

Preconditions are declared on the command classes (``needs``, ``gdb_instead``) and checked
in one place, CommandInterpreter.execute, before the handler runs.
"""
from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .interpreter import CommandInterpreter


class Needs(enum.Flag):
    """What a command needs of the current VM before its handler may run."""

    NOTHING = 0
    RUNNABLE = enum.auto()       # the VM has not ended (a power-off, a triple fault...)
    HISTORY = enum.auto()        # the VM is the one with a recorded run to move in


@dataclass(frozen=True)
class Command:
    """A parsed command line. ``runs_guest``: it executes guest code (the prompt runs it in
    the background). ``while_running``: it is safe while the guest runs in another thread,
    because it never touches a Machine. ``gdb_instead``: refused through gdb's ``monitor``,
    naming gdb's own command (it would change the guest behind gdb's back).
    ``ends_session``: leaves the prompt, which through gdb is gdb's 'kill' or 'detach'."""

    names: ClassVar[tuple[str, ...]]
    usage: ClassVar[str]
    help: ClassVar[str]
    runs_guest: ClassVar[bool] = False
    while_running: ClassVar[bool] = False
    needs: ClassVar[Needs] = Needs.NOTHING
    gdb_instead: ClassVar[str | None] = None
    ends_session: ClassVar[bool] = False


Handler = Callable[["CommandInterpreter", Any], str]
"""Carries out one command on the monitor; returns the text to show."""

Builder = Callable[[list[Any]], Any]
"""Turns the children of one grammar rule (or alias) into a command or a part of one."""


@dataclass(frozen=True)
class CompletionRequest:
    """The words before the cursor (``words[0]`` the command word) and what the prompt can
    offer besides keywords: the current VM's symbols, every command's names."""

    words: Sequence[str]
    symbols: Sequence[str]
    command_names: Sequence[str]

    @property
    def position(self) -> int:
        """Which argument the cursor is in (0 the first)."""
        return len(self.words) - 1


Completer = Callable[[CompletionRequest], Sequence[str]]
"""What an argument position of a command offers."""


def keywords(*positions: Sequence[str] | None) -> Completer:
    """A completer offering fixed words per argument position (None: an expression, so the
    symbols), and the symbols past the last position."""
    def offer(request: CompletionRequest) -> Sequence[str]:
        index = request.position
        if index < len(positions) and positions[index] is not None:
            return positions[index]
        return request.symbols
    return offer


@dataclass(frozen=True)
class CommandModule:
    """One module's contribution. ``grammar``: lark rules, whose ``rules`` are alternatives
    of a command line; ``builders``: rule or alias name -> builder; ``handlers``: command
    class -> handler (every command class the builders make has one); ``completers``:
    command word -> completer (words without one complete symbols)."""

    grammar: str
    rules: tuple[str, ...]
    builders: Mapping[str, Builder]
    handlers: Mapping[type[Command], Handler]
    completers: Mapping[str, Completer] = field(default_factory=dict)
