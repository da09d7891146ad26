"""How emulation code reports outcomes that are not normal returns."""
from __future__ import annotations

import enum

from .stops import StopReason

__all__ = ["HAS_ERROR_CODE", "GuestFault", "GuestStop", "StopReason", "Vector"]


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


class GuestStop(Exception):
    """The run cannot (or must not) go on: end it with a ``stop`` event saying why."""

    def __init__(self, reason: StopReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
