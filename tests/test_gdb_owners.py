"""Each front end's points are its own: gdb's Z packets and the monitor's `break` / `watch`
at the same place are two points, and neither front end can delete the other's (a `monitor
delete N` used to take out gdb's Z0 while the stub still believed it set). Driven through
the stub's socket with a raw client; the monitor is reached both through gdb's `monitor`
(qRcmd) and directly, as the prompt beside gdb does."""
from __future__ import annotations

import pytest
from stub_harness import Stub, machine_for

from dbgvm.repl.commands import CommandInterpreter

BASICS_EXIT = b"W21"            # the basics guest's debug-exit status, 33


@pytest.fixture
def basics():
    machine = machine_for("basics")
    monitor = CommandInterpreter(machine)
    stub = Stub(machine, monitor=monitor.run)
    yield stub, monitor, machine.symbols
    stub.close()


def monitor_command(client, line: str) -> str:
    """``monitor LINE`` as gdb sends it: the text the stub sends back in O packets."""
    client.send_packet(b"qRcmd," + line.encode().hex().encode())
    output = []
    while (reply := client.reply(timeout=10)) != b"OK":
        assert reply.startswith(b"O"), reply
        output.append(bytes.fromhex(reply[1:].decode()).decode())
    return "".join(output)


def eip(client) -> int:
    return int.from_bytes(bytes.fromhex(client.ask(b"p8").decode()), "little")


def test_monitor_delete_leaves_gdbs_breakpoint_at_the_same_address(basics):
    stub, _, sym = basics
    handler = sym["timer_handler"]
    with stub.attach() as c:
        assert c.ask(b"Z0,%x,1" % handler) == b"OK"
        assert monitor_command(c, "break timer_handler").startswith("breakpoint 1 at ")
        assert monitor_command(c, "delete 1") == "deleted breakpoint 1\n"
        assert c.ask(b"c", timeout=30) == b"T05thread:01;swbreak:;"
        assert eip(c) == handler
        assert c.ask(b"c", timeout=30) == b"T05thread:01;swbreak:;"   # and again
        assert c.ask(b"z0,%x,1" % handler) == b"OK"
        assert c.ask(b"c", timeout=30) == BASICS_EXIT       # nobody holds one any more


def test_gdbs_z0_removal_leaves_the_monitors_breakpoint(basics):
    stub, monitor, sym = basics
    handler = sym["timer_handler"]
    with stub.attach() as c:
        assert monitor_command(c, "break timer_handler").startswith("breakpoint 1 at ")
        assert c.ask(b"Z0,%x,1" % handler) == b"OK"
        assert c.ask(b"z0,%x,1" % handler) == b"OK"
        assert c.ask(b"c", timeout=30) == b"T05thread:01;swbreak:;"
        assert eip(c) == handler
        assert "1    breakpoint" in monitor_command(c, "info breakpoints")
        assert monitor_command(c, "delete 1") == "deleted breakpoint 1\n"
        assert c.ask(b"c", timeout=30) == BASICS_EXIT


def test_z1_at_a_monitor_breakpoint_is_reported_as_a_hardware_breakpoint(basics):
    stub, _, sym = basics
    handler = sym["timer_handler"]
    with stub.attach() as c:
        monitor_command(c, "break timer_handler")
        assert c.ask(b"Z1,%x,1" % handler) == b"OK"
        assert c.ask(b"c", timeout=30) == b"T05thread:01;hwbreak:;"
        assert c.ask(b"Z0,%x,1" % handler) == b"OK"
        assert c.ask(b"c", timeout=30) == b"T05thread:01;swbreak:;"


def test_monitor_delete_leaves_gdbs_watchpoint_on_the_same_bytes(basics):
    stub, _, sym = basics
    ticks = sym["ticks"]
    with stub.attach() as c:
        assert c.ask(b"Z2,%x,4" % ticks) == b"OK"
        assert monitor_command(c, "watch ticks").startswith("watchpoint 1: write ")
        assert monitor_command(c, "delete 1") == "deleted watchpoint 1\n"
        assert c.ask(b"c", timeout=30) == b"T05thread:01;watch:%x;" % ticks
        assert c.ask(b"m%x,4" % ticks) == b"01000000"
        assert c.ask(b"z2,%x,4" % ticks) == b"OK"
        assert c.ask(b"c", timeout=30) == BASICS_EXIT


def test_gdbs_z2_removal_leaves_the_monitors_watchpoint(basics):
    stub, _, sym = basics
    ticks = sym["ticks"]
    with stub.attach() as c:
        assert monitor_command(c, "watch ticks").startswith("watchpoint 1: write ")
        assert c.ask(b"Z2,%x,4" % ticks) == b"OK"
        assert c.ask(b"z2,%x,4" % ticks) == b"OK"
        assert c.ask(b"c", timeout=30) == b"T05thread:01;watch:%x;" % ticks
        assert c.ask(b"m%x,4" % ticks) == b"01000000"


def test_gdbs_rwatch_is_reported_as_its_own_kind_beside_a_monitor_awatch(basics):
    """The monitor's awatch hook may see the read first; gdb is told of its own rwatch."""
    stub, _, sym = basics
    ticks = sym["ticks"]
    with stub.attach() as c:
        monitor_command(c, "watch access ticks")
        assert c.ask(b"Z3,%x,4" % ticks) == b"OK"
        reply = c.ask(b"c", timeout=30)
        assert reply in (b"T05thread:01;rwatch:%x;" % ticks,
                         b"T05thread:01;awatch:%x;" % ticks)
        assert c.ask(b"z3,%x,4" % ticks) == b"OK"


def test_the_monitor_names_its_own_point_when_gdbs_is_at_the_same_place(basics):
    """The prompt beside gdb (here while gdb is attached and idle): its stop line names its
    breakpoint, found among the stop's handles, and counts the hit."""
    stub, monitor, sym = basics
    handler = sym["timer_handler"]
    with stub.attach() as c:
        assert c.ask(b"Z0,%x,1" % handler) == b"OK"
        assert monitor.run("break timer_handler").startswith("breakpoint 1 at ")
        out = monitor.run("continue")
        assert out.startswith(f"breakpoint 1 at {handler:#010x} <timer_handler>\n=> "), out
        table = monitor.run("info breakpoints").splitlines()
        assert table[1].split()[:3] == ["1", "breakpoint", "1"] and len(table) == 2
        assert monitor.run("delete 1") == "deleted breakpoint 1\n"
        assert c.ask(b"c", timeout=30) == b"T05thread:01;swbreak:;"
        assert eip(c) == handler


def test_a_debugger_that_hangs_up_leaves_none_of_its_points_behind(basics):
    stub, monitor, sym = basics
    with stub.attach() as c:
        assert c.ask(b"Z0,%x,1" % sym["timer_handler"]) == b"OK"
        assert c.ask(b"Z2,%x,4" % sym["ticks"]) == b"OK"
    assert monitor.run("break wait").startswith("breakpoint 1 at ")
    with stub.attach() as c:                 # the next gdb: its predecessor's are gone
        assert [h.owner for h in stub.machine.debug.handles()] == ["monitor"]
        assert monitor.run("delete 1") == "deleted breakpoint 1\n"
        assert c.ask(b"c", timeout=30) == BASICS_EXIT
