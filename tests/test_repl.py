"""The prompt: driven through prompt_toolkit's pipe input, and once in a real terminal (tmux).
Also -x scripts, batch scripts, and the same text through gdb's monitor packet."""
from __future__ import annotations

import binascii
import io
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from guest_build import build
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from dbgvm.core.assembly import build_machine
from dbgvm.core.faults import StopReason
from dbgvm.core.loader import load
from dbgvm.core.machine import Machine
from dbgvm.gdbstub.session import Session
from dbgvm.repl.app import Repl, run_repl, run_script
from dbgvm.repl.commands import CommandInterpreter
from dbgvm.repl.completion import MonitorCompleter, MonitorLexer

ROOT = Path(__file__).resolve().parent.parent


class Guest:
    """A machine whose console goes wherever the REPL's sink says (as the CLI wires it)."""

    def __init__(self, name: str) -> None:
        self.sink = None
        self.machine = build_machine(console=self._console)
        image = load(build(name), self.machine.ram_size)
        self.machine.load(image)
        self.symbols = image.symbols

    def _console(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink(0, data)

    def set_sink(self, sink) -> None:
        self.sink = sink


def wait_for(predicate, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def drive(guest: Guest, monitor: CommandInterpreter, steps, **kwargs) -> str:
    """Run the REPL on pipe input; ``steps`` is a list of (text to type, condition to wait
    for before typing the next one)."""
    out: list[str] = []
    failures: list[str] = []
    with create_pipe_input() as pipe:
        def feed():
            try:
                for text, ready in steps:
                    pipe.send_text(text)
                    if ready is None:
                        time.sleep(0.3)        # let completion (a background task) finish
                    elif not wait_for(lambda: ready("".join(out))):
                        failures.append(f"after typing {text!r}: {''.join(out)!r}")
                        break
            finally:
                pipe.send_text("\x03quit\r")
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        run_repl(monitor, console_sink_setter=guest.set_sink, input=pipe,
                 output=DummyOutput(), write=out.append, **kwargs)
        feeder.join(5)
    assert not failures, failures
    return "".join(out)


def test_commands_console_and_breakpoints_through_the_prompt():
    guest = Guest("basics")
    mon = CommandInterpreter(guest.machine)
    text = drive(guest, mon, [
        ("regs\r", lambda o: "cpl 0" in o),
        ("break wait\r", lambda o: "breakpoint 1" in o),
        ("c\r", lambda o: "=> " in o),
        ("bogus\r", lambda o: "unknown command" in o),
    ])
    assert "hello from basics\n" in text          # the guest console, above the prompt
    assert f"breakpoint 1 at {guest.symbols['wait']:#010x} <wait>\n=> " in text
    assert "error: unknown command 'bogus' (try 'help'; to type it into the guest: send " \
        "bogus) in: bogus\n" in text
    assert guest.sink is None                      # the sink is handed back at the end
    # console output arrived before the stop report
    assert text.index("after #GP") < text.index("=> ")


def test_tab_completes_commands_and_symbols():
    guest = Guest("basics")
    mon = CommandInterpreter(guest.machine)
    text = drive(guest, mon, [
        ("disa", None), ("\t", None), (" de_in", None), ("\t", None),
        ("\r", lambda o: "div ecx" in o),
    ])
    assert f"{guest.symbols['de_insn']:#010x} <de_insn>:  div ecx" in text


def test_completer_offers_what_the_grammar_accepts():
    guest = Guest("basics")
    completer = MonitorCompleter(CommandInterpreter(guest.machine))

    def complete(text):
        return [c.text for c in completer.get_completions(Document(text), None)]
    assert complete("ca") == ["catch"]
    assert complete("catch ") == ["vif", "trap", "irq", "pt", "desc", "hal", "syscall"]
    assert complete("catch pt f") == ["fill", "flush"]
    assert sorted(complete("trace on vif,i")) == ["io", "irq"]
    assert complete("x/4x $ea") == ["$eax"]
    assert complete("break de_") == ["de_handler", "de_insn", "de_msg"]
    assert complete("watch re") == ["read"]
    assert complete("set cr") == ["cr0", "cr2", "cr3", "cr4"]
    assert complete("help step") == ["step", "step-irqs"]
    assert complete("rs") == ["rstep"] and complete("rc") == ["rcontinue"]
    assert complete("goto de_i") == ["de_insn"]
    assert "goto" in complete("help g")


def test_highlighting_marks_commands_numbers_registers_symbols():
    guest = Guest("basics")
    lexer = MonitorLexer(CommandInterpreter(guest.machine))
    fragments = lexer.lex_document(Document("x/4x $eax+de_insn 0x10"))(0)
    styles = [(text, style) for style, text in fragments if text.strip()]
    assert styles[0] == ("x", "class:command")
    assert ("$eax", "class:register") in styles and ("de_insn", "class:symbol") in styles
    assert ("0x10", "class:number") in styles
    bad = lexer.lex_document(Document("frob $nope"))(0)
    assert [s for s, t in bad if t.strip()] == ["class:error", "class:error"]


def test_ctrl_c_stops_the_running_guest_and_the_prompt_stays():
    guest = Guest("spin")
    mon = CommandInterpreter(guest.machine)
    text = drive(guest, mon, [
        ("c\r", lambda o: mon.running),
        ("regs\r", lambda o: "the guest is running" in o),
        ("\x03", lambda o: "stopped\n" in o),          # Ctrl-C
        ("regs\r", lambda o: "eax 0x" in o),
    ])
    assert "stopped\n=> " in text and "<spin" in text
    assert mon.vm.last_stop.reason is StopReason.REQUESTED
    assert "error: the guest is running: 'stop' it (or press Ctrl-C) first in: regs" in text


def test_stop_command_while_running_and_toolbar():
    guest = Guest("spin")
    mon = CommandInterpreter(guest.machine)
    repl = Repl(mon, write=lambda text: None)
    repl._columns = lambda: 200                   # a wide terminal: the whole bar
    assert " paused | eip " in repl.toolbar() and "icount 0" in repl.toolbar()
    repl.handle("c")
    assert wait_for(lambda: mon.running)
    assert "| running | icount" in repl.toolbar()
    assert repl.handle("stop")
    repl.wait()
    bar = repl.toolbar()
    # (the stop lands wherever the guest is: at the first quantum boundary after it)
    assert " paused | eip " in bar and "stop: requested" in bar
    assert re.search(r"eip 0x[0-9a-f]+ <\w+", bar)
    assert f"icount {guest.machine.icount}" in bar


def test_the_toolbar_fits_the_terminal_line():
    """At 80 columns a long symbol and then the stop reason give way; the state, eip, cpl,
    vif and icount always stay."""
    guest = Guest("spin")
    mon = CommandInterpreter(guest.machine)
    repl = Repl(mon, write=lambda text: None)
    repl.handle("c")
    assert wait_for(lambda: mon.running)
    assert repl.handle("stop")
    repl.wait()
    repl._columns = lambda: 200
    wide = repl.toolbar()
    assert "<spin" in wide and "stop: requested" in wide and len(wide) > 80
    for columns in (70, 80):
        repl._columns = lambda columns=columns: columns          # a terminal that narrow
        bar = repl.toolbar()
        assert len(bar) <= columns, (columns, bar)
        assert re.search(r" paused \| eip 0x[0-9a-f]{8}.* \| cpl \d \| vif \d \| icount \d+", bar)


def test_going_back_through_the_prompt_updates_the_toolbar():
    from dbgvm.record.reverse import ReverseEngine
    end = Guest("basics").machine
    end.run()
    guest = Guest("basics")
    mon = CommandInterpreter(guest.machine, reverse=ReverseEngine(guest.machine, end.icount))
    out: list[str] = []
    repl = Repl(mon, write=out.append)
    repl._columns = lambda: 200                   # a wide terminal: the whole bar
    assert repl.handle("step 5", wait=True)
    assert repl.handle("rstep 2", wait=True)
    assert out[-1].endswith("   (icount 3)\n")
    bar = repl.toolbar()
    assert " paused | eip " in bar and "icount 3 | stop: step" in bar
    assert repl.handle("rcontinue", wait=True)
    assert out[-1].startswith("start of the recorded run\n")
    assert "icount 0 | stop: history-start" in repl.toolbar()
    plain = Repl(CommandInterpreter(Guest("basics").machine), write=out.append)
    assert not plain.handle("goto 3", wait=True)
    assert out[-1].startswith("error: going backwards needs a recorded run")


def test_history_file_keeps_commands(tmp_path):
    guest = Guest("basics")
    history = tmp_path / "history"
    drive(guest, CommandInterpreter(guest.machine), [("regs\r", lambda o: "eax" in o)],
          history_file=history)
    assert "+regs" in history.read_text()


def test_scripts_run_before_the_prompt(tmp_path):
    guest = Guest("basics")
    script = tmp_path / "start.dbg"
    script.write_text("# comment\nbreak wait\n\ncontinue\nxp hello 5\n")
    text = drive(guest, CommandInterpreter(guest.machine),
                 [("info\r", lambda o: "vm 0 of 1" in o)], scripts=[script])
    assert "(start.dbg:2) break wait\nbreakpoint 1" in text
    assert f"{guest.symbols['hello']:08x}: 68 65 6c 6c 6f" in text
    assert text.index("68 65 6c 6c 6f") < text.index("vm 0 of 1")


def test_a_failing_script_stops_at_its_error_but_not_the_prompt(tmp_path):
    guest = Guest("basics")
    script = tmp_path / "bad.dbg"
    script.write_text("regs\nbreak nowhere\nregs\n")
    text = drive(guest, CommandInterpreter(guest.machine), [("pic\r", lambda o: "master" in o)],
                 scripts=[script])
    assert f"{script}:2: error: no symbol named 'nowhere' in: break nowhere\n" in text
    assert text.count("eax 0x") == 1


def test_batch_script(tmp_path):
    guest = Guest("basics")
    mon = CommandInterpreter(guest.machine)
    script = tmp_path / "batch.dbg"
    script.write_text("catch vif\ncontinue\ninfo\nquit\nregs\n")
    out = io.StringIO()
    assert run_script(mon, script, out) is True
    text = out.getvalue()
    assert text.startswith("event breakpoint 1: catch vif\nevent breakpoint 1: vif ")
    assert "cause=sti" in text and "eax" not in text       # quit ended the script
    script.write_text("catch vif\nx 0xfff00000\nregs\n")
    out = io.StringIO()
    assert run_script(CommandInterpreter(Guest("basics").machine), script, out) is False
    assert out.getvalue().splitlines()[1] == \
        f"{script}:2: error: virtual address 0xfff00000 is not mapped in: x 0xfff00000"


def _through_gdb(machine: Machine, command: str) -> str:
    """What gdb shows for `monitor COMMAND`: the O packets of the qRcmd reply."""
    session = Session(machine, monitor=CommandInterpreter(machine).run)
    assert session.handle(b"qRcmd," + binascii.hexlify(command.encode())) == b"OK"
    return "".join(binascii.unhexlify(p[1:]).decode() for p in session.output)


@pytest.mark.parametrize("command", ["regs", "info", "idt", "x/4xw hello", "disas _start 3",
                                     "pt walk 0x1000", "pic", "help catch", "bogus 1",
                                     "x 0xfff00000", "catch vif"])
def test_the_same_command_prints_the_same_text_through_gdb(command):
    at_prompt = Guest("basics")
    prompt_out: list[str] = []
    repl = Repl(CommandInterpreter(at_prompt.machine), write=prompt_out.append)
    repl.handle(command)
    assert _through_gdb(Guest("basics").machine, command) == "".join(prompt_out)


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", f"dbgvm-test-{os.getpid()}", *args], check=True,
                          capture_output=True, text=True).stdout


def _screen_until(pattern: str, timeout: float = 15.0) -> str:
    screen = ""
    deadline = time.time() + timeout
    while time.time() < deadline:
        screen = _tmux("capture-pane", "-p", "-t", "repl")
        if re.search(pattern, screen):
            return screen
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} never appeared on the screen:\n{screen}")


def test_in_a_real_terminal_type_complete_run_and_stop(tmp_path):
    assert shutil.which("tmux"), "this test needs tmux (apt-get install tmux)"
    kernel = build("spin")
    command = (f"cd {ROOT} && {sys.executable} -m dbgvm run {kernel} "
               f"--history {tmp_path / 'history'}")
    _tmux("new-session", "-d", "-s", "repl", "-x", "140", "-y", "30", command)
    try:
        _screen_until(r"\(dbgvm\)")
        _screen_until(r"vm 0/1 \| paused \| eip 0x[0-9a-f]+ <_start>")   # the toolbar
        _tmux("send-keys", "-t", "repl", "reg")
        _tmux("send-keys", "-t", "repl", "Tab")
        _screen_until(r"\(dbgvm\) regs")                                  # completed
        _tmux("send-keys", "-t", "repl", "Enter")
        _screen_until(r"cpl 0  vif 0")
        _tmux("send-keys", "-t", "repl", "continue", "Enter")
        _screen_until(r"\| running \| icount")
        _tmux("send-keys", "-t", "repl", "C-c")
        screen = _screen_until(r"stop: requested")
        assert re.search(r"=> 0x[0-9a-f]+ <spin(\+0x[0-9a-f]+)?>:", screen)
        _tmux("send-keys", "-t", "repl", "x/xw counter 1", "Enter")
        screen = _screen_until(r"<counter>: [0-9a-f]{8}")
        value = int(re.search(r"<counter>: ([0-9a-f]{8})", screen).group(1), 16)
        assert value > 0                                                  # the guest ran
        _tmux("send-keys", "-t", "repl", "quit", "Enter")
        assert wait_for(lambda: "repl" not in _tmux_sessions(), 10)
    finally:
        subprocess.run(["tmux", "-L", f"dbgvm-test-{os.getpid()}", "kill-server"],
                       capture_output=True)
    assert "continue" in (tmp_path / "history").read_text()


def _tmux_sessions() -> str:
    result = subprocess.run(["tmux", "-L", f"dbgvm-test-{os.getpid()}", "ls"],
                            capture_output=True, text=True)
    return result.stdout
