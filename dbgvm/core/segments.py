"""The VMM's real descriptor tables: validated copies of the guest's GDT and LDT.

Two views of each table live in the VMM hole. The ring-0 view serves the guest kernel
(virtual CPL 0): its segments compressed to DPL 3 so it can run at real CPL 3, and ring-3 code
segments not present so that every return to user code traps. The ring-3 view serves guest
user code: descriptors keep their DPL, so the hardware refuses a user load of a kernel selector
exactly as it would on bare metal. Switching views is two register writes.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from unicorn import Uc
from unicorn.x86_const import UC_X86_REG_GDTR, UC_X86_REG_LDTR

from .descriptors import NULL, Descriptor, Table, check, installed_copy
from .events import EventKind

# Before the guest loads a GDT of its own, its boot selectors are those QEMU's Multiboot loader
# leaves: flat 4 GiB code at 0x10 and data at 0x18.
BOOT_CS, BOOT_DS = 0x10, 0x18
BOOT_GDT = (NULL, NULL, Descriptor(0x00CF9A000000FFFF), Descriptor(0x00CF92000000FFFF))
LDTR_SELECTOR = 0  # the real LDTR selector is never visible to the guest


@dataclass(frozen=True)
class TableLayout:
    """Where the four real tables live (linear = physical addresses in the VMM hole)."""

    gdt_ring0: int
    gdt_ring3: int
    ldt_ring0: int
    ldt_ring3: int


@dataclass
class GuestTable:
    """The validated snapshot of one guest table: its entries and why any were refused."""

    base: int
    limit: int
    entries: list[Descriptor]
    refused: dict[int, str]

    def save(self) -> GuestTableState:
        return GuestTableState(self.base, self.limit, tuple(self.entries),
                               tuple(self.refused.items()))


@dataclass(frozen=True)
class GuestTableState:
    base: int
    limit: int
    entries: tuple[Descriptor, ...]
    refused: tuple[tuple[int, str], ...]

    def restored(self) -> GuestTable:
        return GuestTable(self.base, self.limit, list(self.entries), dict(self.refused))


@dataclass(frozen=True)
class SegmentTablesState:
    """The guest tables as validated (their installed copies are in the hole, saved with it)."""

    boot_gdt: GuestTableState
    gdt: GuestTableState | None          # None: the boot GDT
    ldt: GuestTableState
    ring3_view: bool


ReadLinear = Callable[[int, int], bytes]
Emit = Callable[..., None]


class SegmentTables:
    NOT_SAVED = frozenset({"uc", "eip", "layout", "read_linear", "emit"})   # wiring

    def __init__(self, uc: Uc, layout: TableLayout, read_linear: ReadLinear, emit: Emit,
                 eip: Callable[[], int]) -> None:
        self._uc = uc
        self._eip = eip
        self._layout = layout
        self._read_linear = read_linear
        self._emit = emit
        self._boot_gdt = GuestTable(0, len(BOOT_GDT) * 8 - 1, list(BOOT_GDT), {})
        self.gdt = self._boot_gdt
        self.ldt = GuestTable(0, 0, [], {})
        self.ring3_view = False
        self._install_all(Table.GDT)

    def save(self) -> SegmentTablesState:
        gdt = None if self.gdt is self._boot_gdt else self.gdt.save()
        return SegmentTablesState(self._boot_gdt.save(), gdt, self.ldt.save(), self.ring3_view)

    def restore(self, state: SegmentTablesState) -> None:
        """Take ``state``'s tables; the CPU context restored with them holds GDTR and LDTR."""
        self._boot_gdt = state.boot_gdt.restored()
        self.gdt = self._boot_gdt if state.gdt is None else state.gdt.restored()
        self.ldt = state.ldt.restored()
        self.ring3_view = state.ring3_view

    # -- loading guest tables -------------------------------------------------------------
    def _read_entries(self, base: int, limit: int) -> list[Descriptor]:
        data = self._read_linear(base, limit + 1) if limit else b""
        data += bytes(-len(data) % 8)
        return [Descriptor.from_bytes(data[i:i + 8]) for i in range(0, len(data), 8)]

    def load_gdt(self, base: int, limit: int, eip: int) -> None:
        self.gdt = GuestTable(base, limit, self._read_entries(base, limit), {})
        self._validate_all(Table.GDT, eip)
        self._install_all(Table.GDT)

    def load_ldt(self, base: int, limit: int, eip: int) -> None:
        self.ldt = GuestTable(base, limit, self._read_entries(base, limit), {})
        self._validate_all(Table.LDT, eip)
        self._install_all(Table.LDT)

    def _table(self, which: Table) -> GuestTable:
        return self.gdt if which is Table.GDT else self.ldt

    def _validate_all(self, which: Table, eip: int) -> None:
        table = self._table(which)
        for index, desc in enumerate(table.entries):
            self._validate(which, index, desc, eip)

    def _validate(self, which: Table, index: int, desc: Descriptor, eip: int) -> None:
        table = self._table(which)
        reason = check(desc, which)
        if reason is None:
            table.refused.pop(index, None)
        else:
            table.refused[index] = reason
            self._emit(EventKind.DESC, eip, table=which.value, op="refuse", index=index,
                       reason=reason)

    def _real_bases(self, which: Table) -> tuple[int, int]:
        lay = self._layout
        return (lay.gdt_ring0, lay.gdt_ring3) if which is Table.GDT else (lay.ldt_ring0,
                                                                          lay.ldt_ring3)

    def _copies(self, which: Table, index: int) -> tuple[bytes, bytes]:
        table = self._table(which)
        desc = table.entries[index]
        if index in table.refused:
            return NULL.pack(), NULL.pack()
        return installed_copy(desc, True).pack(), installed_copy(desc, False).pack()

    def _install_all(self, which: Table) -> None:
        table = self._table(which)
        ring0 = bytearray()
        ring3 = bytearray()
        for index in range(len(table.entries)):
            r0, r3 = self._copies(which, index)
            ring0 += r0
            ring3 += r3
        base0, base3 = self._real_bases(which)
        if ring0:
            self._uc.mem_write(base0, bytes(ring0))
            self._uc.mem_write(base3, bytes(ring3))
        self.apply_view()

    def refresh_entry(self, selector: int, eip: int) -> bool:
        """Re-read one guest entry; True when it changed (and its copies were reinstalled)."""
        which = Table.LDT if selector & 4 else Table.GDT
        table = self._table(which)
        index = selector >> 3
        if index >= len(table.entries) or table is self._boot_gdt:
            return False
        return self.update_entry(which, index,
                            Descriptor.from_bytes(self._read_linear(table.base + index * 8, 8)),
                            eip)

    def update_entry(self, which: Table, index: int, fresh: Descriptor, eip: int) -> bool:
        """The guest's entry is now ``fresh``: re-validate and reinstall it if it changed."""
        table = self._table(which)
        if fresh == table.entries[index]:
            return False
        table.entries[index] = fresh
        self._emit(EventKind.DESC, eip, table=which.value, op="update", index=index,
                   reason=f"guest rewrote it: {fresh.raw:#018x}")
        self._validate(which, index, fresh, eip)
        r0, r3 = self._copies(which, index)
        base0, base3 = self._real_bases(which)
        self._uc.mem_write(base0 + index * 8, r0)
        self._uc.mem_write(base3 + index * 8, r3)
        return True

    def guest_tables(self) -> list[tuple[Table, GuestTable]]:
        """The guest's own GDT and LDT (not the boot GDT dbgvm starts it with)."""
        return [(which, t) for which, t in ((Table.GDT, self.gdt), (Table.LDT, self.ldt))
                if t is not self._boot_gdt and t.entries]

    def guest_ranges(self) -> list[tuple[int, int]]:
        """Linear (first, last) byte ranges of the guest's own GDT and LDT."""
        return [(t.base, t.base + t.limit) for _, t in self.guest_tables()]

    def write_guest_entry(self, selector: int, desc: Descriptor) -> None:
        """Record a descriptor the VMM itself changed in guest memory (TSS busy bit)."""
        table = self._table(Table.LDT if selector & 4 else Table.GDT)
        table.entries[selector >> 3] = desc

    # -- lookups --------------------------------------------------------------------------
    def descriptor(self, selector: int) -> Descriptor | None:
        """The guest's descriptor for ``selector`` as its memory holds it now (re-validated
        and reinstalled if the guest changed it), or None when beyond the table limit."""
        table = self._table(Table.LDT if selector & 4 else Table.GDT)
        index = selector >> 3
        if index * 8 + 7 > table.limit or index >= len(table.entries):
            return None
        self.refresh_entry(selector, self._eip())
        return table.entries[index]

    def refusal(self, selector: int) -> str | None:
        table = self._table(Table.LDT if selector & 4 else Table.GDT)
        return table.refused.get(selector >> 3)

    def base_of(self, selector: int) -> int:
        """Base of the segment a loaded selector designates: the copy the CPU loaded, like
        the hidden part of a segment register (0 for the null selector)."""
        table = self._table(Table.LDT if selector & 4 else Table.GDT)
        index = selector >> 3
        if selector & ~3 == 0 or index >= len(table.entries):
            return 0
        return table.entries[index].base

    # -- views ----------------------------------------------------------------------------
    def set_ring3_view(self, ring3: bool) -> None:
        if ring3 != self.ring3_view:
            self.ring3_view = ring3
            self.apply_view()

    def apply_view(self) -> None:
        lay = self._layout
        gdt = lay.gdt_ring3 if self.ring3_view else lay.gdt_ring0
        ldt = lay.ldt_ring3 if self.ring3_view else lay.ldt_ring0
        self._uc.reg_write(UC_X86_REG_GDTR, (0, gdt, self.gdt.limit, 0))
        flags = 0x82 if self.ldt.limit else 0  # present LDT, DPL 0
        self._uc.reg_write(UC_X86_REG_LDTR, (LDTR_SELECTOR, ldt, self.ldt.limit, flags))
