"""What happens between quanta: virtual time, HLT, STI's interrupt shadow and interrupts.

The run loop (machine.py) runs the guest in quanta of at most ``QUANTUM`` instructions. Between
two, the scheduler expires timers, applies inputs, wakes the CPU from HLT (letting virtual time
jump to the next deadline while it idles) and takes a pending interrupt from the PIC; it also
sizes the next quantum so that it ends at the next timer deadline, at the end of the caller's
time slice or instruction limit, or after one instruction when something waits for it.
It sees the machine only through the ``RunLoop`` Protocol (cpu_context.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from unicorn.x86_const import UC_X86_REG_EIP

from .events import EventKind
from .faults import GuestStop
from .pit import IRQ_LINE as PIT_IRQ
from .stops import StopReason

if TYPE_CHECKING:
    from .cpu_context import RunLoop

QUANTUM = 1 << 20


@dataclass(frozen=True)
class SchedulerState:
    """What a snapshot keeps of the scheduler (the run's own limits are the caller's)."""

    halted: bool
    shadow_until: int


class Scheduler:
    # wiring, and the current run's own settings (its caller sets them at each run)
    NOT_SAVED = frozenset({"m", "until_time", "stepping", "planned_deadline"})

    def __init__(self, owner: "RunLoop") -> None:
        self._m = owner
        self.halted = False              # in HLT, waiting for an interrupt
        self.shadow_until = 0            # no interrupt is taken before this instruction count
        self.until_time: int | None = None   # the run's time slice ends here (virtual time)
        self.stepping = False            # a single step: no interrupt is taken before it
        self.planned_deadline: int | None = None   # the timer deadline the quantum runs to

    def save(self) -> SchedulerState:
        return SchedulerState(self.halted, self.shadow_until)

    def restore(self, state: SchedulerState) -> None:
        self.halted, self.shadow_until = state.halted, state.shadow_until

    def interrupt_shadow(self) -> None:
        """After STI, the next instruction runs before any interrupt is taken."""
        self.shadow_until = self._m.current_icount() + 2

    def boundary(self) -> None:
        """Between quanta: timers, inputs, waking from HLT, and taking an interrupt."""
        m = self._m
        m.clock.expire()
        if m.inputs.pending():
            m.inputs.apply(m.icount, m.clock.now())
        eip = m.regs.read(UC_X86_REG_EIP)
        m.trap_eip = eip
        if self.halted:
            if not m.vcpu.vif:
                m.end_run(StopReason.HALTED, f"HLT with the virtual IF clear at eip "
                          f"{eip - 1:#010x}: nothing can wake the CPU", 0, eip)
                return
            if not self._idle(eip):
                return
            self.halted = False
        if m.icount < self.shadow_until or not m.vcpu.vif or not m.pic.pending() \
                or self.stepping:
            return
        acked = m.pic.acknowledge()
        if acked is None:
            return
        vector, line = acked
        m.emit_at(EventKind.IRQ, eip, vector=vector, line=line)
        try:
            m.deliver_guarded(vector, eip, external=True)
        except GuestStop as stop:
            m.guest_stop(stop, eip)
        except Exception as exc:  # noqa: BLE001
            m.vmm_error(exc, eip)

    def wakeup_time(self) -> int | None:
        """Virtual time of the next timer interrupt that can reach the CPU, or of the next
        scheduled (replayed) input (None: nothing will come)."""
        m = self._m
        deadlines = [m.inputs.next_deadline(),
                     None if m.pic.masked(PIT_IRQ) else m.pit.next_deadline()]
        return min((d for d in deadlines if d is not None), default=None)

    def _idle(self, eip: int) -> bool:
        """HLT with the virtual IF set: let virtual time pass until an interrupt is pending
        (True), or end the run (False). Time jumps from timer deadline to timer deadline
        (or a replayed input's time). A run with ``until_time`` idles no further than that
        and ends with TIME_SLICE: a front end waiting for outside input (dbgvm/domains.py)
        runs in slices and decides there how long to wait."""
        m = self._m
        while not m.pic.pending():
            if m.inputs.pending():
                m.inputs.apply(m.icount, m.clock.now())
                continue
            deadline = self.wakeup_time()
            until = self.until_time
            if until is not None and (deadline is None or deadline > until):
                m.clock.idle_until(until)
                m.end_run(StopReason.TIME_SLICE, "idle to the end of the time slice", 0, eip)
                return False
            if deadline is None:
                m.end_run(StopReason.HALTED, f"HLT at eip {eip - 1:#010x} with no timer "
                          "interrupt that can arrive and none pending", 0, eip)
                return False
            m.clock.idle_until(deadline)
            m.clock.expire()
        return True

    def budget(self, limit: int | None, max_insns: int | None) -> int | None:
        """The next quantum's size: to the next timer deadline, the end of the time slice or
        the instruction ``limit``, one instruction inside STI's shadow or when an action
        waits for the next instruction to retire. None: the run ends here (and was ended)."""
        m = self._m
        icount, clock = m.icount, m.clock
        budget = max(1, self.shadow_until - icount) if icount < self.shadow_until else QUANTUM
        if m.after_step:
            budget = 1
        deadline = self.planned_deadline = clock.next_deadline()
        if deadline is not None:
            budget = min(budget, max(1, deadline - clock.now()))
        until = self.until_time
        if until is not None:
            if clock.now() >= until:
                m.end_run(StopReason.TIME_SLICE, "end of the time slice", 0)
                return None
            budget = min(budget, until - clock.now())
        if limit is not None:
            if icount >= limit:
                m.end_run(StopReason.MAX_INSNS, f"instruction limit reached "
                          f"({max_insns} instructions)", 0)
                return None
            budget = min(budget, limit - icount)
        return budget
