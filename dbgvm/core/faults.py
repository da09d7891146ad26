"""How emulation code reports outcomes that are not normal returns."""
from __future__ import annotations

import enum


class Vector(enum.IntEnum):
    DE = 0
    DB = 1
    NMI = 2
    BP = 3
    OF = 4
    BR = 5
    UD = 6
    NM = 7
    DF = 8
    TS = 10
    NP = 11
    SS = 12
    GP = 13
    PF = 14
    MF = 16
    AC = 17


HAS_ERROR_CODE = frozenset({Vector.DF, Vector.TS, Vector.NP, Vector.SS, Vector.GP, Vector.PF,
                            Vector.AC})


class GuestFault(Exception):
    """The guest's own action faults: deliver ``vector`` (with ``error_code``) to the guest."""

    def __init__(self, vector: int, error_code: int = 0, cr2: int | None = None) -> None:
        super().__init__(f"vector {vector} error {error_code:#x}")
        self.vector = vector
        self.error_code = error_code
        self.cr2 = cr2


class StopReason(str, enum.Enum):
    DEBUG_EXIT = "debug-exit"
    HALTED = "halted"
    MAX_INSNS = "max-insns"
    UNSUPPORTED = "unsupported"
    TRIPLE_FAULT = "triple-fault"      # exit status 0, as QEMU's -no-reboot: a guest reset
    DOUBLE_FAULT = "double-fault"      # a #DF whose IDT entry is a task gate (Linux's)
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


class GuestStop(Exception):
    """The run cannot (or must not) go on: end it with a ``stop`` event saying why."""

    def __init__(self, reason: StopReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
