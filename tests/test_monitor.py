"""The monitor commands gdb's `monitor` runs (the prompt of issue 6 will share them)."""
from __future__ import annotations

from guest_build import build

from dbgvm.core.faults import StopReason
from dbgvm.core.loader import load
from dbgvm.core.machine import Machine
from dbgvm.repl.commands import Monitor


def setup(name="basics"):
    m = Machine()
    image = load(build(name), m.ram_size)
    m.load(image)
    return m, Monitor(m), image.symbols


def test_catch_trap_vector_stops_after_the_trapping_instruction():
    m, mon, sym = setup()
    assert "event breakpoint 0: catch trap 0" in mon.run("catch trap 0")
    stop = m.run()
    assert stop.reason is StopReason.CATCH
    assert mon.last_catch.eip == sym["de_insn"]
    assert m.registers().eip == sym["de_handler"]      # the #DE was delivered


def test_catch_irq_and_pt_and_their_arguments():
    m, mon, sym = setup()
    mon.run("catch irq 0x21")                         # never happens in basics
    mon.run("catch irq 0x20")
    stop = m.run()
    assert stop.reason is StopReason.CATCH and mon.last_catch.fields["vector"] == 0x20
    m2, mon2, _ = setup("paging")
    mon2.run("catch pt dirty")
    m2.run()
    assert mon2.last_catch.fields["op"] == "dirty"


def test_errors_are_one_line_and_change_nothing():
    m, mon, _ = setup()
    before = bytes(m.read_physical(0, 64))
    for line in ("catch bogus", "catch vif 3", "xp", "xp zz", "setp 0 256", "setp 0x7fffffff 1",
                 "step-irqs maybe", "nope", "xp 'unterminated"):
        out = mon.run(line)
        assert out.startswith("error: ") and out.count("\n") == 1, (line, out)
    assert bytes(m.read_physical(0, 64)) == before
    assert mon.catches == []


def test_help_covers_every_command():
    _, mon, _ = setup()
    text = mon.run("help")
    for name in mon.commands:
        assert name in text
        assert mon.run(f"help {name}").startswith(name)
