"""Every way a monitor command can fail, as one catalogue of one-line messages.

A failing command prints one line saying what went wrong, and a caret under the place in the
command where it went wrong; it changes nothing. Keeping the messages in one enum lets the
tests prove that each of them can be produced, and keeps their wording consistent.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ..core.events import EventKind
from ..core.shadow_mmu import PtOp
from ..hal.abi import Channel

KIND_NAMES = ", ".join(k.value for k in EventKind)
PT_OP_NAMES = ", ".join(op.value for op in PtOp)
HAL_CHANNEL_NAMES = ", ".join(channel.name.lower() for channel in Channel)


class Problem(enum.Enum):
    """Message templates (``str.format`` fields come from CommandError.params)."""

    # the command does not parse
    UNKNOWN_COMMAND = ("unknown command {word!r} (try 'help'; to type it into the guest: "
                       "send {line})")
    UNEXPECTED_TOKEN = "unexpected {found!r}; expected {expected}"
    UNEXPECTED_END = "the command ends too soon; expected {expected}"
    BAD_CHARACTER = "unexpected character {found!r}"
    UNKNOWN_REGISTER = "no register named {name!r}"
    UNKNOWN_KIND = "unknown event kind {name!r} (known: " + KIND_NAMES + ", all)"
    CATCH_KIND = "cannot catch {name!r} ({kinds})"
    CATCH_ARGUMENT = "catch {kind} takes no argument"
    CATCH_VECTOR = "catch {kind} wants a vector number 0..255, not {text!r}"
    PT_OP = "unknown pt op {name!r} (" + PT_OP_NAMES + ")"
    HAL_CHANNEL = "unknown HAL channel {name!r} (" + HAL_CHANNEL_NAMES + ")"
    BAD_FORMAT = "bad format letter {letter!r} (formats x d u c s, sizes b h w)"
    COUNT_TWICE = "the count is given twice (in the format and after the address)"
    BAD_STRING = "bad string: {detail}"
    UNKNOWN_TOPIC = "no command named {name!r} (try 'help')"
    # the command parses but cannot be carried out
    UNKNOWN_SYMBOL = "no symbol named {name!r}"
    DIVISION_BY_ZERO = "division by zero"
    UNMAPPED = "virtual address {addr:#x} is not mapped"
    OUTSIDE_RAM = "physical range {addr:#x}+{size:#x} is outside guest RAM"
    NOT_A_BYTE = "{value:#x} does not fit in a byte"
    BAD_COUNT = "the count must be 1..{limit}, not {value}"
    NO_BREAKPOINT = "no breakpoint number {number}"
    REGISTER_WRITE = "{detail}"
    BUSY = "the guest is running: 'stop' it (or press Ctrl-C) first"
    NOT_RUNNING = "the guest is not running"
    ENDED = "the guest has ended ({reason}): there is nothing more to run"
    NO_VM = "there is no VM {index} (VMs 0..{last})"
    NO_CONSOLE_INPUT = "this VM takes no console input here"
    NO_HISTORY = "going backwards needs a recorded run: use `dbgvm replay FILE`"
    NOT_THE_RECORDED_VM = "only VM {index} has a recorded run to go back in ('vm {index}')"
    OUTSIDE_HISTORY = "icount {value} is outside the recorded run (0..{end})"
    BEHIND_GDBS_BACK = ("'{word}' would change the guest behind gdb's back (gdb would go on "
                        "showing the old state): use gdb's {instead}")
    QUIT_UNDER_GDB = ("'quit' does not end a gdb session: use gdb's 'kill' (ends dbgvm) or "
                      "'detach' (the VM stays paused for the next gdb)")


@dataclass
class CommandError(Exception):
    """A command that cannot run. ``column`` is the 0-based offset in the command line that
    the caret points at."""

    problem: Problem
    column: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return self.problem.value.format(**self.params)

    def render(self, line: str, prefix: str = "") -> str:
        """``prefix`` error: MESSAGE in: LINE, then a caret under the column; ends in \\n."""
        head = f"{prefix}error: {self.message} in: "
        column = min(max(self.column, 0), len(line))
        return f"{head}{line}\n{' ' * (len(head) + column)}^\n"


def fail(problem: Problem, column: int = 0, **args: Any) -> CommandError:
    """Build the error to raise (``raise fail(Problem.X, col, name=...)``)."""
    return CommandError(problem, column, args)
