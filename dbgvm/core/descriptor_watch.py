"""Noticing guest writes to its own GDT and LDT, byte-exactly and at no cost elsewhere.

The CPU loads segments from the VMM's validated *copies* (segments.py), so a descriptor the
guest rewrites must be re-validated and re-installed before it can be loaded. Write-protecting
the table's pages would do it, but tables often share a page with hot data (the Linux
decompressor's GDT does): every store to that page would then cost a fault, a one-instruction
quantum and a rescan. Instead each physical piece of the tables carries a Unicorn write hook
ranged to exactly its bytes: stores anywhere else, even on the same page, run at full speed
(measured: a store loop beside a hooked range runs as fast as with no hook), and a store into
a table updates just the entries it touches, from the bytes being written.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from unicorn import UC_HOOK_MEM_WRITE, Uc

from .descriptors import Descriptor
from .guest_paging import PageFault, Translation
from .segments import SegmentTables

PAGE = 4096


@dataclass(frozen=True)
class Piece:
    """Physically contiguous bytes of a guest descriptor table, within one page."""

    paddr: int
    size: int
    linear: int


Walk = Callable[[int], "Translation | PageFault"]


@dataclass(frozen=True)
class DescriptorWatchState:
    pieces: tuple[Piece, ...]


class DescriptorWatch:
    NOT_SAVED = frozenset({"uc", "tables", "walk", "eip", "hooks"})   # wiring; hooks follow pieces

    def __init__(self, uc: Uc, tables: SegmentTables, walk: Walk,
                 eip: Callable[[], int]) -> None:
        self._uc = uc
        self._tables = tables
        self._walk = walk
        self._eip = eip
        self._pieces: tuple[Piece, ...] = ()
        self._hooks: list[int] = []

    @property
    def pieces(self) -> tuple[Piece, ...]:
        """What is watched now."""
        return self._pieces

    def save(self) -> DescriptorWatchState:
        return DescriptorWatchState(self._pieces)

    def restore(self, state: DescriptorWatchState) -> None:
        self._watch(state.pieces)

    def tables_moved(self) -> None:
        """The guest loaded a GDT/LDT or changed paging: hook the physical bytes the tables
        occupy now (pages not mapped yet are not watched: loading from them faults)."""
        pieces = []
        for first, last in self._tables.guest_ranges():
            linear = first
            while linear <= last:
                size = min(last + 1 - linear, PAGE - (linear & 0xFFF))
                t = self._walk(linear)
                if not isinstance(t, PageFault):
                    pieces.append(Piece(t.paddr, size, linear))
                linear += size
        self._watch(tuple(pieces))

    def _watch(self, pieces: tuple[Piece, ...]) -> None:
        """Hook exactly ``pieces``."""
        if pieces == self._pieces:
            return
        for hook in self._hooks:
            self._uc.hook_del(hook)
        self._pieces = pieces
        self._hooks = [self._uc.hook_add(UC_HOOK_MEM_WRITE, self._on_write, piece, piece.paddr,
                                         piece.paddr + piece.size - 1)
                       for piece in self._pieces]
        self._uc.ctl_flush_tb()          # hooks only reach code translated after they exist

    def _on_write(self, uc: Uc, access: int, address: int, size: int, value: int,
                  piece: Piece) -> None:
        # The hook runs before the store: build what the bytes will be.
        linear = piece.linear + (address - piece.paddr)
        self.stored(linear, value.to_bytes(size, "little", signed=value < 0))

    def host_wrote(self, paddr: int, data: bytes) -> None:
        """A debugger or device wrote guest RAM (after the fact): update what it touched."""
        end = paddr + len(data)
        for piece in self._pieces:
            lo, hi = max(paddr, piece.paddr), min(end, piece.paddr + piece.size)
            if lo < hi:
                self.stored(piece.linear + lo - piece.paddr, data[lo - paddr:hi - paddr])

    def stored(self, linear: int, data: bytes) -> None:
        """``data`` is (being) written at ``linear``: re-validate the entries it overlaps."""
        for which, table in self._tables.guest_tables():
            if linear + len(data) <= table.base or linear > table.base + table.limit:
                continue
            first = max(0, (linear - table.base) // 8)
            last = min(len(table.entries) - 1, (linear + len(data) - 1 - table.base) // 8)
            for index in range(first, last + 1):
                raw = bytearray(table.entries[index].raw.to_bytes(8, "little"))
                entry = table.base + index * 8
                for i in range(8):
                    at = entry + i - linear
                    if 0 <= at < len(data):
                        raw[i] = data[at]
                self._tables.update_entry(which, index, Descriptor.from_bytes(bytes(raw)),
                                          self._eip())
