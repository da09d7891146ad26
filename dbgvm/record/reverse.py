"""Going backwards in a replayed run: restore the nearest snapshot, replay forward.

A replay is deterministic (every outside input is scheduled at its recorded time), so the state
after N instructions is always the same; the engine keeps in-memory snapshots every
``interval`` instructions as the run first goes forward, and reaches any earlier point by
restoring the snapshot at or before it and running the difference with breakpoints set aside
and events muted (the debugger already saw them). Going forward past the end of the recorded
run is refused: there is no history there.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ..core.faults import StopReason
from ..core.machine import Machine, Stop

DEFAULT_INTERVAL = 2_000_000


class SeenOutput:
    """The console output of a VM that goes back in time: what the guest writes again while
    it re-executes history already seen was shown the first time, so only bytes beyond the
    furthest point shown reach ``write``. The guest's output is a function of its state, so
    a byte count places it: ``produced`` is how many bytes the guest has written up to the
    current point of the run (the engine sets it back with each snapshot it restores),
    ``shown`` how many were ever shown. Other VMs' output passes through."""

    def __init__(self, write: Callable[[int, bytes], None], vm: int = 0) -> None:
        self._write = write
        self.vm = vm
        self.produced = 0
        self.shown = 0

    def write(self, vm: int, data: bytes) -> None:
        if vm != self.vm:
            self._write(vm, data)
            return
        start, self.produced = self.produced, self.produced + len(data)
        if self.produced > self.shown:
            self._write(vm, data[max(0, self.shown - start):])
            self.shown = self.produced


class ReverseEngine:
    def __init__(self, machine: Machine, end_icount: int,
                 interval: int = DEFAULT_INTERVAL,
                 on_going_back: Callable[[], None] = lambda: None,
                 console: SeenOutput | None = None, recorded_end: str = "") -> None:
        self.machine = machine
        self.end_icount = end_icount
        self.recorded_end = recorded_end      # why the recording ended, e.g. "poweroff: ..."
        self.interval = interval
        self.store = machine.snapshot_store()
        self._on_going_back = on_going_back
        self.console = console
        self._console_at: dict[int, int] = {}     # snapshot index -> console bytes produced
        if not self.store.snapshots:
            self._take()

    def _take(self) -> None:
        m = self.machine
        self.store.take(m.icount, m.clock.now())
        if self.console is not None:
            self._console_at[len(self.store.snapshots) - 1] = self.console.produced

    # -- forward, taking snapshots ----------------------------------------------------------
    def _next_snapshot_at(self) -> int:
        last = self.store.snapshots[-1].icount
        return max(last + self.interval, self.machine.icount + 1)

    def run(self, max_insns: int | None = None, *,
            interrupted: Callable[[], bool] | None = None) -> Stop:
        """Forward, as Machine.run, but never past the end of the recorded run."""
        m = self.machine
        limit = self.end_icount if max_insns is None else min(self.end_icount,
                                                               m.icount + max_insns)
        while True:
            if m.icount >= self.end_icount:
                return self._history_end()
            target = min(limit, self._next_snapshot_at())
            stop = m.run(target - m.icount, interrupted=interrupted, pause=target < limit)
            if stop.reason is not StopReason.MAX_INSNS:
                return stop
            if m.icount >= self.store.snapshots[-1].icount + self.interval:
                self._take()
            if m.icount >= limit:
                if m.icount >= self.end_icount:
                    return self._history_end()
                return stop

    def step(self) -> Stop:
        """One instruction forward, taking an interrupt that is due first, as the recorded
        run did (a debugger's usual no-interrupt stepping would leave the recorded history)."""
        m = self.machine
        if m.icount >= self.end_icount:
            return self._history_end()
        held, m.irqs_while_stepping = m.irqs_while_stepping, True
        try:
            return m.step()
        finally:
            m.irqs_while_stepping = held

    def _history_end(self) -> Stop:
        m = self.machine
        why = f" (the recording ended with {self.recorded_end})" if self.recorded_end else ""
        return Stop(StopReason.HISTORY_END, f"end of the recorded run{why}",
                    m.registers().eip, m.icount, 0)

    # -- backward -------------------------------------------------------------------------
    def goto(self, icount: int) -> Stop:
        """The state after ``icount`` instructions (clamped to the recorded run)."""
        m = self.machine
        icount = max(0, min(icount, self.end_icount))
        index = self.store.latest_at_or_before(icount)
        if icount < m.icount or index is not None and \
                self.store.snapshots[index].icount > m.icount:
            self._restore(index)
        with m.events.muted(), m.debug.set_aside():
            while m.icount < icount:
                stop = m.run(icount - m.icount)
                if stop.reason is not StopReason.MAX_INSNS:
                    break
        return Stop(StopReason.STEP, f"at icount {m.icount}", m.registers().eip, m.icount, 0)

    def _restore(self, index: int | None) -> None:
        self._on_going_back()
        index = 0 if index is None else index
        self.store.restore(index)
        if self.console is not None:
            self.console.produced = self._console_at.get(index, 0)

    def step_back(self, count: int = 1) -> Stop:
        m = self.machine
        if m.icount == 0:
            return self._history_start()
        return self.goto(max(0, m.icount - count))

    def _history_start(self) -> Stop:
        m = self.machine
        return Stop(StopReason.HISTORY_START, "start of the recorded run", m.registers().eip,
                    m.icount, 0)

    def continue_back(self) -> Stop:
        """To the last breakpoint or watchpoint hit before the current point; the start of
        the recorded run when there is none."""
        m = self.machine
        now = m.icount
        index = self.store.latest_at_or_before(now)
        include_end = False           # a watchpoint hit where we are is the one we are at
        while index is not None:
            start = self.store.snapshots[index].icount
            hit = self._last_hit_between(index, now, include_end)
            include_end = True
            if hit is not None:
                icount, stop = hit
                self.goto(icount)
                if stop.reason is StopReason.BREAKPOINT:
                    m.report_breakpoint_here()
                # the stop as the hit made it, with what caused it (goto re-ran it silently)
                return replace(stop, eip=m.registers().eip, icount=m.icount, exit_status=0)
            now = start
            index = index - 1 if index > 0 else None
        self.goto(0)
        return self._history_start()

    def _last_hit_between(self, index: int, end: int, include_end: bool
                          ) -> tuple[int, Stop] | None:
        """Replay from snapshot ``index`` to ``end`` with breakpoints live: the last hit in
        between. A breakpoint hit is counted at the instruction it stops before, so from the
        snapshot itself (the run steps off a breakpoint it starts on: look first) up to but
        not at ``end`` (the next interval's start, or where we are). A watchpoint hit is
        counted after the access, so after the snapshot and, with ``include_end``, at
        ``end``."""
        m = self.machine
        self._restore(index)
        last = None
        eip = m.registers().eip
        if m.icount < end and eip in m.breakpoints:
            last = (m.icount, m.debug.breakpoint_stop(eip, m.icount))
        with m.events.muted():
            while m.icount < end:
                stop = m.run(end - m.icount)
                if stop.reason is StopReason.BREAKPOINT:
                    if m.icount < end:
                        last = (m.icount, stop)
                    continue
                if stop.reason is StopReason.WATCHPOINT:
                    if m.icount < end or include_end:
                        last = (m.icount, stop)
                    continue
                if stop.reason is not StopReason.MAX_INSNS:
                    break
        return last
