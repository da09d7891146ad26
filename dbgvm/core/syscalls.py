"""System calls as events: a guest user process entering its kernel by INT 0x80 or SYSENTER
(the two i386 system-call gates; Linux's vDSO uses SYSENTER), and the return to it.

An entry is remembered by the address space (the virtual CR3) and the user stack pointer at
entry; the next return to virtual ring 3 (IRET or SYSEXIT) in that address space with that
stack pointer is the system call's return, and EAX its result. A task is in its kernel while
its call runs, so nothing else returns to that (CR3, ESP) meanwhile. Calls that do not return
there (execve replaces the address space; exit never returns) leave their entry behind; the
oldest are dropped beyond a bound. The tracker works only while someone listens to `syscall`
events, so it costs nothing otherwise.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from unicorn.x86_const import (UC_X86_REG_EAX, UC_X86_REG_EBP, UC_X86_REG_EBX, UC_X86_REG_ECX,
                               UC_X86_REG_EDI, UC_X86_REG_EDX, UC_X86_REG_ESI, UC_X86_REG_ESP,
                               UC_X86_REG_SS)

from .events import EventKind
from .faults import GuestFault, GuestStop

if TYPE_CHECKING:
    from .cpu_context import CpuContext

MAX_PENDING = 4096
_ARGS = (UC_X86_REG_EBX, UC_X86_REG_ECX, UC_X86_REG_EDX, UC_X86_REG_ESI, UC_X86_REG_EDI,
         UC_X86_REG_EBP)

Emit = Callable[..., None]            # (kind, eip, **fields)
Wants = Callable[[EventKind], bool]


@dataclass(frozen=True)
class SyscallTrackerState:
    pending: tuple[tuple[tuple[int, int], int], ...]     # ((cr3, user ESP), number), oldest first


class SyscallTracker:
    NOT_SAVED = frozenset({"emit", "wants", "names"})    # wiring, and the guest's table of names

    def __init__(self, emit: Emit, wants: Wants) -> None:
        self._emit = emit
        self._wants = wants
        self.names: Mapping[int, str] = {}        # the guest's table (Linux: i386 names)
        self._pending: dict[tuple[int, int], int] = {}    # (cr3, user ESP) -> number

    def save(self) -> SyscallTrackerState:
        return SyscallTrackerState(tuple(self._pending.items()))

    def restore(self, state: SyscallTrackerState) -> None:
        self._pending = dict(state.pending)

    def listened(self) -> bool:
        """Someone listens to `syscall` events (else an entry needs no look)."""
        return self._wants(EventKind.SYSCALL)

    @property
    def expecting(self) -> bool:
        """Some call's return is awaited (else a return to user code needs no look)."""
        return bool(self._pending)

    def entered(self, eip: int, via: str, cr3: int, esp: int, number: int,
                args: Sequence[int | None]) -> None:
        """Called only while someone listens to `syscall` events (the caller checks)."""
        if len(self._pending) >= MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        self._pending[(cr3, esp)] = number
        self._emit(EventKind.SYSCALL, eip, op="entry", via=via, nr=number,
                   name=self.names.get(number, ""), args=list(args), cr3=cr3)

    def returned(self, eip: int, cr3: int, esp: int, eax: int) -> None:
        number = self._pending.pop((cr3, esp), None)
        if number is not None and self._wants(EventKind.SYSCALL):
            result = eax - (1 << 32) if eax & 0x80000000 else eax
            self._emit(EventKind.SYSCALL, eip, op="exit", nr=number,
                       name=self.names.get(number, ""), result=result, cr3=cr3)


def syscall_entered(m: "CpuContext", tracker: SyscallTracker, via: str) -> None:
    """A user process calls its kernel (INT 0x80, SYSENTER): EAX is the number, and the
    arguments are in EBX, ECX, EDX, ESI, EDI, EBP (i386 ABI; through SYSENTER the vDSO
    has pushed the sixth, EBP, at the user stack's top: None when it cannot be read).
    Nothing is read while nobody listens to `syscall` events."""
    if not tracker.listened():
        return
    read = m.regs.read
    esp = read(UC_X86_REG_ESP)
    args: list[int | None] = [read(r) for r in _ARGS]
    if via == "sysenter":
        try:
            stack = m.tables.base_of(read(UC_X86_REG_SS)) + esp
            args[5] = int.from_bytes(m.read_linear(stack, 4), "little")
        except (GuestFault, GuestStop):
            args[5] = None
    tracker.entered(m.trap_eip, via, m.vcpu.cr3, esp, read(UC_X86_REG_EAX), args)


def returned_to_user(m: "CpuContext", tracker: SyscallTracker) -> None:
    """An IRET or SYSEXIT just made the virtual CPL 3: perhaps a system call's return."""
    if tracker.expecting:
        tracker.returned(m.trap_eip, m.vcpu.cr3, m.regs.read(UC_X86_REG_ESP),
                         m.regs.read(UC_X86_REG_EAX))
