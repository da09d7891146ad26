"""Breakpoints and watchpoints, and the debugger's side-effect-free view of guest memory.

Front ends (the gdb stub, the monitor) use ``machine.debug``. A breakpoint is a Unicorn
*exit*: checked in translated code, so free while not hit (code hooks are walked on every
instruction: 100 cost 17x). ``sync_exits`` keeps the exits safe under shadow paging.

A watchpoint (gdb's Z2-Z4) is a ranged memory hook on the physical bytes the watched virtual
range maps to when it is set; while any is set, every guest memory access takes Unicorn's slow
path (~1.4x slower), so they cost only while they exist. A hit ends the run after the
accessing instruction (StopReason.WATCHPOINT, ``last_watch`` says where).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, Uc
from unicorn.x86_const import UC_X86_REG_EIP

from .memory import DebugError, GuestMemory, check_range
from .stops import Stop, StopReason

if TYPE_CHECKING:
    from .cpu_context import RunLoop

__all__ = ["DebugError", "Debugger", "WatchHit", "WatchKind"]

MAX_FILLS_PER_INSN = 8   # code pages, data pages and a stack page of one instruction, at most


class WatchKind(str, enum.Enum):
    WRITE = "watch"
    READ = "rwatch"
    ACCESS = "awatch"


@dataclass(frozen=True)
class WatchHit:
    kind: WatchKind
    vaddr: int          # the watched address the access touched


WatchKey = tuple[int, int, WatchKind]          # (vaddr, length, kind)


@dataclass(frozen=True)
class DebuggerState:
    """The debugger's points: not part of a machine snapshot (going back keeps them), but
    saved and restored the same way (a reverse re-run sets them aside)."""

    breakpoints: frozenset[int]
    watchpoints: frozenset[WatchKey]
    reported: tuple[int, int] | None
    last_watch: WatchHit | None


class Debugger:
    # wiring; what Unicorn holds now (follows the points); the breakpoint being stepped off
    NOT_SAVED = frozenset({"m", "memory", "exits", "bp_hooks", "skip_exit"})

    def __init__(self, owner: "RunLoop", memory: GuestMemory) -> None:
        self._m = owner
        self._memory = memory
        self._breakpoints: frozenset[int] = frozenset()
        self._exits: frozenset[int] = frozenset()      # what Unicorn holds now
        self._bp_hooks: dict[int, int] = {}
        self.skip_exit: int | None = None      # the breakpoint being stepped off
        self._reported: tuple[int, int] | None = None   # (eip, icount) of a reported breakpoint
        self._watchpoints: dict[WatchKey, list[int]] = {}   # -> their Unicorn hooks
        self.last_watch: WatchHit | None = None

    def save(self) -> DebuggerState:
        return DebuggerState(self._breakpoints, frozenset(self._watchpoints), self._reported,
                             self.last_watch)

    def restore(self, state: DebuggerState) -> None:
        for key in frozenset(self._watchpoints) - state.watchpoints:
            self.remove_watchpoint(*key)
        for key in state.watchpoints - frozenset(self._watchpoints):
            self.add_watchpoint(*key)
        self.set_breakpoints(state.breakpoints)
        self._reported, self.last_watch = state.reported, state.last_watch

    # -- memory (memory.py) -----------------------------------------------------------------
    def translate(self, vaddr: int) -> int | None:
        """Guest-physical address of a guest-virtual one, without touching A/D bits."""
        return self._memory.translate(vaddr)

    def read_virtual(self, vaddr: int, size: int) -> bytes:
        return self._memory.read_virtual(vaddr, size)

    def write_virtual(self, vaddr: int, data: bytes) -> None:
        self._memory.write_virtual(vaddr, data)

    # -- breakpoints ----------------------------------------------------------------------
    @property
    def breakpoints(self) -> list[int]:
        return sorted(self._breakpoints)

    @property
    def breakpoint_set(self) -> frozenset[int]:
        return self._breakpoints

    @property
    def armed(self) -> frozenset[int]:
        """The breakpoints Unicorn holds as exits now (those whose page is mapped)."""
        return self._exits

    def add_breakpoint(self, addr: int) -> None:
        check_range(addr, 1)
        self.set_breakpoints(self._breakpoints | {addr})

    def remove_breakpoint(self, addr: int) -> bool:
        if addr not in self._breakpoints:
            return False
        self.set_breakpoints(self._breakpoints - {addr})
        return True

    def set_breakpoints(self, addresses: frozenset[int]) -> None:
        """Stop before executing any of these linear addresses (see sync_exits)."""
        self._breakpoints = addresses
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
        m = self._m
        ring3 = m.vcpu.cpl == 3
        shadow_entry = m.mmu.shadow_entry

        def mapped(addr: int) -> bool:
            entry = shadow_entry(addr & 0xFFFFFFFF, ring3)
            return entry is not None and bool(entry & 1)
        live = [bp for bp in self._breakpoints if bp != self.skip_exit and mapped(bp)]
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
        if address != self.skip_exit:
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
        if eip not in self._breakpoints:
            return
        if not self.reported(eip, m.icount):
            m.pending_stop = Stop(StopReason.BREAKPOINT, f"breakpoint at {eip:#010x}", eip,
                                  m.icount, 0)
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
        return bool(self._watchpoints)

    def add_watchpoint(self, vaddr: int, length: int, kind: WatchKind) -> None:
        check_range(vaddr, length)
        if length <= 0:
            raise DebugError(f"a watchpoint needs a positive length, not {length}")
        key = (vaddr, length, kind)
        if key in self._watchpoints:
            return
        types = {WatchKind.WRITE: UC_HOOK_MEM_WRITE, WatchKind.READ: UC_HOOK_MEM_READ,
                 WatchKind.ACCESS: UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE}[kind]
        hooks = []
        for paddr, offset, chunk in self._memory.debug_pieces(vaddr, length):
            hooks.append(self._m.uc.hook_add(types, self._on_access, (vaddr + offset, kind, paddr),
                                             paddr, paddr + chunk - 1))
        self._watchpoints[key] = hooks
        self._m.uc.ctl_flush_tb()

    def remove_watchpoint(self, vaddr: int, length: int, kind: WatchKind) -> bool:
        hooks = self._watchpoints.pop((vaddr, length, kind), None)
        if hooks is None:
            return False
        for hook in hooks:
            self._m.uc.hook_del(hook)
        self._m.uc.ctl_flush_tb()
        return True

    def _on_access(self, uc: Uc, access: int, address: int, size: int, value: int,
                   data: tuple[int, WatchKind, int]) -> None:
        vbase, kind, pbase = data
        hit = vbase + max(0, address - pbase)
        self.last_watch = WatchHit(kind, hit)
        self._m.stop_after_current(StopReason.WATCHPOINT, f"{kind.value} {hit:#010x}")
