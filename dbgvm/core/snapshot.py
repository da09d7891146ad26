"""Snapshots of a whole machine, kept in memory, for going back in time.

A snapshot is the CPU (Unicorn's context), guest RAM and the VMM's hole (shadow page tables,
installed descriptors), and the saved state of every ``Persistent`` part: each core component
(the virtual CPU, scheduler, clock, PIC, PIT, shadow MMU bookkeeping, descriptor tables and
their watch, input queue, system-call tracker) and each device outside the core (the board's,
the HAL's: ``Machine.register_state``, kept by ``SnapshotParts``) saves a frozen dataclass of its own and restores from
it in place, as Firecracker's devices do with their Persist states. Memory is stored as the
pages that changed since the previous snapshot, on top of one full copy, so a snapshot every
few million instructions costs little. Debugger state (breakpoints, watchpoints, event
subscribers) is not part of it: going back keeps the debugger's view; so does output that
already left the machine (its console).
"""
from __future__ import annotations

import bisect
import ctypes
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from unicorn import UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, Uc

PAGE = 4096
CHUNK = 64 * PAGE            # compared first; only differing chunks are compared by page


class Persistent(Protocol):
    """A part of the machine whose state a snapshot keeps: ``save`` returns an immutable
    value, ``restore`` puts the part back in that state in place."""

    def save(self) -> object: ...
    def restore(self, state: Any) -> None: ...


@dataclass
class Snapshot:
    icount: int
    time: int
    cpu: Any                                      # unicorn.UcContext
    parts: dict[str, object]                      # each part's saved state, by name
    ram_pages: int = 0              # pages changed since the previous snapshot
    hole_pages: int = 0


_libc = ctypes.CDLL(None)
_libc.memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_libc.memcmp.restype = ctypes.c_int


def _address(buffer: memoryview | bytearray) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


class _PagedImage:
    """One region (RAM or the hole): its content at the first snapshot, then each page's
    later versions by snapshot. ``last`` is the region as of the newest snapshot, compared
    with the live region by memcmp (a Python-level compare of 64 MiB costs ~60 ms)."""

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.last = bytearray(view)
        self.base = bytes(self.last)
        self.versions: dict[int, list[tuple[int, bytes]]] = {}   # page -> [(snapshot, data)]
        self._live_at = _address(view)
        self._last_at = _address(self.last)

    def _differs(self, offset: int, size: int) -> bool:
        return _libc.memcmp(self._live_at + offset, self._last_at + offset, size) != 0

    def dirty_pages(self) -> list[int]:
        """Pages whose live content differs from the newest snapshot."""
        pages = []
        for chunk in range(0, len(self.view), CHUNK):
            size = min(CHUNK, len(self.view) - chunk)
            if self._differs(chunk, size):
                pages += [page for page in range(chunk, chunk + size, PAGE)
                          if self._differs(page, PAGE)]
        return pages

    def record(self, snapshot: int) -> int:
        """Snapshot ``snapshot`` is being taken: keep the pages that changed; their count."""
        pages = self.dirty_pages()
        for page in pages:
            data = bytes(self.view[page:page + PAGE])
            self.versions.setdefault(page, []).append((snapshot, data))
            self.last[page:page + PAGE] = data
        return len(pages)

    def content(self, page: int, snapshot: int) -> bytes:
        versions = self.versions.get(page, ())
        at = bisect.bisect_right(versions, snapshot, key=lambda v: v[0])
        return versions[at - 1][1] if at else self.base[page:page + PAGE]

    def restore(self, snapshot: int) -> None:
        """Make the live region what it was at ``snapshot``: only pages written since then
        (after it, in later snapshots, or since the newest) are touched."""
        pages = set(self.dirty_pages())
        pages.update(page for page, versions in self.versions.items()
                     if versions[-1][0] > snapshot)
        for page in pages:
            self.view[page:page + PAGE] = self.content(page, snapshot)
        # `last` stays the newest snapshot's image: the live region will come back to it


class SnapshotStore:
    def __init__(self, uc: Uc, ram: memoryview, hole: memoryview,
                 parts: Mapping[str, Persistent],
                 after_restore: Callable[[Snapshot], None]) -> None:
        self._uc = uc
        self._ram = _PagedImage(ram)
        self._hole = _PagedImage(hole)
        self.parts = dict(parts)
        self._after_restore = after_restore
        self.snapshots: list[Snapshot] = []

    def take(self, icount: int, time: int) -> Snapshot:
        if self.snapshots and icount < self.snapshots[-1].icount:
            raise ValueError("snapshots are taken in instruction-count order")
        index = len(self.snapshots)
        snap = Snapshot(icount, time, self._uc.context_save(),
                        {name: part.save() for name, part in self.parts.items()},
                        self._ram.record(index), self._hole.record(index))
        self.snapshots.append(snap)
        return snap

    def latest_at_or_before(self, icount: int) -> int | None:
        best = None
        for index, snap in enumerate(self.snapshots):
            if snap.icount <= icount:
                best = index
        return best

    def restore(self, index: int) -> Snapshot:
        """Put the machine back as it was at snapshot ``index``; later snapshots are kept
        (the future is deterministic, they stay valid)."""
        target = self.snapshots[index]
        self._ram.restore(index)
        self._hole.restore(index)
        self._uc.context_restore(target.cpu)
        for name, part in self.parts.items():
            part.restore(target.parts[name])
        self._uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
        self._uc.ctl_flush_tb()
        self._after_restore(target)
        return target


# The core's components a snapshot saves: the machine's attributes of these names.
CORE_PARTS = ("vcpu", "scheduler", "clock", "inputs", "pic", "pit", "mmu", "tables",
              "descriptor_watch", "syscalls")


class SnapshotParts:
    """What a machine's snapshots are made of: its core components (CORE_PARTS) and the
    devices outside the core registered by name. The store is created on first use (it keeps
    a copy of guest RAM); from then on the set of parts is fixed, so devices register before."""

    def __init__(self, machine: object, uc: Uc, ram: memoryview, hole: memoryview,
                 after_restore: Callable[[Snapshot], None]) -> None:
        self._machine = machine
        self._uc, self._ram, self._hole = uc, ram, hole
        self._after_restore = after_restore
        self._devices: dict[str, Persistent] = {}
        self._store: SnapshotStore | None = None

    def register(self, name: str, device: Persistent) -> None:
        """A device outside the core (the board's, the HAL's) whose state goes back in time
        with the machine: its saved state is part of every snapshot, under ``name``."""
        if self._store is not None:
            raise RuntimeError(f"{name}: devices are registered before the first snapshot")
        if name in self._devices:
            raise ValueError(f"a device named {name} is already registered")
        if name in CORE_PARTS:
            raise ValueError(f"a device is named as a core component: {name}")
        self._devices[name] = device

    def store(self) -> SnapshotStore:
        if self._store is None:
            parts: dict[str, Persistent] = {name: getattr(self._machine, name)
                                            for name in CORE_PARTS}
            parts.update(self._devices)
            self._store = SnapshotStore(self._uc, self._ram, self._hole, parts,
                                        self._after_restore)
        return self._store
