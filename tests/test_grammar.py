"""The monitor's command language: every command parses to the right object, and every
syntax error message comes out, pointing at the right column."""
from __future__ import annotations

import pytest

from dbgvm.core.debug import WatchKind
from dbgvm.core.events import EventKind
from dbgvm.repl import commands as S
from dbgvm.repl.errors import CommandError, Problem
from dbgvm.repl.expr import Binary, Negate, Number, Op, Register, Scope, Symbol, evaluate
from dbgvm.repl.parser import parse

ALL_KINDS = frozenset(EventKind)


def n(value, column):
    return Number(value, column)


COMMAND_LINES = [
    ("continue", S.Continue()),
    ("c", S.Continue()),
    ("step", S.Step()),
    ("s 5", S.Step(n(5, 2))),
    ("rstep", S.ReverseStep()),
    ("rstep 3", S.ReverseStep(n(3, 6))),
    ("rstep $ecx*2", S.ReverseStep(Binary(Op.MUL, Register("ecx", 6), n(2, 11), 6))),
    ("rcontinue", S.ReverseContinue()),
    ("goto 100", S.Goto(n(100, 5))),
    ("goto 0x10 + 2", S.Goto(Binary(Op.ADD, n(0x10, 5), n(2, 12), 5))),
    ("stop", S.StopCommand()),
    ("break main+4", S.Break(Binary(Op.ADD, Symbol("main", 6), n(4, 11), 6))),
    ("b 0x100", S.Break(n(0x100, 2))),
    ("delete", S.Delete()),
    ("d 3", S.Delete(3, 2)),
    ("info", S.Info()),
    ("info breakpoints", S.InfoBreakpoints()),
    ("watch 0x100", S.Watch(WatchKind.WRITE, n(0x100, 6))),
    ("watch read foo 4", S.Watch(WatchKind.READ, Symbol("foo", 11), n(4, 15))),
    ("watch write $esp", S.Watch(WatchKind.WRITE, Register("esp", 12))),
    ("watch access 8 2", S.Watch(WatchKind.ACCESS, n(8, 13), n(2, 15))),
    ("catch", S.Catch()),
    ("catch vif", S.Catch(S.CatchKind.VIF)),
    ("catch trap", S.Catch(S.CatchKind.TRAP)),
    ("catch trap 13", S.Catch(S.CatchKind.TRAP, vector=13)),
    ("catch irq 0x20", S.Catch(S.CatchKind.IRQ, vector=0x20)),
    ("catch pt", S.Catch(S.CatchKind.PT)),
    ("catch pt fill", S.Catch(S.CatchKind.PT, name="fill")),
    ("catch desc", S.Catch(S.CatchKind.DESC)),
    ("catch hal", S.Catch(S.CatchKind.HAL)),
    ("catch hal net", S.Catch(S.CatchKind.HAL, name="net")),
    ("uncatch", S.Uncatch()),
    ("trace", S.Trace()),
    ("trace on vif,irq", S.Trace(True, frozenset({EventKind.VIF, EventKind.IRQ}))),
    ("trace on all", S.Trace(True, ALL_KINDS)),
    ("trace off", S.Trace(False, ALL_KINDS)),
    ("trace off pt", S.Trace(False, frozenset({EventKind.PT}))),
    ("events", S.Events()),
    ("events vif", S.Events(EventKind.VIF)),
    ("events last 5", S.Events(None, n(5, 12))),
    ("events pt last 3", S.Events(EventKind.PT, n(3, 15))),
    ("regs", S.Regs()),
    ("set eax = 1", S.SetRegister("eax", n(1, 10), 4)),
    ("set $CR3 = 0x1000", S.SetRegister("cr3", n(0x1000, 11), 4)),
    ("x 0x100", S.Examine(False, S.Radix.HEX, S.Unit.BYTE, n(0x100, 2))),
    ("x/4xw foo", S.Examine(False, S.Radix.HEX, S.Unit.WORD, Symbol("foo", 6), None, 4)),
    ("x/dh foo 2", S.Examine(False, S.Radix.SIGNED, S.Unit.HALF, Symbol("foo", 5), n(2, 9))),
    ("x/uc 1", S.Examine(False, S.Radix.CHAR, S.Unit.BYTE, n(1, 5))),
    ("xp/s 0x100", S.Examine(True, S.Radix.STRING, S.Unit.BYTE, n(0x100, 5))),
    ("xp 0x5000 3", S.Examine(True, S.Radix.HEX, S.Unit.BYTE, n(0x5000, 3), n(3, 10))),
    ("x x", S.Examine(False, S.Radix.HEX, S.Unit.BYTE, Symbol("x", 2))),
    ("disas", S.Disas()),
    ("disas main", S.Disas(Symbol("main", 6))),
    ("disas $eip 4", S.Disas(Register("eip", 6), n(4, 11))),
    ("pt walk 0x400000", S.PtWalk(n(0x400000, 8))),
    ("pt stats", S.PtStats()),
    ("pt map", S.PtMap()),
    ("pt pages", S.PtPages()),
    ("gdt", S.Gdt()),
    ("idt", S.Idt()),
    ("tss", S.Tss()),
    ("pic", S.PicCommand()),
    ("pit", S.PitCommand()),
    ("hal stats", S.HalStats()),
    ("quit", S.Quit()),
    ("q", S.Quit()),
    ("help", S.Help()),
    ("help x", S.Help("x")),
    ("help info breakpoints", S.Help("info breakpoints")),
    ("vm", S.Vm()),
    ("vm 1", S.Vm(1, 3)),
    ("send hello world", S.Send(b"hello world\n")),
    ('send "a\\nb\\x01"', S.Send(b"a\nb\x01")),
    ("setp 0x5000 1 0xff", S.SetPhysical(n(0x5000, 5), (n(1, 12), n(0xFF, 14)))),
    ("step-irqs on", S.StepIrqs(True)),
    ("step-irqs off", S.StepIrqs(False)),
]


@pytest.mark.parametrize("line,expected", COMMAND_LINES, ids=[c[0] for c in COMMAND_LINES])
def test_every_command_parses(line, expected):
    assert parse(line) == expected
    assert type(parse("   " + line + "  ")) is type(expected)   # surrounding blanks are fine


def test_every_command_class_is_exercised():
    parsed = {type(expected) for _, expected in COMMAND_LINES}
    assert parsed == set(S.COMMANDS)


def test_blank_lines_and_comments_are_no_command():
    assert parse("") is None
    assert parse("   ") is None
    assert parse("# continue") is None


def test_expression_precedence_and_evaluation():
    scope = Scope(lambda name: {"eax": 0x10, "cr3": 0x5000, "vif": 1}[name],
                  {"main": 0x1000, "data.x": 8})
    cases = {"1+2*3": 7, "(1+2)*3": 9, "10-4-3": 3, "100/7/2": 7, "-3+5": 2, "--4": 4,
             "$eax*2+main": 0x1020, "$cr3/0x1000": 5, "main+data.x": 0x1008,
             "$vif": 1, "7/-2": -3, "0x10+010": 26}
    for text, value in cases.items():
        command = parse(f"step {text}")
        assert evaluate(command.count, scope) == value, text
    assert parse("step -1").count == Negate(Number(1, 6), 5)


# (line, problem, caret column) -- every syntax-level message of the catalogue
SYNTAX_ERRORS = [
    ("frobnicate 1", Problem.UNKNOWN_COMMAND, 0),
    ("  reg", Problem.UNKNOWN_COMMAND, 2),
    ("delete x", Problem.UNEXPECTED_TOKEN, 7),
    ("step 1 2", Problem.UNEXPECTED_TOKEN, 7),
    ("info 3", Problem.UNEXPECTED_TOKEN, 5),
    ("pt bogus", Problem.UNEXPECTED_TOKEN, 3),
    ("set eax 1", Problem.UNEXPECTED_TOKEN, 8),
    ("break", Problem.UNEXPECTED_END, 5),
    ("break (1+", Problem.UNEXPECTED_END, 9),
    ("x", Problem.UNEXPECTED_END, 1),
    ("pt", Problem.UNEXPECTED_END, 2),
    ("trace on", Problem.UNEXPECTED_END, 8),
    ("b 1 @", Problem.BAD_CHARACTER, 4),
    ("goto", Problem.UNEXPECTED_END, 4),
    ("goto 1 2", Problem.UNEXPECTED_TOKEN, 7),
    ("goto (3", Problem.UNEXPECTED_END, 7),
    ("rstep 1 2", Problem.UNEXPECTED_TOKEN, 8),
    ("rcontinue 1", Problem.UNEXPECTED_TOKEN, 10),
    ("goto $nope", Problem.UNKNOWN_REGISTER, 5),
    ("rstep @", Problem.BAD_CHARACTER, 6),
    ("x $nope", Problem.UNKNOWN_REGISTER, 2),
    ("set foo = 1", Problem.UNKNOWN_REGISTER, 4),
    ("trace on vif,bogus", Problem.UNKNOWN_KIND, 13),
    ("events foo", Problem.UNKNOWN_KIND, 7),
    ("catch bogus", Problem.CATCH_KIND, 6),
    ("catch vif 3", Problem.CATCH_ARGUMENT, 10),
    ("catch desc x", Problem.CATCH_ARGUMENT, 11),
    ("catch trap 300", Problem.CATCH_VECTOR, 11),
    ("catch irq pf", Problem.CATCH_VECTOR, 10),
    ("catch pt nope", Problem.PT_OP, 9),
    ("catch hal x", Problem.HAL_CHANNEL, 10),
    ("x/q 1", Problem.BAD_FORMAT, 2),
    ("x/4xz 1", Problem.BAD_FORMAT, 4),
    ("x/4x 1 2", Problem.COUNT_TWICE, 7),
    ("send '\\", Problem.BAD_STRING, 5),
    ("help nope", Problem.UNKNOWN_TOPIC, 5),
]


@pytest.mark.parametrize("line,problem,column", SYNTAX_ERRORS,
                         ids=[c[0] for c in SYNTAX_ERRORS])
def test_syntax_errors_say_what_and_where(line, problem, column):
    with pytest.raises(CommandError) as info:
        parse(line)
    error = info.value
    assert (error.problem, error.column) == (problem, column)
    text = error.render(line)
    message, caret, rest = text.split("\n")
    assert rest == ""
    assert message.startswith("error: ") and message.endswith(" in: " + line)
    # the caret sits under the offending character of the echoed command
    assert caret.strip() == "^"
    assert caret.index("^") == message.index(" in: ") + len(" in: ") + column


def test_messages_name_what_was_expected():
    def message(line):
        with pytest.raises(CommandError) as info:
            parse(line)
        return info.value.message
    assert message("frobnicate") == ("unknown command 'frobnicate' (try 'help'; to type it "
                                     "into the guest: send frobnicate)")
    assert message("delete x") == "unexpected 'x'; expected the end or a number"
    assert message("break") == "the command ends too soon; expected an expression"
    assert message("pt") == "the command ends too soon; expected 'map', 'pages', 'stats' or 'walk'"
    assert message("set eax 1") == "unexpected '1'; expected '='"
    # every kind docs/events.md says an event breakpoint can stop on (port I/O cannot)
    assert message("catch io") == "cannot catch 'io' (vif, trap, irq, pt, desc, hal, syscall)"
    assert message("b 1 @") == "unexpected character '@'"
    assert message("goto") == "the command ends too soon; expected an expression"
    assert message("rcontinue 1") == "unexpected '1'; expected the end"
    assert message("rstep 1 2") == "unexpected '2'; expected the end"


def test_going_back_runs_the_guest_in_the_background():
    for line in ("rstep", "rcontinue", "goto 3"):
        command = parse(line)
        assert command.runs_guest and not command.while_running
        assert S.lookup(line.split()[0]) == [type(command)]


def test_every_message_of_the_catalogue_is_tested():
    """Syntax messages here, run-time ones in test_monitor.py (RUNTIME_ERRORS)."""
    from test_monitor import RUNTIME_ERRORS
    covered = {p for _, p, _ in SYNTAX_ERRORS} | {p for _, p, _ in RUNTIME_ERRORS}
    assert covered == set(Problem)


def test_every_command_has_help():
    for cls in S.COMMANDS:
        assert cls.usage and len(cls.help) > 20, cls
        for name in cls.names:
            assert cls in S.lookup(name)


# -- QEMU habits ----------------------------------------------------------------------------

@pytest.mark.parametrize("line, command", [
    ("info registers", S.Regs()),
    ("info tlb", S.PtPages()),
    ("info mem", S.PtMap()),
    ("info pic", S.PicCommand()),
])
def test_qemu_info_views_map_to_the_monitors_own(line, command):
    assert parse(line) == command


def test_an_unknown_word_points_at_send():
    with pytest.raises(CommandError) as info:
        parse("ls -l /tmp")
    assert info.value.problem is Problem.UNKNOWN_COMMAND
    assert "unknown command 'ls'" in info.value.message
    assert "send ls -l /tmp" in info.value.message
