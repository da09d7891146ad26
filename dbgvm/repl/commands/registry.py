"""The one list of command modules, and what is assembled from it: the grammar, the parse-tree
builder, the handlers, the help topics and the completion of arguments.

Adding a command is adding a module to MODULES; the registry refuses (at import) two modules
claiming the same builder or completed command word, and tests/test_command_registry.py that
a command class has no handler or cannot be reached.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from ..arguments import GRAMMAR, ExpressionBuilder
from . import (
    breakpoints,
    catch,
    devices,
    help,
    memory,
    paging,
    registers,
    reverse,
    running,
    session,
    tables,
    tracing,
)
from .base import Command, CommandModule, Completer, Handler

MODULES: tuple[CommandModule, ...] = (
    running.MODULE, reverse.MODULE, breakpoints.MODULE, catch.MODULE, tracing.MODULE,
    registers.MODULE, memory.MODULE, paging.MODULE, tables.MODULE, devices.MODULE,
    session.MODULE, help.MODULE)


@dataclass(frozen=True)
class Registry:
    """Everything the parser, the monitor, help and completion know of the commands."""

    modules: tuple[CommandModule, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for module in self.modules:
            clash = seen & set(module.builders)
            if clash:
                raise ValueError(f"builders claimed twice: {sorted(clash)}")
            seen |= set(module.builders)
        words = [word for module in self.modules for word in module.completers]
        if len(words) != len(set(words)):
            raise ValueError("a command word completed by two modules")

    @cached_property
    def handlers(self) -> dict[type[Command], Handler]:
        """Command class -> its handler (what CommandInterpreter.execute calls)."""
        table: dict[type[Command], Handler] = {}
        for module in self.modules:
            table.update(module.handlers)
        return table

    @cached_property
    def commands(self) -> tuple[type[Command], ...]:
        """Every command class, in the order ``help`` lists them."""
        return tuple(self.handlers)

    @cached_property
    def command_words(self) -> frozenset[str]:
        """Every word that can start a command."""
        return frozenset(name.split()[0] for cls in self.commands for name in cls.names)

    @cached_property
    def command_names(self) -> tuple[str, ...]:
        """Every name of every command ('info breakpoints' included)."""
        return tuple(name for cls in self.commands for name in cls.names)

    def handler(self, command: type[Command]) -> Handler:
        return self.handlers[command]

    def lookup(self, topic: str) -> list[type[Command]]:
        """The commands a help topic names ('x', 'c', 'pt', 'info breakpoints')."""
        topic = " ".join(topic.split())
        exact = [cls for cls in self.commands if topic in cls.names]
        return exact or [cls for cls in self.commands
                         if any(n.split()[0] == topic for n in cls.names)]

    @cached_property
    def grammar(self) -> str:
        """The whole lark grammar: a line is one command of one module's rules."""
        rules = [rule for module in self.modules for rule in module.rules]
        return "\n".join(["start: command?", "?command: " + "\n        | ".join(rules), "",
                          *(module.grammar.strip() + "\n" for module in self.modules),
                          GRAMMAR])

    @cached_property
    def builder(self) -> type[ExpressionBuilder]:
        """The transformer from parse trees to commands: the expression builder plus every
        module's builders, under their rule names (``continue``, ``break``... included)."""
        methods = {name: _method(build) for module in self.modules
                   for name, build in module.builders.items()}
        return type("CommandBuilder", (ExpressionBuilder,), methods)

    @cached_property
    def completers(self) -> Mapping[str, Completer]:
        return {word: completer for module in self.modules
                for word, completer in module.completers.items()}

    def completer(self, word: str) -> Completer | None:
        return self.completers.get(word)


def _method(build):
    def transform(self, children: Sequence) -> object:
        return build(list(children))
    return transform


REGISTRY = Registry(MODULES)
