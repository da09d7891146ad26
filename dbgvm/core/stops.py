"""Why a run ends: the reasons (StopReason) and the value a run returns (Stop).

Front ends turn a Stop into what they show: the gdb stub into a stop reply, the monitor into a
line, the command line into an exit status. A stop that a debugger point caused carries what
caused it (``Stop.cause``): the breakpoint handles at the address, the watchpoint hit, the
event an event breakpoint caught. Each front end picks its own handles out of it, so nobody
has to ask the machine afterwards which point that was (and get another front end's).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from .debug_points import BreakpointHandle, WatchKind, WatchpointHandle
from .events import Event


class StopReason(str, enum.Enum):
    DEBUG_EXIT = "debug-exit"
    HALTED = "halted"
    MAX_INSNS = "max-insns"
    UNSUPPORTED = "unsupported"
    TRIPLE_FAULT = "triple-fault"      # exit status 0, as QEMU's -no-reboot: a guest reset
    DOUBLE_FAULT = "double-fault"      # a #DF whose IDT entry is a task gate (Linux's)
    GUEST_PANIC = "guest-panic"        # the guest kernel entered its panic or oops path
    BAD_MEMORY = "bad-memory"
    VMM_ERROR = "monitor-error"         # the value is the documented stop reason
    BREAKPOINT = "breakpoint"
    WATCHPOINT = "watchpoint"
    STEP = "step"
    CATCH = "catch"
    REQUESTED = "requested"
    POWEROFF = "poweroff"
    TIME_SLICE = "time-slice"
    HISTORY_START = "history-start"     # replay: reverse execution reached the recorded start
    HISTORY_END = "history-end"         # replay: forward execution reached the recorded end


@dataclass(frozen=True)
class BreakpointHit:
    """A stop before the instruction at ``address``: every handle that holds a breakpoint
    there (of every owner)."""

    address: int
    handles: tuple[BreakpointHandle, ...]


@dataclass(frozen=True)
class WatchHit:
    """A stop after an access to the watched byte ``vaddr`` (the first watched byte the access
    touched). ``kind`` is the kind of the hook that saw it; ``handles`` every watchpoint that
    stops for this access there. For a write, ``old`` and ``new`` are the ``size`` bytes at
    the accessed address before and after (little-endian), when the access was at most 8
    bytes."""

    kind: WatchKind
    vaddr: int
    handles: tuple[WatchpointHandle, ...] = ()
    size: int = 0
    old: int | None = None
    new: int | None = None


@dataclass(frozen=True)
class CatchHit:
    """A stop after an instruction that caused ``event``, which the front end's event
    breakpoint ``number`` caught."""

    event: Event
    number: int


StopCause = BreakpointHit | WatchHit | CatchHit


@dataclass(frozen=True)
class Stop:
    """Why and where a run ended. ``exit_status`` is what the dbgvm process should exit with."""

    reason: StopReason
    message: str
    eip: int
    icount: int
    exit_status: int
    cause: StopCause | None = None
