"""Breakpoints (Unicorn exits kept safe under shadow paging), watchpoints and stepping, at the
Machine API that every front end uses."""
from __future__ import annotations
import pytest

from guest_build import build

from dbgvm.core.assembly import build_machine
from dbgvm.core.debug import WatchKind
from dbgvm.core.events import EventKind
from dbgvm.core.faults import StopReason
from dbgvm.core.loader import load
from dbgvm.core.machine import Machine


def machine(name: str):
    m = build_machine()
    image = load(build(name), m.ram_size)
    m.load(image)
    return m, image.symbols


def run_to_end(m: Machine):
    while True:
        stop = m.run(20_000_000)
        if stop.reason is not StopReason.BREAKPOINT:
            return stop


def test_breakpoint_hit_through_interrupt_delivery_every_time():
    m, sym = machine("basics")
    m.debug.add_breakpoint(sym["timer_handler"], "test")
    hits = []
    while (stop := m.run()).reason is StopReason.BREAKPOINT:
        assert stop.eip == m.registers().eip == sym["timer_handler"]
        hits.append(stop.icount)
    assert len(hits) == 3 and stop.exit_status == 33
    assert hits == sorted(set(hits))


def test_breakpoint_on_a_page_mapped_only_later_in_user_mode():
    m, sym = machine("paging")
    m.debug.add_breakpoint(sym["user_read"], "test")
    stop = m.run()
    assert stop.reason is StopReason.BREAKPOINT and stop.eip == sym["user_read"]
    assert m.vcpu.cpl == 3
    assert sym["user_read"] in m.debug.armed
    assert run_to_end(m).exit_status == 19
    plain, _ = machine("paging")
    plain.run()
    assert bytes(m.console_output) == bytes(plain.console_output)


def test_breakpoint_on_the_first_byte_of_a_page_after_an_unmapped_one():
    # user_entry starts the user page; in the ring-3 shadow the page before it (kernel code)
    # is not mapped, so this breakpoint cannot be an exit and takes the code-hook path
    m, sym = machine("paging")
    assert sym["user_entry"] & 0xFFF == 0
    m.debug.add_breakpoint(sym["user_entry"], "test")
    stop = m.run()
    assert stop.reason is StopReason.BREAKPOINT and stop.eip == sym["user_entry"]
    assert m.registers().eip == sym["user_entry"] and m.vcpu.cpl == 3
    assert run_to_end(m).exit_status == 19


def test_breakpoints_not_hit_change_nothing_and_are_armed():
    m, sym = machine("basics")
    loop_page = sym["wait"] & ~0xFFF
    # on the page the guest's code runs from (its tail holds the IDT: never executed)
    spots = [loop_page + 0xE00 + 4 * i for i in range(100)]
    for spot in spots:
        m.debug.add_breakpoint(spot, "test")
    events = []
    m.events.subscribe({EventKind.IRQ, EventKind.VIF}, events.append)
    stop = m.run()
    assert stop.exit_status == 33
    assert len(m.debug.armed) == 100
    plain, _ = machine("basics")
    plain_events = []
    plain.events.subscribe({EventKind.IRQ, EventKind.VIF}, plain_events.append)
    plain.run()
    assert [e.to_json() for e in events] == [e.to_json() for e in plain_events]


def test_removed_breakpoint_no_longer_stops():
    m, sym = machine("basics")
    handle = m.debug.add_breakpoint(sym["timer_handler"], "test")
    assert m.run().reason is StopReason.BREAKPOINT
    assert m.debug.remove(handle)
    assert not m.debug.remove(handle)                # given back already
    assert m.run().reason is StopReason.DEBUG_EXIT


def test_step_from_a_breakpoint_executes_it_and_watchpoint_reports_after_access():
    m, sym = machine("basics")
    m.debug.add_breakpoint(sym["timer_handler"], "test")
    m.debug.add_watchpoint(sym["ticks"], 4, WatchKind.WRITE, "test")
    assert m.run().reason is StopReason.BREAKPOINT
    stop = m.step()                                  # push %eax
    assert stop.reason is StopReason.STEP and stop.eip == sym["timer_handler"] + 1
    stop = m.run()                                   # incl ticks
    assert stop.reason is StopReason.WATCHPOINT
    assert stop.eip == sym["timer_handler"] + 7      # after the access completed
    assert stop.cause.vaddr == sym["ticks"] and stop.cause.kind is WatchKind.WRITE
    assert (stop.cause.size, stop.cause.old, stop.cause.new) == (4, 0, 1)
    assert m.read_physical(sym["ticks"], 4) == b"\x01\x00\x00\x00"


def test_writing_cs_and_ss_as_the_guest_sees_them():
    import pytest

    from dbgvm.core.guest_registers import RegisterError, read_register, write_register
    m, sym = machine("basics")
    handle = m.debug.add_breakpoint(sym["de_insn"], "test")
    m.run()
    assert (read_register(m, "cs"), read_register(m, "ss")) == (0x08, 0x10)
    write_register(m, "ss", 0x38)                  # another flat DPL-0 data segment
    assert read_register(m, "ss") == 0x38
    for name, value in (("ss", 0x20),              # DPL 3 data: not a ring-0 stack
                        ("ss", 0x3B),              # RPL 3: would change the privilege level
                        ("cs", 0x10),              # data, not code
                        ("cs", 0x99)):             # beyond the GDT
        with pytest.raises(RegisterError):
            write_register(m, name, value)
    assert (read_register(m, "cs"), read_register(m, "ss")) == (0x08, 0x38)
    m.debug.remove(handle)
    assert m.run().exit_status == 33


def test_resuming_from_a_breakpoint_whose_instruction_needs_a_shadow_fill_executes_it():
    # `movl $5, user_skip` at user_entry writes a page not yet in the ring-3 shadow: the
    # one-instruction step off the breakpoint is used up by the fill and must be retried
    for resume in ("step", "run"):
        m, sym = machine("paging")
        m.debug.add_breakpoint(sym["user_entry"], "test")
        stop = m.run()
        assert stop.reason is StopReason.BREAKPOINT and stop.eip == sym["user_entry"]
        icount = m.icount
        stop = m.step() if resume == "step" else m.run()
        if resume == "step":
            assert stop.reason is StopReason.STEP
            assert m.registers().eip == sym["user_read"] and m.icount == icount + 1
            assert m.read_linear(sym["user_skip"], 4) == (5).to_bytes(4, "little")
        else:
            assert stop.reason is not StopReason.BREAKPOINT and stop.exit_status == 19


def test_addresses_beyond_32_bits_are_refused_not_wrapped():
    from dbgvm.core.debug import DebugError
    from dbgvm.core.assembly import build_machine
    debugger = build_machine(ram_mb=4).debug
    for call in (lambda: debugger.read_virtual(1 << 32, 4),
                 lambda: debugger.read_virtual(0xFFFFFFFE, 4),
                 lambda: debugger.write_virtual(0x1_0000_1000, b"x"),
                 lambda: debugger.add_breakpoint(0x1_0000_0000, "test"),
                 lambda: debugger.add_watchpoint(0x1000, 0, WatchKind.WRITE, "test"),
                 lambda: debugger.add_watchpoint(0xFFFFFFFF, 2, WatchKind.WRITE, "test")):
        with pytest.raises(DebugError):
            call()
    assert debugger.read_virtual(0x1000, 4) == bytes(4)     # paging off: physical 0x1000
