"""Stopping where a Linux kernel gives up: at the entry of ``panic`` and of ``oops_begin``.

A kernel developer wants the machine held at the moment the kernel decides it is broken, not
a console full of text after it rebooted or hung. The kernel's own symbol table (kallsyms)
says where those functions are; a code hook ranged to each entry stops the run *before* the
function's first instruction, with one line naming what happened and who called it, e.g.
``kernel panic "sysrq triggered crash" called from sysrq_handle_crash+0x12``. From there a
recorded run can be followed backwards to the cause.

``panic`` covers every panic (BUG with panic_on_oops, sysrq crash, a dying init); ``oops_begin``
every oops (a bad kernel page fault, a general protection fault, an invalid opcode), also
those the kernel survives by killing the task.
"""
from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass

from unicorn import UC_HOOK_CODE, Uc
from unicorn.x86_const import UC_X86_REG_ESP

from ..core.debug import DebugError
from ..core.machine import Machine
from ..core.stops import StopReason

MESSAGE_MAX = 120       # bytes of panic()'s format string shown in the stop line
GUEST_PANIC_STATUS = 1  # a batch run that ends on a panic fails, as QEMU's -action panic=exit-failure


@dataclass(frozen=True)
class PanicPoints:
    """Where the kernel's panic and oops paths begin, and the symbols that name callers."""
    panic: int | None
    oops: int | None
    symbols: tuple[tuple[int, str], ...]      # (address, name), sorted by address

    @classmethod
    def of(cls, symbols: Mapping[str, int]) -> PanicPoints | None:
        """The points of a kernel with these symbols; None when it has neither function."""
        panic, oops = symbols.get("panic"), symbols.get("oops_begin")
        if panic is None and oops is None:
            return None
        table = tuple(sorted((address, name) for name, address in symbols.items()))
        return cls(panic, oops, table)

    def name(self, address: int) -> str:
        """``function+0xoffset`` for a kernel text address, or the bare address."""
        index = bisect.bisect_right(self.symbols, (address, "\uffff")) - 1
        if index < 0:
            return f"{address:#010x}"
        start, name = self.symbols[index]
        return name if address == start else f"{name}+{address - start:#x}"


class PanicWatch:
    """Stops ``machine`` at the kernel's panic and oops entries (see the module docstring)."""

    def __init__(self, machine: Machine, points: PanicPoints) -> None:
        self._machine = machine
        self._points = points
        for address, describe in ((points.panic, self._panic_line),
                                  (points.oops, self._oops_line)):
            if address is not None:
                machine.uc.hook_add(UC_HOOK_CODE, self._on_entry, describe, address, address)

    def _on_entry(self, uc: Uc, address: int, size: int, describe) -> None:
        m = self._machine
        if m.debug.is_set_aside or m.run_start == (address, m.current_icount()):
            return          # re-running history, or resuming from this very stop
        m.stop_before_current(StopReason.GUEST_PANIC, describe(), address, GUEST_PANIC_STATUS)

    def _caller(self) -> tuple[int, str]:
        """The return address on the stack at a function's entry, and its name."""
        esp = self._machine.regs.read(UC_X86_REG_ESP)
        try:
            ret = int.from_bytes(self._machine.debug.read_virtual(esp, 4), "little")
        except DebugError:
            return 0, "an unknown caller"
        return ret, self._points.name(ret - 5)   # the call instruction: E8 rel32

    def _panic_line(self) -> str:
        """panic(fmt, ...) is variadic, so its format string is on the stack above the
        return address."""
        esp = self._machine.regs.read(UC_X86_REG_ESP)
        _, caller = self._caller()
        try:
            fmt = int.from_bytes(self._machine.debug.read_virtual(esp + 4, 4), "little")
            text = self._string(fmt)
        except DebugError:
            text = "?"
        return f"kernel panic \"{text}\" called from {caller}"

    def _oops_line(self) -> str:
        _, caller = self._caller()
        return f"kernel oops: oops_begin called from {caller}"

    def _string(self, address: int) -> str:
        """A NUL-terminated guest string, read a page at a time (its end may be followed by
        an unmapped page)."""
        out = bytearray()
        while len(out) < MESSAGE_MAX:
            chunk = min(MESSAGE_MAX - len(out), 0x1000 - (address & 0xFFF))
            data = self._machine.debug.read_virtual(address, chunk)
            end = data.find(b"\0")
            if end >= 0:
                out += data[:end]
                break
            out += data
            address += chunk
        return out.decode("utf-8", "replace").rstrip("\n")
