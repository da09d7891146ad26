"""System calls as events (docs/events.md, `syscall`): the bundled guest's shell calls its
kernel with INT 0x80 from ring 3; each call is an `entry` event with its number and six
argument registers, and its return an `exit` event with EAX."""
from __future__ import annotations

import json
import subprocess
import sys


def test_bundled_guest_system_calls_are_events(tmp_path):
    trace = tmp_path / "trace.jsonl"
    proc = subprocess.run([sys.executable, "-m", "dbgvm", "run", "--batch", "--trace",
                           "syscall", "--trace-out", str(trace)],
                          input=b"echo hi\npoweroff\n", capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    calls = [e for e in events if e["kind"] == "syscall"]
    entries = [e for e in calls if e["op"] == "entry"]
    exits = [e for e in calls if e["op"] == "exit"]
    assert entries and all(e["via"] == "int 0x80" and len(e["args"]) == 6 for e in entries)
    assert all(e["name"] == "" for e in calls)          # the bundled guest has no name table
    # every return matches the call before it in the same address space, and the shell's
    # echo of "hi" is a call with the text in the guest's memory and its length as result
    assert len(exits) >= len(entries) - 1
    for entry, exit_ in zip(entries, exits):
        assert exit_["nr"] == entry["nr"] and exit_["cr3"] == entry["cr3"]
        assert exit_["icount"] > entry["icount"]
    # strace-like lines on stderr
    lines = [line for line in proc.stderr.decode().splitlines() if " syscall " in line]
    assert any(line.endswith("[int 0x80]") and "syscall_" in line for line in lines)
    assert any(" = " in line for line in lines)


def test_catch_syscall_parses_a_number_or_a_name():
    from dbgvm.repl.parser import parse
    from dbgvm.repl.commands import Catch, CatchKind
    assert parse("catch syscall 11") == Catch(CatchKind.SYSCALL, vector=11)
    assert parse("catch syscall execve") == Catch(CatchKind.SYSCALL, name="execve")
    assert parse("catch syscall") == Catch(CatchKind.SYSCALL)


def test_catch_syscall_matches_by_number_or_name():
    from dbgvm.core.events import Event, EventKind
    from dbgvm.repl.points import CatchSpec
    from dbgvm.repl.points import CatchKind
    execve = Event(1, EventKind.SYSCALL, 0, {"op": "entry", "nr": 11, "name": "execve"})
    write = Event(2, EventKind.SYSCALL, 0, {"op": "exit", "nr": 4, "name": "write",
                                            "result": 3})
    trap = Event(3, EventKind.TRAP, 0, {"vector": 11})
    assert CatchSpec(CatchKind.SYSCALL, vector=11).matches(execve)
    assert not CatchSpec(CatchKind.SYSCALL, vector=11).matches(write)
    assert not CatchSpec(CatchKind.SYSCALL, vector=11).matches(trap)
    assert CatchSpec(CatchKind.SYSCALL, name="write").matches(write)
    assert CatchSpec(CatchKind.SYSCALL).matches(execve) and \
        CatchSpec(CatchKind.SYSCALL).matches(write)
