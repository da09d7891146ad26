"""Port I/O from the guest: Unicorn's IN/OUT instruction hooks, the I/O permission check, the
virtual time each access and each time-stamp read costs, and the #GP of a refused access.

IN and OUT never fault in Unicorn: they always reach the hooks here, which check the virtual
CPL against IOPL and the TSS's I/O permission bitmap (io_permission.py) and hand a permitted
access to the port bus (port_bus.py). A refused one cannot fault from the hook: the hook leaves
the registers as they were and ends the quantum, and ``after_quantum`` puts EIP back and
delivers #GP(0) there.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn import Uc
from unicorn.x86_const import UC_X86_REG_EAX, UC_X86_REG_EIP

from .clock import PORT_IO_CHARGE, TIME_READ_CHARGE
from .events import EventKind
from .faults import GuestStop, Vector
from .io_permission import io_allowed

if TYPE_CHECKING:
    from .cpu_context import VmmContext


class PortIo:
    def __init__(self, owner: "VmmContext") -> None:
        self._m = owner
        self.refused: tuple[int, int] | None = None    # (EIP, EAX) of a refused IN/OUT
        self.planned_deadline: int | None = None   # the timer deadline the quantum runs to

    # -- time ------------------------------------------------------------------------------
    def read_tsc(self) -> int:
        """The time-stamp counter (one tick per instruction period), read by a trapped
        RDTSC or RDMSR: the read is charged in virtual time (clock.py). The quantum was sized
        to reach the next timer deadline one instruction per period; when the charge makes
        the rest of it overshoot that deadline, it ends after this instruction, so a timer
        fires at the first instruction boundary at or after its deadline whatever the
        quantum layout (a replay slices time differently from the recorded run)."""
        tsc = self._m.clock.now()
        self.charge(TIME_READ_CHARGE)
        return tsc

    def charge(self, periods: int) -> None:
        """Charge virtual time (clock.py) for work done in no instructions; end the quantum
        when that makes the rest of it overshoot the next timer deadline (read_tsc)."""
        m = self._m
        m.clock.charge(periods)
        deadline = m.clock.next_deadline()
        if deadline is not None:
            end = m.quantum_end_time()
            if end is not None and end > deadline:
                m.request_boundary()

    # -- the hooks ---------------------------------------------------------------------------
    def _refuse(self) -> None:
        m = self._m
        self.refused = (m.regs.read(UC_X86_REG_EIP), m.regs.read(UC_X86_REG_EAX))
        m.request_boundary()

    def after_quantum(self) -> None:
        """Deliver the #GP(0) of the IN/OUT refused in the quantum that just ended."""
        eip, eax = self.refused
        self.refused = None
        m = self._m
        m.regs.write(UC_X86_REG_EIP, eip)
        m.regs.write(UC_X86_REG_EAX, eax)
        m.trap_eip = eip
        try:
            m.emit_at(EventKind.TRAP, eip, vector=int(Vector.GP), insn=m.describe_insn(eip),
                      action="reflect")
            m.deliver_guarded(Vector.GP, eip, error_code=0)
        except GuestStop as stop:
            m.guest_stop(stop, eip)

    def on_in(self, uc: Uc, port: int, size: int, _: object) -> int:
        m = self._m
        try:
            if not io_allowed(m.vcpu, m.read_linear, port, size):
                self._refuse()
                return m.regs.read(UC_X86_REG_EAX)
            self.charge(PORT_IO_CHARGE)
            value = m.ports.read(port, size)
            claimed = value is not None
            if value is None:
                value = (1 << (8 * size)) - 1
            if m.events.wants(EventKind.IO):
                m.emit_at(EventKind.IO, m.regs.read(UC_X86_REG_EIP), port=port, size=size,
                          dir="in", value=value, **({} if claimed else {"unclaimed": True}))
            return value
        except Exception as exc:  # noqa: BLE001
            m.vmm_error(exc, m.regs.read(UC_X86_REG_EIP))
            return 0

    def on_out(self, uc: Uc, port: int, size: int, value: int, _: object) -> None:
        m = self._m
        try:
            if not io_allowed(m.vcpu, m.read_linear, port, size):
                self._refuse()
                return
            self.charge(PORT_IO_CHARGE)
            value &= (1 << (8 * size)) - 1
            claimed = m.ports.write(port, size, value)
            if m.events.wants(EventKind.IO):
                m.emit_at(EventKind.IO, m.regs.read(UC_X86_REG_EIP), port=port, size=size,
                          dir="out", value=value, **({} if claimed else {"unclaimed": True}))
            # an interrupt to take now, or a timer the guest reprogrammed (the quantum was
            # sized to the old deadline): end the quantum, so that what happens next does
            # not depend on where quanta happen to end (replays slice time differently)
            if m.vcpu.vif and m.pic.pending() or \
                    m.clock.next_deadline() != self.planned_deadline:
                m.request_boundary()
        except Exception as exc:  # noqa: BLE001
            m.vmm_error(exc, m.regs.read(UC_X86_REG_EIP))
