"""Record, replay and reverse execution (docs/trace-format.md, dbgvm/record).

Expected states come from independent forward runs of a fresh machine: a replay is the same
run, so the state after N instructions must be what a machine that simply ran N instructions
has, and going back must reach exactly that state again.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbgvm.core.assembly import build_machine
from dbgvm.core.faults import StopReason
from dbgvm.core.loader import load
from dbgvm.core.machine import Machine
from dbgvm.guest import bundled_kernel
from dbgvm.record.replay import Divergence, Replay
from dbgvm.record.reverse import ReverseEngine
from dbgvm.record.trace import TraceError, read
from conftest import record_traces
from guest_build import build

ROOT = Path(__file__).resolve().parent.parent


def dbgvm(*args: str, stdin: bytes = b"", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dbgvm", *args], input=stdin,
                          capture_output=True, timeout=timeout, cwd=ROOT)


def fresh(name: str) -> Machine:
    machine = build_machine()
    machine.load(load(build(name), machine.ram_size))
    return machine


def run_exactly(machine: Machine, icount: int) -> None:
    while machine.icount < icount:
        stop = machine.run(icount - machine.icount)
        assert stop.reason is StopReason.MAX_INSNS, stop


def state(machine: Machine) -> tuple:
    """(Console output left the machine: going back does not take it back.)"""
    return (machine.icount, asdict(machine.registers()), hashlib.sha256(machine.ram).hexdigest())


# -- the sample recordings (scripts/record_traces.py, recorded once per session) ---------------

@pytest.mark.parametrize("trace", sorted(record_traces.RUNS))
def test_recordings_replay_identically(trace, recorded_traces):
    proc = dbgvm("replay", str(recorded_traces[trace]), "--batch")
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"replay identical to the recording" in proc.stderr


def test_the_recordings_cover_console_input_disk_writes_and_two_vms(recorded_traces):
    traces = {name: read(path) for name, path in recorded_traces.items()}
    assert len(traces) >= 3
    consoles = [t for t in traces.values()
                if any(i.channel == "console" and i.payload.strip() for i in t.inputs)]
    disks = [t for t in traces.values() if t.header["disk"] is not None and any(
        '"op":"WRITE"' in e and '"channel":"block"' in e for e in t.events.get(0, []))]
    pings = [t for t in traces.values() if t.header["vms"] == 2 and any(
        i.channel == "net" for i in t.inputs)]
    assert consoles and disks and pings


def test_a_guest_visible_change_is_reported_at_the_first_divergent_event(monkeypatch,
                                                                         recorded_traces):
    # the HAL reports its interrupt line to the guest at boot; the bundled guest prints it
    trace = read(recorded_traces["shell.trace"])
    monkeypatch.setattr("dbgvm.hal.host.IRQ_LINE", 6)
    replay = Replay(trace, lambda vm, data: None)
    try:
        problems = replay.run_and_verify()
    finally:
        replay.close()
    assert problems and isinstance(problems[0], Divergence)
    first = problems[0]
    assert first.vm == 0
    recorded, replayed = json.loads(first.recorded), json.loads(first.replayed)
    # the first difference is the boot line the guest writes through the HAL console
    assert recorded["icount"] == replayed["icount"] == first.icount
    assert (recorded["kind"], recorded["channel"], recorded["op"]) == ("hal", "console", "WRITE")
    assert "irq 5" in recorded["info"] and "irq 6" in replayed["info"]
    assert recorded == {**replayed, "info": recorded["info"]}
    assert "(icount %d)" % first.icount in first.describe()


def test_replay_cli_reports_a_divergence_with_its_icount(tmp_path, recorded_traces):
    original = read(recorded_traces["shell.trace"])
    # rewrite one recorded console input: the guest then does something else
    bad = tmp_path / "bad.trace"
    with gzip.open(recorded_traces["shell.trace"], "rt") as src, gzip.open(bad, "wt") as dst:
        for line in src:
            record = json.loads(line)
            if record.get("t") == "input" and record["channel"] == "console":
                record["data"] = "bHMK"                       # "ls\n" instead
            dst.write(json.dumps(record) + "\n")
    proc = dbgvm("replay", str(bad), "--batch")
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "replay diverged at event" in err and "(icount " in err
    assert "recorded:" in err and "replayed:" in err
    assert original.ends[0].reason == "poweroff"


# -- the format --------------------------------------------------------------------------------

def _write(path: Path, *records: dict) -> Path:
    with gzip.open(path, "wt") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    return path


def test_newer_format_and_non_traces_are_refused_in_one_line(tmp_path):
    newer = _write(tmp_path / "newer.trace", {"format": "dbgvm-trace", "version": 99})
    with pytest.raises(TraceError, match="version 99 is newer"):
        read(newer)
    proc = dbgvm("replay", str(newer), "--batch")
    assert proc.returncode == 2 and proc.stderr.count(b"\n") == 1
    assert b"newer" in proc.stderr
    other = _write(tmp_path / "other.trace", {"format": "something-else"})
    with pytest.raises(TraceError, match="not a dbgvm trace"):
        read(other)
    garbage = tmp_path / "garbage.trace"
    garbage.write_bytes(b"\x00\x01not gzip at all")
    with pytest.raises(TraceError):
        read(garbage)
    bad_record = _write(tmp_path / "bad.trace", {"format": "dbgvm-trace", "version": 1},
                        {"t": "input", "vm": 0})
    with pytest.raises(TraceError, match=r"bad.trace:1: header: no 'kernel' field"):
        read(bad_record)


def _rewrite(src: Path, dst: Path, change) -> Path:
    """A copy of trace src whose records (header first) are change(records)."""
    with gzip.open(src, "rt") as inp:
        records = [json.loads(line) for line in inp]
    with gzip.open(dst, "wt") as out:
        for record in change(records):
            out.write(record if isinstance(record, str) else json.dumps(record) + "\n")
    return dst


def _edit(match, **fields):
    """change(): the first record for which match(record) holds gets ``fields``."""
    def change(records: list) -> list:
        at = next(i for i, r in enumerate(records) if match(r))
        records[at] = {**records[at], **fields}
        return records
    return change


def _header_edit(path: tuple, value):
    def change(records: list) -> list:
        target = records[0]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return records
    return change


def _is_end(vm: int = 0):
    return lambda record: record.get("t") == "end" and record["vm"] == vm


DAMAGED = {
    "truncated": ("truncated", lambda raw: raw[:len(raw) // 2]),
    "a byte flipped in the CRC": ("cannot read a dbgvm trace",
                                  lambda raw: raw[:-8] + bytes([raw[-8] ^ 1]) + raw[-7:]),
    "deep nesting": (r":2: JSON nested too deeply", lambda records: records[:1] + [
        "[" * 100_000 + "]" * 100_000 + "\n"] + records[1:]),
    "kernel data null": (":1: kernel: 'data' must be base64 text, not null",
                         _header_edit(("kernel", "data"), None)),
    "kernel not an object": (":1: header: 'kernel' must be an object, not 7",
                             _header_edit(("kernel",), 7)),
    "kernel encoding": (":1: kernel: 'encoding' must be \"zlib\", not \"gzip\"",
                        _header_edit(("kernel", "encoding"), "gzip")),
    "append not a string": (":1: header: 'append' must be a string, not 5",
                            _header_edit(("append",), 5)),
    "boot_decompressor not a bool": (":1: header: 'boot_decompressor' must be true or false",
                                     _header_edit(("boot_decompressor",), 1)),
    "rtc_start not an int": (":1: header: 'rtc_start' must be Unix seconds",
                             _header_edit(("rtc_start",), "2026-01-01")),
    "ram_mb huge": (":1: header: 'ram_mb' must be 2..", _header_edit(("ram_mb",), 10 ** 30)),
    "more VMs than end records": ("no end record for vm1", _header_edit(("vms",), 2)),
    "no end record": ("no end record for vm0",
                      lambda records: [r for r in records if r.get("t") != "end"]),
    "input data null": ("input record: 'data' must be base64 text, not null",
                        _edit(lambda r: r.get("t") == "input", data=None)),
    "input for another VM": ("input record: 'vm' must be a VM number \\(0..0\\), not 3",
                             _edit(lambda r: r.get("t") == "input", vm=3)),
    "end icount a string": ("end record: 'icount' must be an instruction count",
                            _edit(_is_end(), icount="9")),
    "an unknown end field": ("end record: unknown field 'extra'", _edit(_is_end(), extra=1)),
    "a record after the end": ("a record for vm0 after its end record",
                               lambda records: records + [records[1]]),
    "an unknown header field": (":1: header: unknown field 'turbo'",
                                _header_edit(("turbo",), True)),
}


@pytest.mark.parametrize("damage", sorted(DAMAGED))
def test_a_damaged_trace_is_refused_in_one_line_naming_what_is_wrong(damage, tmp_path,
                                                                     recorded_traces):
    expected, change = DAMAGED[damage]
    src = recorded_traces["shell.trace"]
    bad = tmp_path / "bad.trace"
    if damage in ("truncated", "a byte flipped in the CRC"):
        bad.write_bytes(change(src.read_bytes()))
    else:
        _rewrite(src, bad, change)
    with pytest.raises(TraceError, match=expected.replace("(", r"\(").replace(")", r"\)")
                       if "\\" not in expected else expected) as info:
        read(bad)
    assert "\n" not in str(info.value)


def _verdict(path: Path, bound: float = 20.0) -> list:
    """The differences run_and_verify finds, within ``bound`` seconds (else: a hang)."""
    import signal

    def expired(signum, frame):
        raise TimeoutError("the replay did not end")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, bound)
    try:
        replay = Replay(read(path), lambda vm, data: None)
        try:
            return replay.run_and_verify()
        finally:
            replay.close()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


EDITED_ENDS = [
    ("shell.trace", 0, "exit_status", lambda v: v + 1, "exit status"),
    ("shell.trace", 0, "message", lambda v: v + " (edited)", "ended with poweroff"),
    ("shell.trace", 0, "events", lambda v: v + 1, "events"),
    ("shell.trace", 0, "reason", lambda v: "cut-off", "ended with cut-off"),
    ("shell.trace", 0, "icount", lambda v: v + 1, "ended at icount"),
    ("shell.trace", 0, "icount", lambda v: v - 1, "the replay ended"),    # before poweroff
    ("shell.trace", 0, "time", lambda v: v + 1, "ended at icount"),
    ("shell.trace", 0, "time", lambda v: v - 1, "the replay ended"),      # before poweroff
    ("ping.trace", 1, "icount", lambda v: v + 1, "cannot be reached"),
    ("ping.trace", 1, "icount", lambda v: v - 1, "the replay ended"),
    ("ping.trace", 1, "time", lambda v: v * 1000, "cannot be reached"),
    ("ping.trace", 1, "message", lambda v: "edited", "ended with cut-off"),
    ("ping.trace", 1, "exit_status", lambda v: 3, "exit status 3"),
]


@pytest.mark.parametrize("name,vm,field,change,expected", EDITED_ENDS,
                         ids=[f"{n}-vm{vm}-{f}-{i}" for i, (n, vm, f, _, _) in
                              enumerate(EDITED_ENDS)])
def test_an_edited_end_record_is_a_difference_and_the_replay_ends(name, vm, field, change,
                                                                   expected, tmp_path,
                                                                   recorded_traces):
    def edit(records: list) -> list:
        at = next(i for i, r in enumerate(records) if _is_end(vm)(r))
        records[at] = {**records[at], field: change(records[at][field])}
        return records
    edited = _rewrite(recorded_traces[name], tmp_path / "edited.trace", edit)
    problems = _verdict(edited)
    assert problems, "an edited end record passed as identical"
    text = " ".join(p if isinstance(p, str) else p.describe() for p in problems)
    assert expected in text and f"vm{vm}" in text


def test_an_input_recorded_at_another_icount_is_a_difference(tmp_path, recorded_traces):
    def edit(records: list) -> list:
        # the last input (a frame from the other VM): one instruction later than recorded
        at = max(i for i, r in enumerate(records) if r.get("t") == "input")
        assert records[at]["icount"] < records[at]["time"]
        records[at] = {**records[at], "icount": records[at]["icount"] + 1}
        return records
    edited = _rewrite(recorded_traces["ping.trace"], tmp_path / "edited.trace", edit)
    problems = _verdict(edited)
    assert problems and "replay diverged at input" in problems[0]


def test_an_edited_trace_through_the_cli_is_one_line_and_status_1(tmp_path, recorded_traces):
    edited = _rewrite(recorded_traces["ping.trace"], tmp_path / "edited.trace",
                      lambda records: _edit(_is_end(1), icount=_end(records, 1)["icount"] + 1)(
                          records))
    proc = dbgvm("replay", str(edited), "--batch", timeout=60)
    assert proc.returncode == 1 and proc.stderr.count(b"\n") == 1, proc.stderr
    assert b"vm1: the recorded run ended at icount" in proc.stderr
    assert b"cannot be reached" in proc.stderr


def _end(records: list, vm: int) -> dict:
    return next(r for r in records if _is_end(vm)(r))


def _rewrite_header(src: Path, dst: Path, change) -> Path:
    """A copy of trace src whose header is change(header)."""
    with gzip.open(src, "rt") as inp, gzip.open(dst, "wt") as out:
        out.write(json.dumps(change(json.loads(inp.readline()))) + "\n")
        shutil.copyfileobj(inp, out)
    return dst


def _as_version_1(header: dict) -> dict:
    """What format 1 wrote: the kernel by name and hash only."""
    kernel = {k: v for k, v in header["kernel"].items() if k not in ("data", "encoding")}
    return {**header, "version": 1, "kernel": kernel}


def test_a_trace_carries_its_kernel_and_needs_nothing_else(tmp_path, recorded_traces):
    trace = read(recorded_traces["shell.trace"])
    kernel = trace.header["kernel"]
    assert trace.header["version"] == 2 and kernel["bundled"] and kernel["encoding"] == "zlib"
    assert kernel["sha256"] == hashlib.sha256(bundled_kernel().read_bytes()).hexdigest()
    # no cache, no compiler, another directory: the file is enough
    empty = tmp_path / "nothing"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "dbgvm", "replay",
                           str(recorded_traces["shell.trace"]), "--batch"],
                          capture_output=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PATH": str(empty), "XDG_CACHE_HOME": str(empty),
                               "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"replay identical to the recording" in proc.stderr
    assert not any(empty.iterdir())


def test_a_kernel_given_for_a_replay_must_be_the_recorded_one(recorded_traces):
    trace = str(recorded_traces["shell.trace"])
    other = build("basics")
    proc = dbgvm("replay", trace, "--batch", "--kernel", str(other))
    assert proc.returncode == 2 and proc.stderr.count(b"\n") == 1, proc.stderr
    assert f"--kernel {other} is not the kernel this trace ran".encode() in proc.stderr
    proc = dbgvm("replay", trace, "--batch", "--kernel", str(bundled_kernel()))
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"replay identical to the recording" in proc.stderr


def test_a_version_1_trace_replays_when_its_kernel_is_found(tmp_path, recorded_traces):
    # the bundled guest: built here, it is the recorded one (the build is reproducible)
    old = _rewrite_header(recorded_traces["disk.trace"], tmp_path / "old.trace", _as_version_1)
    assert read(old).header["version"] == 1
    proc = dbgvm("replay", str(old), "--batch")
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"replay identical to the recording" in proc.stderr
    # a kernel named by its path
    kernel = tmp_path / "kernel.elf"
    shutil.copyfile(build("basics"), kernel)
    recorded = tmp_path / "basics.trace"
    assert dbgvm("run", str(kernel), "--batch", "--record", str(recorded)).returncode == 33
    old = _rewrite_header(recorded, tmp_path / "basics-v1.trace", _as_version_1)
    proc = dbgvm("replay", str(old), "--batch")
    assert proc.returncode == 0, proc.stderr.decode()


def test_a_version_1_trace_says_in_one_line_what_is_missing(tmp_path, recorded_traces):
    kernel = tmp_path / "kernel.elf"
    shutil.copyfile(build("basics"), kernel)
    recorded = tmp_path / "basics.trace"
    assert dbgvm("run", str(kernel), "--batch", "--record", str(recorded)).returncode == 33
    old = _rewrite_header(recorded, tmp_path / "basics-v1.trace", _as_version_1)
    kernel.unlink()
    proc = dbgvm("replay", str(old), "--batch")
    assert proc.returncode == 2 and proc.stderr.count(b"\n") == 1, proc.stderr
    err = proc.stderr.decode()
    assert "format version 1" in err and "does not carry its kernel" in err
    assert str(kernel) in err and "cannot be read" in err and "--kernel FILE" in err
    # given on the command line, the kernel is found again (same bytes, another path)
    proc = dbgvm("replay", str(old), "--batch", "--kernel", str(build("basics")))
    assert proc.returncode == 0, proc.stderr.decode()
    # a bundled-guest trace whose kernel is not the one built here
    def other_hash(header: dict) -> dict:
        header = _as_version_1(header)
        return {**header, "kernel": {**header["kernel"], "sha256": "0" * 64}}
    old = _rewrite_header(recorded_traces["shell.trace"], tmp_path / "shell-v1.trace",
                          other_hash)
    proc = dbgvm("replay", str(old), "--batch")
    assert proc.returncode == 2 and proc.stderr.count(b"\n") == 1, proc.stderr
    assert b"the bundled guest built here is not the recorded one" in proc.stderr


def test_a_damaged_embedded_kernel_is_refused_in_one_line(tmp_path, recorded_traces):
    def damage(header: dict) -> dict:
        return {**header, "kernel": {**header["kernel"], "sha256": "0" * 64}}
    bad = _rewrite_header(recorded_traces["shell.trace"], tmp_path / "bad.trace", damage)
    proc = dbgvm("replay", str(bad), "--batch")
    assert proc.returncode == 2 and proc.stderr.count(b"\n") == 1, proc.stderr
    assert b"the kernel in the trace is damaged" in proc.stderr


# -- reverse execution -----------------------------------------------------------------------

def _end_icount(name: str) -> int:
    machine = fresh(name)
    machine.run()
    return machine.icount          # the recorded end: after the exiting instruction


GUESTS = {name: _end_icount(name) for name in ("basics", "spaces", "paging")}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_reverse_stepi_from_n_gives_the_state_at_n_minus_1(data):
    name = data.draw(st.sampled_from(sorted(GUESTS)))
    end = GUESTS[name]
    n = data.draw(st.integers(1, end - 1))
    machine = fresh(name)
    engine = ReverseEngine(machine, end, interval=data.draw(st.sampled_from([97, 500, 4000])))
    engine.run()                                 # to the end: snapshots on the way
    assert engine.goto(n).icount == n
    engine.step()                 # (the stop of an exiting instruction names its start)
    assert machine.icount == n + 1
    engine.goto(n)
    stop = engine.step_back()
    reference = fresh(name)
    run_exactly(reference, n - 1)
    assert stop.icount == n - 1
    assert state(machine) == state(reference)


def test_reverse_continue_stops_at_the_last_breakpoint_hit_before_now():
    end = GUESTS["basics"]
    sym = load(build("basics"), 64 << 20).symbols
    reference = fresh("basics")
    reference.debug.add_breakpoint(sym["timer_handler"], "test")
    hits = []
    while (stop := reference.run()).reason is StopReason.BREAKPOINT:
        hits.append(stop.icount)
    assert len(hits) == 3
    machine = fresh("basics")
    engine = ReverseEngine(machine, end, interval=200)
    engine.run()
    machine.debug.add_breakpoint(sym["timer_handler"], "test")
    seen = []
    for expected in reversed(hits):
        stop = engine.continue_back()
        assert stop.reason is StopReason.BREAKPOINT and stop.icount == expected
        assert machine.registers().eip == sym["timer_handler"]
        seen.append(stop.icount)
    assert engine.continue_back().reason is StopReason.HISTORY_START
    assert machine.icount == 0
    # forward again from the start: the same hits, then the recorded end
    forward = []
    while (stop := engine.run()).reason is StopReason.BREAKPOINT:
        forward.append(stop.icount)
    assert forward == hits and stop.reason is StopReason.DEBUG_EXIT


def test_reverse_continue_honours_watchpoints():
    sym = load(build("paging"), 64 << 20).symbols
    end = GUESTS["paging"]
    reference = fresh("paging")
    from dbgvm.core.debug import WatchKind
    reference.debug.add_watchpoint(sym["user_skip"], 4, WatchKind.WRITE, "test")
    hits = []
    while (stop := reference.run()).reason is StopReason.WATCHPOINT:
        hits.append(stop.icount)
    assert hits
    machine = fresh("paging")
    engine = ReverseEngine(machine, end, interval=300)
    engine.run()
    machine.debug.add_watchpoint(sym["user_skip"], 4, WatchKind.WRITE, "test")
    stop = engine.continue_back()
    assert stop.reason is StopReason.WATCHPOINT and stop.icount == hits[-1]
    assert stop.cause is not None and stop.cause.vaddr == sym["user_skip"]


# -- real gdb ---------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_reverse_stepi_and_reverse_continue_from_gdb(tmp_path):
    from gdb_harness import Gdb, free_port, wait_listening
    kernel = build("basics")
    trace = tmp_path / "basics.trace"
    proc = dbgvm("run", str(kernel), "--batch", "--record", str(trace))
    assert proc.returncode == 33, proc.stderr
    sym = load(kernel, 64 << 20).symbols
    port = free_port()
    stub = subprocess.Popen([sys.executable, "-m", "dbgvm", "replay", str(trace), "--gdb",
                             f"127.0.0.1:{port}", "--snapshot-every", "150"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    wait_listening(port, stub)
    gdb = Gdb(kernel, port)
    try:
        gdb.console("break timer_handler")
        first = gdb.run("-exec-continue")
        assert first["reason"] == "breakpoint-hit"
        second = gdb.run("-exec-continue")
        assert second["reason"] == "breakpoint-hit"
        assert gdb.value("$eip") == sym["timer_handler"]
        # one instruction back: the instruction before the handler's first one is the
        # interrupted code, so eip leaves the handler
        stepped = gdb.run("-exec-step-instruction --reverse")
        assert stepped["reason"] == "end-stepping-range"
        assert gdb.value("$eip") != sym["timer_handler"]
        back = gdb.run("-exec-continue --reverse")
        assert back["reason"] == "breakpoint-hit"
        assert gdb.value("$eip") == sym["timer_handler"]
        # no earlier hit: gdb reports the start of the history (our replaylog:begin)
        responses = gdb.mi.write("-exec-continue --reverse", timeout_sec=30,
                                 raise_error_on_timeout=False)
        responses = gdb._collect(responses, {"stopped"}, 30)
        said = "".join(r["payload"] for r in responses if r.get("type") == "console"
                       and isinstance(r.get("payload"), str))
        assert "No more reverse-execution history" in said, responses
        assert gdb.value("$eip") == sym["_start"]
    finally:
        gdb.close()
        stub.kill()
        stub.wait()


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_gdb_continue_to_the_end_of_a_replay_stops_there_and_can_go_back(tmp_path):
    """The end of a recording is a place, not an exit: gdb gets the replaylog:end stop
    ("No more reverse-execution history", as with rr and gdb's own record), not "exited
    normally" after which nothing could be reversed; reverse-stepi and reverse-continue
    work from there, and going forward again stops at the end again."""
    from gdb_harness import Gdb, free_port, wait_listening
    kernel = build("basics")
    trace = tmp_path / "basics.trace"
    assert dbgvm("run", str(kernel), "--batch", "--record", str(trace)).returncode == 33
    sym = load(kernel, 64 << 20).symbols
    reference = fresh("basics")
    end = reference.run()
    assert end.reason is StopReason.DEBUG_EXIT
    port = free_port()
    stub = subprocess.Popen([sys.executable, "-m", "dbgvm", "replay", str(trace), "--gdb",
                             f"127.0.0.1:{port}", "--snapshot-every", "150"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    wait_listening(port, stub)
    gdb = Gdb(kernel, port)

    def execute(command: str) -> tuple[dict, str]:
        responses = gdb.mi.write(command, timeout_sec=30, raise_error_on_timeout=False)
        responses = gdb._collect(responses, {"stopped"}, 30)
        said = "".join(r["payload"] for r in responses if r.get("type") in (
            "console", "target") and isinstance(r.get("payload"), str))
        return next(r["payload"] for r in responses if r.get("message") == "stopped"), said
    try:
        stop, said = execute("-exec-continue")
        # gdb/MI's *stopped has no reason for it here: gdb says it on the console
        assert stop.get("reason") != "exited", (stop, said)
        assert "No more reverse-execution history" in said
        assert "debug-exit" in said                 # what ended the recorded run
        assert gdb.value("$eip") == reference.registers().eip
        stop, said = execute("-exec-continue")      # forward again: still the end
        assert "No more reverse-execution history" in said and stop.get("reason") != "exited"
        stepped = gdb.run("-exec-step-instruction --reverse")
        assert stepped["reason"] == "end-stepping-range"
        assert f"icount {reference.icount - 1} " in gdb.console("monitor info")
        gdb.console("break timer_handler")
        back = gdb.run("-exec-continue --reverse")
        assert back["reason"] == "breakpoint-hit"
        assert gdb.value("$eip") == sym["timer_handler"]
        gdb.console("delete")
        stop, said = execute("-exec-continue")
        assert "No more reverse-execution history" in said and stop.get("reason") != "exited"
        assert gdb.value("$eip") == reference.registers().eip
        assert stub.poll() is None                  # the replay is still being served
    finally:
        gdb.close()
        stub.kill()
        stub.wait()


def test_going_back_does_not_print_the_console_again(tmp_path):
    """Re-executing history already seen (goto, rstep, then forward again) must not print
    the guest's console output a second time: each line the run printed appears once, and
    all of them do (the first pass through beyond the furthest point printed)."""
    kernel = build("basics")
    trace = tmp_path / "basics.trace"
    recorded = dbgvm("run", str(kernel), "--batch", "--record", str(trace))
    assert recorded.returncode == 33
    lines = recorded.stdout.decode().splitlines()
    assert "hello from basics" in lines and len(lines) > 3
    script = tmp_path / "back.txt"
    script.write_text("goto 400\ngoto 0\ncontinue\ngoto 200\nrstep 50\ncontinue\n"
                      "goto 0\nstep 10\n")
    proc = dbgvm("replay", str(trace), "--batch", "--snapshot-every", "150", "-x",
                 str(script))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    # the monitor's own lines (whole lines, possibly right after a partial guest line)
    guest = re.sub(r"=> 0x[0-9a-f]+ <[^>]*>:[^\n]*\(icount \d+\)\n|debug-exit: [^\n]*\n",
                   "", out)
    assert guest == recorded.stdout.decode(), out
    for line in lines:
        assert out.count(line) <= 1, (line, out)


_VALUES = st.one_of(st.integers(-2**40, 2**40), st.text(max_size=12), st.booleans(), st.none(),
                    st.lists(st.integers(0, 9), max_size=3))


@settings(max_examples=200, deadline=None)
@given(fields=st.dictionaries(st.text(min_size=1, max_size=8).filter(
    lambda k: k not in ("icount", "kind", "eip", "vm")), _VALUES, max_size=6),
       vm=st.one_of(st.none(), st.integers(0, 15)))
def test_event_json_is_exactly_what_json_dumps_gives(fields, vm):
    from dbgvm.core.events import Event, EventKind
    event = Event(123, EventKind.HAL, 0x1000, fields)
    extra = {} if vm is None else {"vm": vm}
    assert event.to_json(**extra) == json.dumps(
        {"icount": 123, "kind": "hal", "eip": 0x1000, **extra, **fields}, separators=(",", ":"))


def test_replay_script_goes_back_and_says_the_check_stops(tmp_path):
    kernel = build("basics")
    trace = tmp_path / "basics.trace"
    assert dbgvm("run", str(kernel), "--batch", "--record", str(trace)).returncode == 33
    script = tmp_path / "back.txt"
    script.write_text("break timer_handler\ncontinue\ncontinue\nrcontinue\ngoto 0\n")
    proc = dbgvm("replay", str(trace), "--batch", "-x", str(script))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    sym = load(kernel, 64 << 20).symbols
    reference = fresh("basics")
    reference.debug.add_breakpoint(sym["timer_handler"], "test")
    first = reference.run().icount
    assert out.count(f"<timer_handler>:  push eax   (icount {first})") == 2   # there and back
    assert out.rstrip().endswith("(icount 0)")
    assert b"no longer checked against the recording" in proc.stderr


def test_going_back_takes_the_disk_overlay_back_too(recorded_traces):
    # the guest writes "hello trace" to sector 3 of its copy-on-write disk
    trace = read(recorded_traces["disk.trace"])
    write = next(json.loads(e) for e in trace.events[0]
                 if '"channel":"block"' in e and '"op":"WRITE"' in e)
    replay = Replay(trace, lambda vm, data: None)
    try:
        machine = replay.domains.machines[0]
        disk = replay.domains.domains[0].block
        engine = ReverseEngine(machine, replay.end_icount(0), interval=20_000)

        def sector3() -> bytes:
            return disk.submit(2, (3).to_bytes(4, "little") + (1).to_bytes(4, "little") +
                               bytes(512)).payload[8:]
        original = sector3()
        engine.run()
        assert b"hello trace" in sector3() and len(engine.store.snapshots) > 3
        engine.goto(write["icount"] - 1)
        assert sector3() == original
        engine.goto(write["icount"] + 1)
        assert b"hello trace" in sector3()
        engine.goto(0)
        assert sector3() == original
        engine.goto(replay.end_icount(0) - 1)
        assert b"hello trace" in sector3()
    finally:
        replay.close()
