"""The core's debugger points with owners (core/debug_points.py, core/debug.py): handles,
a reference count per address and watched range, and Unicorn's exit or hook kept while any
owner holds the point."""
from __future__ import annotations

from guest_build import build

from dbgvm.core.assembly import build_machine
from dbgvm.core.debug import WatchKind
from dbgvm.core.debug_points import PointBook
from dbgvm.core.faults import StopReason
from dbgvm.core.loader import load
from dbgvm.core.machine import Machine
from dbgvm.core.stops import BreakpointHit, WatchHit


def machine(name: str) -> tuple[Machine, dict[str, int]]:
    m = build_machine()
    image = load(build(name), m.ram_size)
    m.load(image)
    return m, image.symbols


# -- the book alone -------------------------------------------------------------------------
def test_two_owners_at_one_address_count_two_and_each_gives_back_only_its_own():
    book = PointBook()
    gdb = book.new_breakpoint(0x1000, "gdb")
    monitor = book.new_breakpoint(0x1000, "monitor")
    assert gdb != monitor and book.count(0x1000) == 2
    assert book.breakpoints_at(0x1000) == (gdb, monitor)
    assert book.release(monitor) == 1
    assert book.release(monitor) is None            # not held twice
    assert book.breakpoint_addresses() == frozenset({0x1000})
    assert book.handles("monitor") == [] and book.handles("gdb") == [gdb]
    assert book.release(gdb) == 0
    assert book.breakpoint_addresses() == frozenset() and book.count(0x1000) == 0


def test_a_handle_made_up_with_another_number_releases_nothing():
    book = PointBook()
    real = book.new_breakpoint(0x2000, "gdb")
    forged = type(real)(real.number + 1, "gdb", 0x2000)
    assert book.release(forged) is None and book.count(0x2000) == 1


def test_watchpoints_are_counted_per_range_and_kind_and_matched_per_access():
    book = PointBook()
    write = book.new_watchpoint(0x3000, 4, WatchKind.WRITE, "gdb")
    again = book.new_watchpoint(0x3000, 4, WatchKind.WRITE, "monitor")
    read = book.new_watchpoint(0x3002, 2, WatchKind.READ, "monitor")
    access = book.new_watchpoint(0x3000, 8, WatchKind.ACCESS, "gdb")
    assert book.count((0x3000, 4, WatchKind.WRITE)) == 2
    assert book.count((0x3002, 2, WatchKind.READ)) == 1
    assert book.watch_keys() == {write.point, read.point, access.point}
    assert book.watchpoints_seeing(0x3003, writing=True) == (write, again, access)
    assert book.watchpoints_seeing(0x3003, writing=False) == (read, access)
    assert book.watchpoints_seeing(0x3006, writing=True) == (access,)
    assert book.watchpoints_seeing(0x3008, writing=False) == ()
    book.release(write)
    assert book.watch_keys() == {again.point, read.point, access.point}


def test_numbers_go_on_across_a_restore():
    book = PointBook()
    kept = book.new_breakpoint(0x10, "a")
    saved = book.save()
    dropped = book.new_breakpoint(0x10, "a")
    book.restore(saved)
    assert book.count(0x10) == 1 and book.holds(kept) and not book.holds(dropped)
    newer = book.new_breakpoint(0x10, "a")
    assert newer.number > dropped.number
    assert book.release(dropped) is None and book.count(0x10) == 2


# -- on a machine ---------------------------------------------------------------------------
def test_the_exit_stays_while_any_owner_holds_the_breakpoint():
    m, sym = machine("basics")
    handler = sym["timer_handler"]
    gdb = m.debug.add_breakpoint(handler, "gdb")
    monitor = m.debug.add_breakpoint(handler, "monitor")
    stop = m.run()
    assert stop.reason is StopReason.BREAKPOINT
    assert stop.cause == BreakpointHit(handler, (gdb, monitor))
    assert m.debug.remove(monitor)
    assert m.breakpoints == frozenset({handler})
    stop = m.run()                      # gdb's still stops the guest
    assert stop.reason is StopReason.BREAKPOINT and stop.eip == handler
    assert stop.cause == BreakpointHit(handler, (gdb,))
    assert m.debug.remove(gdb)
    assert m.breakpoints == frozenset() and handler not in m.debug.armed
    assert m.run().reason is StopReason.DEBUG_EXIT


def test_the_watch_hook_stays_while_any_owner_holds_the_watchpoint():
    m, sym = machine("basics")
    ticks = sym["ticks"]
    gdb = m.debug.add_watchpoint(ticks, 4, WatchKind.WRITE, "gdb")
    monitor = m.debug.add_watchpoint(ticks, 4, WatchKind.WRITE, "monitor")
    stop = m.run()
    assert stop.reason is StopReason.WATCHPOINT
    assert stop.cause == WatchHit(WatchKind.WRITE, ticks, (gdb, monitor), 4, 0, 1)
    assert m.debug.remove(gdb)
    stop = m.run()
    assert stop.reason is StopReason.WATCHPOINT
    assert stop.cause == WatchHit(WatchKind.WRITE, ticks, (monitor,), 4, 1, 2)
    assert m.debug.remove(monitor) and not m.debug.watching
    assert m.run().reason is StopReason.DEBUG_EXIT


def test_set_aside_points_stop_nothing_and_come_back():
    m, sym = machine("basics")
    handle = m.debug.add_breakpoint(sym["timer_handler"], "test")
    with m.debug.set_aside():
        assert m.debug.armed == frozenset()
        assert m.run().reason is StopReason.DEBUG_EXIT
        assert m.debug.holds(handle)
    assert m.debug.handles() == [handle]


def test_set_aside_on_a_breakpoint_nobody_reported_does_not_stop():
    m, sym = machine("basics")
    m.debug.add_breakpoint(sym["timer_handler"], "test")
    assert m.run().reason is StopReason.BREAKPOINT
    with m.debug.set_aside():
        m.debug.report_here(0, 0)       # forget the report: a re-run would stop here
        assert m.run(5).reason is StopReason.MAX_INSNS
