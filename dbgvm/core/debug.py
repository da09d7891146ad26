"""Breakpoints, watchpoints and side-effect-free guest memory access for debuggers.

Front ends (the gdb stub, the monitor) use these. Breakpoints are Unicorn exits managed by
the machine (Machine._sync_exits says how they are kept safe under shadow paging): free while
not hit, where per-address code hooks cost ~15% of guest speed each, hit or not.

A watchpoint is a ranged memory hook on the physical bytes the watched virtual range maps to
when it is set; while any is set, every guest memory access takes Unicorn's slow path (~1.4x
slower), so they cost only while they exist.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from unicorn import UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, Uc

from .faults import StopReason
from .guest_paging import PageFault

if TYPE_CHECKING:
    from .machine import Machine


class WatchKind(str, enum.Enum):
    WRITE = "watch"
    READ = "rwatch"
    ACCESS = "awatch"


@dataclass(frozen=True)
class WatchHit:
    kind: WatchKind
    vaddr: int          # the watched address the access touched


class DebugError(ValueError):
    """A debugger request that cannot be carried out (the message says why)."""


class Debugger:
    def __init__(self, machine: "Machine") -> None:
        self._m = machine
        self._watchpoints: dict[tuple[int, int, WatchKind], list[int]] = {}
        self.last_watch: WatchHit | None = None

    # -- memory ---------------------------------------------------------------------------
    def translate(self, vaddr: int) -> int | None:
        """Guest-physical address of a guest-virtual one, without touching A/D bits."""
        t = self._m.mmu.guest_walk(vaddr, False, False)
        if isinstance(t, PageFault) or t.paddr >= self._m.ram_size:
            return None
        return t.paddr

    @staticmethod
    def _check_range(vaddr: int, size: int) -> None:
        """A 32-bit guest has no address at or above 4 GiB: never wrap one to a low address."""
        if vaddr < 0 or size < 0 or vaddr + size > 1 << 32:
            raise DebugError(f"address range {vaddr:#x}+{size} is outside the 32-bit address "
                             "space")

    def _pieces(self, vaddr: int, size: int):
        self._check_range(vaddr, size)
        done = 0
        while done < size:
            addr = vaddr + done
            chunk = min(size - done, 0x1000 - (addr & 0xFFF))
            paddr = self.translate(addr)
            if paddr is None or paddr + chunk > self._m.ram_size:
                raise DebugError(f"virtual address {addr:#x} is not mapped")
            yield paddr, done, chunk
            done += chunk

    def read_virtual(self, vaddr: int, size: int) -> bytes:
        out = bytearray()
        for paddr, _, chunk in self._pieces(vaddr, size):
            out += self._m.ram[paddr:paddr + chunk]
        return bytes(out)

    def write_virtual(self, vaddr: int, data: bytes) -> None:
        for paddr, offset, chunk in list(self._pieces(vaddr, len(data))):
            self._m.write_physical(paddr, data[offset:offset + chunk])

    # -- breakpoints ----------------------------------------------------------------------
    @property
    def breakpoints(self) -> list[int]:
        return sorted(self._m.breakpoints)

    def add_breakpoint(self, addr: int) -> None:
        self._check_range(addr, 1)
        self._m.set_breakpoints(self._m.breakpoints | {addr})

    def remove_breakpoint(self, addr: int) -> bool:
        if addr not in self._m.breakpoints:
            return False
        self._m.set_breakpoints(self._m.breakpoints - {addr})
        return True

    # -- watchpoints ----------------------------------------------------------------------
    def add_watchpoint(self, vaddr: int, length: int, kind: WatchKind) -> None:
        self._check_range(vaddr, length)
        if length <= 0:
            raise DebugError(f"a watchpoint needs a positive length, not {length}")
        key = (vaddr, length, kind)
        if key in self._watchpoints:
            return
        types = {WatchKind.WRITE: UC_HOOK_MEM_WRITE, WatchKind.READ: UC_HOOK_MEM_READ,
                 WatchKind.ACCESS: UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE}[kind]
        hooks = []
        for paddr, offset, chunk in self._pieces(vaddr, length):
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
