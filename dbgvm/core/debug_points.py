"""Debugger points with owners: handles, and a reference count per point.

Three front ends set breakpoints and watchpoints on one machine (the gdb stub's Z packets, the
monitor's ``break`` / ``watch``, tests and scripts). Each gets a handle for every point it
sets and removes only through that handle, so one front end can never delete another's: a
``monitor delete`` cannot take out gdb's Z0 at the same address. As in QEMU's gdbstub and the
Rust gdbstub crate's breakpoints extension, the stub keeps no breakpoints of its own beyond
its handles; the core counts, per address (per watched range and kind), how many handles name
it, and keeps Unicorn's exit or hook while any does (debug.py arms and disarms).

This module is the bookkeeping alone, without Unicorn, so that it can be tested by itself.
"""
from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass

__all__ = ["BreakpointHandle", "Handle", "PointBook", "PointBookState", "WatchKey",
           "WatchKind", "WatchpointHandle"]


class WatchKind(str, enum.Enum):
    """What a watchpoint stops on; the values are gdb's stop-reply words."""

    WRITE = "watch"
    READ = "rwatch"
    ACCESS = "awatch"

    def sees(self, writing: bool) -> bool:
        """Whether an access (a write, else a read) is one this kind stops on."""
        return self is WatchKind.ACCESS or (self is WatchKind.WRITE) == writing


WatchKey = tuple[int, int, WatchKind]          # (vaddr, length, kind): one set of hooks


@dataclass(frozen=True)
class BreakpointHandle:
    """One owner's breakpoint. ``number`` is unique over the machine's life (never reused,
    so a stale handle never names a newer point)."""

    number: int
    owner: str
    address: int

    @property
    def point(self) -> int:
        """What the core arms for it (shared by every handle at the address)."""
        return self.address


@dataclass(frozen=True)
class WatchpointHandle:
    """One owner's watchpoint on ``length`` bytes at the virtual address ``vaddr``."""

    number: int
    owner: str
    vaddr: int
    length: int
    kind: WatchKind

    @property
    def point(self) -> WatchKey:
        return self.vaddr, self.length, self.kind

    def covers(self, vaddr: int) -> bool:
        return self.vaddr <= vaddr < self.vaddr + self.length


Handle = BreakpointHandle | WatchpointHandle


@dataclass(frozen=True)
class PointBookState:
    handles: frozenset[Handle]


class PointBook:
    """The handles held now and, per point, how many of them name it."""

    # follows the handles; numbering goes on across a restore (a handle given out after the
    # save, and dropped by the restore, must never name a point given out after it)
    NOT_SAVED = frozenset({"counts", "next_number"})

    def __init__(self) -> None:
        self._handles: dict[int, Handle] = {}
        self._next_number = 1
        self._counts: Counter[int | WatchKey] = Counter()

    def save(self) -> PointBookState:
        return PointBookState(frozenset(self._handles.values()))

    def restore(self, state: PointBookState) -> None:
        self._handles = {h.number: h for h in sorted(state.handles, key=lambda h: h.number)}
        self._counts = Counter(h.point for h in self._handles.values())

    # -- handing out and taking back -------------------------------------------------------
    def new_breakpoint(self, address: int, owner: str) -> BreakpointHandle:
        handle = BreakpointHandle(self._next_number, owner, address)
        self._hold(handle)
        return handle

    def new_watchpoint(self, vaddr: int, length: int, kind: WatchKind,
                       owner: str) -> WatchpointHandle:
        handle = WatchpointHandle(self._next_number, owner, vaddr, length, kind)
        self._hold(handle)
        return handle

    def _hold(self, handle: Handle) -> None:
        self._handles[handle.number] = handle
        self._next_number += 1
        self._counts[handle.point] += 1

    def release(self, handle: Handle) -> int | None:
        """Take a handle back: how many handles still name its point, or None when this one
        is not held (already removed, or dropped by a restore)."""
        if self._handles.get(handle.number) != handle:
            return None
        del self._handles[handle.number]
        left = self._counts[handle.point] - 1
        if left:
            self._counts[handle.point] = left
        else:
            del self._counts[handle.point]
        return left

    # -- what is held ----------------------------------------------------------------------
    def holds(self, handle: Handle) -> bool:
        return self._handles.get(handle.number) == handle

    def count(self, point: int | WatchKey) -> int:
        """How many handles name this address (or watched range and kind)."""
        return self._counts[point]

    def handles(self, owner: str | None = None) -> list[Handle]:
        """The handles held, oldest first (only ``owner``'s, when given)."""
        return [h for h in self._handles.values() if owner is None or h.owner == owner]

    def breakpoint_addresses(self) -> frozenset[int]:
        return frozenset(h.address for h in self._handles.values()
                         if isinstance(h, BreakpointHandle))

    def watch_keys(self) -> frozenset[WatchKey]:
        return frozenset(h.point for h in self._handles.values()
                         if isinstance(h, WatchpointHandle))

    def breakpoints_at(self, address: int) -> tuple[BreakpointHandle, ...]:
        return tuple(h for h in self._handles.values()
                     if isinstance(h, BreakpointHandle) and h.address == address)

    def watchpoints_seeing(self, vaddr: int, writing: bool) -> tuple[WatchpointHandle, ...]:
        """The watchpoints an access to ``vaddr`` (a write, else a read) stops for."""
        return tuple(h for h in self._handles.values() if isinstance(h, WatchpointHandle)
                     and h.covers(vaddr) and h.kind.sees(writing))
