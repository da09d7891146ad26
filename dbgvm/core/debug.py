"""Breakpoints and watchpoints, and the debugger's side-effect-free view of guest memory.

Front ends (the gdb stub, the monitor) use ``machine.debug``. Each point is set by an owner
and comes back as a handle (debug_points.py): the front end removes its own points through
its handles, never another's, and a point stays armed while any owner holds it. A stop a
point caused carries its handles (stops.py, ``Stop.cause``).

A breakpoint is a Unicorn *exit*: checked in translated code, so free while not hit (code
hooks are walked on every instruction: 100 cost 17x). ``sync_exits`` keeps the exits safe
under shadow paging.

A watchpoint (gdb's Z2-Z4) is a ranged memory hook on the physical bytes the watched virtual
range maps to when it is set; while any is set, every guest memory access takes Unicorn's slow
path (~1.4x slower), so they cost only while they exist. A hit ends the run after the
accessing instruction (StopReason.WATCHPOINT, its cause a WatchHit).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, UC_MEM_WRITE, Uc
from unicorn.x86_const import UC_X86_REG_EIP

from .debug_points import (BreakpointHandle, Handle, PointBook, PointBookState, WatchKey,
                           WatchKind, WatchpointHandle)
from .memory import DebugError, GuestMemory, check_range
from .stops import BreakpointHit, Stop, StopReason, WatchHit

if TYPE_CHECKING:
    from .cpu_context import RunLoop

__all__ = ["BreakpointHandle", "DebugError", "Debugger", "Handle", "WatchHit", "WatchKind",
           "WatchpointHandle"]

MAX_FILLS_PER_INSN = 8   # code pages, data pages and a stack page of one instruction, at most
MAX_VALUE_BYTES = 8      # a write's old and new values are kept up to this size


@dataclass(frozen=True)
class DebuggerState:
    """The debugger's points: not part of a machine snapshot (going back keeps them), but
    saved and restored the same way."""

    book: PointBookState
    reported: tuple[int, int] | None


class Debugger:
    # wiring; what Unicorn holds now and the addresses held (follow the book); the breakpoint
    # being stepped off; points set aside while reverse execution re-runs history
    NOT_SAVED = frozenset({"m", "memory", "exits", "bp_hooks", "watch_hooks", "breakpoints",
                           "skip_exit", "set_aside"})

    def __init__(self, owner: "RunLoop", memory: GuestMemory) -> None:
        self._m = owner
        self._memory = memory
        self._book = PointBook()
        self._breakpoints: frozenset[int] = frozenset()    # addresses some handle holds
        self._exits: frozenset[int] = frozenset()      # what Unicorn holds now
        self._bp_hooks: dict[int, int] = {}
        self._watch_hooks: dict[WatchKey, list[int]] = {}   # Unicorn hooks per watched range
        self.skip_exit: int | None = None      # the breakpoint being stepped off
        self._set_aside = False
        self._reported: tuple[int, int] | None = None   # (eip, icount) of a reported breakpoint

    def save(self) -> DebuggerState:
        return DebuggerState(self._book.save(), self._reported)

    def restore(self, state: DebuggerState) -> None:
        """The points held when ``state`` was saved (handles given out since are no longer
        held; removing one is a no-op)."""
        self._book.restore(state.book)
        self._reported = state.reported
        wanted = self._book.watch_keys()
        for key in frozenset(self._watch_hooks) - wanted:
            self._unhook_watch(key)
        for key in wanted - frozenset(self._watch_hooks):
            self._hook_watch(key)
        self._breakpoints_changed()

    # -- memory (memory.py) -----------------------------------------------------------------
    def translate(self, vaddr: int) -> int | None:
        """Guest-physical address of a guest-virtual one, without touching A/D bits."""
        return self._memory.translate(vaddr)

    def read_virtual(self, vaddr: int, size: int) -> bytes:
        return self._memory.read_virtual(vaddr, size)

    def write_virtual(self, vaddr: int, data: bytes) -> None:
        self._memory.write_virtual(vaddr, data)

    # -- points and their owners --------------------------------------------------------
    def add_breakpoint(self, addr: int, owner: str) -> BreakpointHandle:
        """Stop before executing the linear address ``addr`` (see sync_exits), until
        ``owner`` removes the handle."""
        check_range(addr, 1)
        handle = self._book.new_breakpoint(addr, owner)
        if self._book.count(addr) == 1:
            self._breakpoints_changed()
        return handle

    def add_watchpoint(self, vaddr: int, length: int, kind: WatchKind,
                       owner: str) -> WatchpointHandle:
        """Stop after an access of ``kind`` to the physical bytes ``length`` bytes at
        ``vaddr`` map to now, until ``owner`` removes the handle."""
        check_range(vaddr, length)
        if length <= 0:
            raise DebugError(f"a watchpoint needs a positive length, not {length}")
        key = (vaddr, length, kind)
        pieces = list(self._memory.debug_pieces(vaddr, length))   # DebugError when unmapped
        handle = self._book.new_watchpoint(vaddr, length, kind, owner)
        if self._book.count(key) == 1:
            self._hook_watch(key, pieces)
        return handle

    def remove(self, handle: Handle) -> bool:
        """Give a point back; its exit or hook goes once no other handle holds it. False
        when the handle is not held (removed already)."""
        left = self._book.release(handle)
        if left is None:
            return False
        if left == 0:
            if isinstance(handle, BreakpointHandle):
                self._breakpoints_changed()
            else:
                self._unhook_watch(handle.point)
        return True

    def holds(self, handle: Handle) -> bool:
        return self._book.holds(handle)

    def handles(self, owner: str | None = None) -> list[Handle]:
        """The points held, oldest first (only ``owner``'s, when given)."""
        return self._book.handles(owner)

    @contextmanager
    def set_aside(self) -> Iterator[None]:
        """No point stops the guest meanwhile (they stay held): how reverse execution re-runs
        what the debugger already went through."""
        self._set_aside = True
        self.sync_exits()
        try:
            yield
        finally:
            self._set_aside = False
            self.sync_exits()

    @property
    def is_set_aside(self) -> bool:
        """Reverse execution is re-running history: nothing the debugger set may stop it."""
        return self._set_aside

    # -- breakpoints ----------------------------------------------------------------------
    @property
    def breakpoints(self) -> list[int]:
        return sorted(self._breakpoints)

    @property
    def breakpoint_set(self) -> frozenset[int]:
        """The addresses at which some owner holds a breakpoint."""
        return self._breakpoints

    @property
    def armed(self) -> frozenset[int]:
        """The breakpoints Unicorn holds as exits now (those whose page is mapped)."""
        return self._exits

    def breakpoint_stop(self, eip: int, icount: int) -> Stop:
        """The stop before the breakpoint at ``eip``, naming every handle there."""
        return Stop(StopReason.BREAKPOINT, f"breakpoint at {eip:#010x}", eip, icount, 0,
                    BreakpointHit(eip, self._book.breakpoints_at(eip)))

    def _breakpoints_changed(self) -> None:
        self._breakpoints = self._book.breakpoint_addresses()
        self.sync_exits()

    def sync_exits(self) -> None:
        """Breakpoints are Unicorn *exits*. But at the end of each emu_start Unicorn
        translates every exit, and the byte before it, through the current page tables, and
        corrupts its exception state if that faults. So Unicorn only ever holds the
        breakpoints whose pages the current shadow root maps; this is re-synced before each
        quantum and whenever a hook changes the shadow, and a breakpoint page filled later
        gets its exit then. A breakpoint whose page is mapped but whose previous page is not
        (the first byte of a page) gets a ranged code hook instead."""
        if not self._breakpoints and not self._exits and not self._bp_hooks:
            return
        points = frozenset() if self._set_aside else self._breakpoints
        m = self._m
        ring3 = m.vcpu.cpl == 3
        shadow_entry = m.mmu.shadow_entry

        def mapped(addr: int) -> bool:
            entry = shadow_entry(addr & 0xFFFFFFFF, ring3)
            return entry is not None and bool(entry & 1)
        live = [bp for bp in points if bp != self.skip_exit and mapped(bp)]
        wanted = frozenset(bp for bp in live if mapped(bp - 1))
        # a breakpoint on the first byte of a page whose previous page is not mapped cannot
        # be an exit: it gets a code hook ranged to its address instead
        hooked = frozenset(live) - wanted
        changed = wanted != self._exits or hooked != frozenset(self._bp_hooks)
        uc = m.uc
        for bp in frozenset(self._bp_hooks) - hooked:
            uc.hook_del(self._bp_hooks.pop(bp))
        for bp in hooked - frozenset(self._bp_hooks):
            self._bp_hooks[bp] = uc.hook_add(UC_HOOK_CODE, self._on_hooked_breakpoint,
                                             None, bp, bp)
        if wanted != self._exits:
            self._exits = wanted
            uc.ctl_set_exits(sorted(wanted))
        if changed:
            uc.ctl_flush_tb()      # exits and hooks only reach code translated after

    def exits_lost(self) -> None:
        """Unicorn's exits are unknown (a snapshot's CPU context was restored): set them again."""
        self._exits = frozenset({-1})
        self.sync_exits()

    def _on_hooked_breakpoint(self, uc: Uc, address: int, size: int, _: object) -> None:
        if address != self.skip_exit and not self._set_aside:
            self._m.breakpoint_hit(address)

    def report_here(self, eip: int, icount: int) -> None:
        """The debugger has reported the breakpoint at ``eip``: resuming runs it instead of
        stopping there again."""
        self._reported = (eip, icount)

    def reported(self, eip: int, icount: int) -> bool:
        return self._reported == (eip, icount)

    def step_off_breakpoint(self) -> None:
        """A run starts: when on a reported breakpoint, run that one instruction without its
        exit; on one nobody reported, stop there at once."""
        m = self._m
        eip = m.regs.read(UC_X86_REG_EIP)
        if eip not in self._breakpoints or self._set_aside:
            return
        if not self.reported(eip, m.icount):
            m.pending_stop = self.breakpoint_stop(eip, m.icount)
            return
        self.skip_exit = eip
        try:
            m.between_quanta()
            # A shadow fill for the instruction (its code or data page) uses up the one-
            # instruction quantum without retiring it: try again until it retires or leaves.
            for _ in range(MAX_FILLS_PER_INSN):
                if m.pending_stop is not None or m.regs.read(UC_X86_REG_EIP) != eip:
                    break
                if m.run_quantum(1):
                    break
        finally:
            self.skip_exit = None
            self.sync_exits()

    # -- watchpoints ----------------------------------------------------------------------
    @property
    def watching(self) -> bool:
        """Any watchpoint set (its Unicorn hook sees only stores the CPU itself makes)."""
        return bool(self._watch_hooks)

    def _hook_watch(self, key: WatchKey,
                    pieces: list[tuple[int, int, int]] | None = None) -> None:
        vaddr, length, kind = key
        if pieces is None:
            pieces = list(self._memory.debug_pieces(vaddr, length))
        types = {WatchKind.WRITE: UC_HOOK_MEM_WRITE, WatchKind.READ: UC_HOOK_MEM_READ,
                 WatchKind.ACCESS: UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE}[kind]
        uc = self._m.uc
        self._watch_hooks[key] = [
            uc.hook_add(types, self._on_access, (vaddr + offset, kind, paddr), paddr,
                        paddr + chunk - 1)
            for paddr, offset, chunk in pieces]
        uc.ctl_flush_tb()

    def _unhook_watch(self, key: WatchKey) -> None:
        uc = self._m.uc
        for hook in self._watch_hooks.pop(key):
            uc.hook_del(hook)
        uc.ctl_flush_tb()

    def _on_access(self, uc: Uc, access: int, address: int, size: int, value: int,
                   data: tuple[int, WatchKind, int]) -> None:
        if self._set_aside:
            return
        vbase, kind, pbase = data
        vaddr = vbase + max(0, address - pbase)
        writing = access == UC_MEM_WRITE
        old = new = None
        if writing and size <= MAX_VALUE_BYTES and address + size <= self._memory.ram_size:
            # the hook runs before the store lands: memory still holds the old value
            old = int.from_bytes(self._memory.read_physical(address, size), "little")
            new = value & ((1 << 8 * size) - 1)
        hit = WatchHit(kind, vaddr, self._book.watchpoints_seeing(vaddr, writing), size,
                       old, new)
        self._m.stop_after_current(StopReason.WATCHPOINT, f"{kind.value} {vaddr:#010x}", hit)
