"""Why a run ends: the reasons (StopReason) and the value a run returns (Stop).

Front ends turn a Stop into what they show: the gdb stub into a stop reply, the monitor into a
line, the command line into an exit status.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class StopReason(str, enum.Enum):
    DEBUG_EXIT = "debug-exit"
    HALTED = "halted"
    MAX_INSNS = "max-insns"
    UNSUPPORTED = "unsupported"
    TRIPLE_FAULT = "triple-fault"      # exit status 0, as QEMU's -no-reboot: a guest reset
    DOUBLE_FAULT = "double-fault"      # a #DF whose IDT entry is a task gate (Linux's)
    GUEST_PANIC = "guest-panic"        # the guest kernel entered its panic or oops path
    BAD_MEMORY = "bad-memory"
    MONITOR_ERROR = "monitor-error"
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
class Stop:
    """Why and where a run ended. ``exit_status`` is what the dbgvm process should exit with."""

    reason: StopReason
    message: str
    eip: int
    icount: int
    exit_status: int
