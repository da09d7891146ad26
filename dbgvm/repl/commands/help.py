"""``help``: the command list, or one command explained, from the registry's commands (so a
command cannot exist without help), fitting an 80-column terminal."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import Problem, fail
from .base import Command, CommandModule, CompletionRequest

if TYPE_CHECKING:
    from .interpreter import CommandInterpreter

HELP_WIDTH = 79                 # help fits an 80-column terminal, broken between words
HELP_USAGE_WIDTH = 30           # the usage column of the command list


@dataclass(frozen=True)
class Help(Command):
    topic: str | None = None
    names = ("help",)
    usage = "help [COMMAND]"
    help = "List the commands, or explain one."
    while_running = True


def summary(command: type[Command]) -> str:
    """The first sentence of a command's help: its line in the command list."""
    return command.help.split(". ")[0].rstrip(".")


def help_(m: CommandInterpreter, command: Help) -> str:
    if command.topic is None:
        lines = []
        for cls in m.registry.commands:
            if len(cls.usage) + 2 > HELP_USAGE_WIDTH:     # the usage on a line of its own
                lines.append(cls.usage)
                first = " " * HELP_USAGE_WIDTH
            else:
                first = f"{cls.usage:<{HELP_USAGE_WIDTH}}"
            lines += textwrap.wrap(summary(cls), HELP_WIDTH, initial_indent=first,
                                   subsequent_indent=" " * HELP_USAGE_WIDTH,
                                   break_long_words=False, break_on_hyphens=False)
        return "\n".join(lines) + "\nhelp COMMAND explains one; docs/monitor.md has more.\n"
    out = []
    for cls in m.registry.lookup(command.topic):
        aliases = [n for n in cls.names if not (cls.usage + " ").startswith(n + " ")]
        alias = f" (also: {', '.join(aliases)})" if aliases else ""
        out.append("\n".join(textwrap.wrap(cls.usage + alias, HELP_WIDTH,
                                            subsequent_indent="    ")) + "\n" +
                   textwrap.fill(cls.help, HELP_WIDTH, initial_indent="  ",
                                 subsequent_indent="  ", break_long_words=False,
                                 break_on_hyphens=False))
    return "\n".join(out) + "\n"


def _build_help(children: list) -> Help:
    # the registry lists this module: it is complete only once this module is loaded
    from .registry import REGISTRY
    if not children:
        return Help()
    topic = " ".join(children)
    if not REGISTRY.lookup(topic):
        raise fail(Problem.UNKNOWN_TOPIC, children[0].start_pos, name=topic)
    return Help(topic)


def _complete_help(request: CompletionRequest):
    if request.position == 0:
        return sorted({name.split()[0] for name in request.command_names})
    return request.symbols


MODULE = CommandModule(
    grammar='''
help: "help" WORD*
''',
    rules=("help",),
    builders={"help": _build_help},
    handlers={Help: help_},
    completers={"help": _complete_help},
)
