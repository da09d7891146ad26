"""Trace-mutation fuzzing of `dbgvm replay` (docs/trace-format.md): damaged and edited traces.

The sample runs of scripts/record_traces.py (the `recorded_traces` fixture) are mutated by a
fixed, seeded list of mutations: byte flips in the gzip stream, truncations, JSON edits (wrong
types, nulls, deep nesting, huge numbers, missing fields), missing and extra records, and edits
of the recorded end and inputs. Each mutant is replayed with `dbgvm replay FILE --batch` in
process (cli.main: the command's own code path, its exit status and stderr), a few through
the real command line. Required of every mutant: no traceback, no hang (each run is bounded,
SIGALRM), exit status 0, 1 or 2, and for status 2 one line on stderr; of every mutant whose
edit changes what the trace says happened: no "identical" verdict.

    python tests/test_trace_fuzz.py [DIR]     # the figures (runs, outcomes, time) on stdout
"""
from __future__ import annotations

import contextlib
import gzip
import io
import json
import random
import re
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent))

SEED = 0x7ACE
RUN_BOUND = 10.0            # seconds: one replay of a sample trace takes about 0.1 s
CLI_RUNS = 8                # mutants also run through `python -m dbgvm replay`
DEEP = "[" * 100_000 + "]" * 100_000
ROOT = Path(__file__).resolve().parent.parent

Mutate = Callable[[bytes, list[str]], bytes]


@dataclass(frozen=True)
class Mutation:
    name: str
    trace: str              # which sample trace
    mutate: Mutate          # (gzip bytes, JSON lines) -> the mutant file's bytes
    semantic: bool = False  # it changes what the trace says happened: never "identical"


def _gz(lines: list[str]) -> bytes:
    return gzip.compress("".join(lines).encode(), compresslevel=1, mtime=0)


def _dumps(record: object) -> str:
    text = json.dumps(record, separators=(",", ":"))
    return text.replace('"__DEEP__"', DEEP).replace('"__HUGE__"', "9" * 5000) + "\n"


# wrong types, nulls, deep nesting, huge and negative numbers ("__DEEP__" and "__HUGE__" are
# written as 100,000 nested arrays and a 5000-digit number)
VALUES = [None, "x", "", -1, 1.5, True, False, [], {}, 10 ** 30, 2 ** 64, "__DEEP__",
          "__HUGE__", {"a": [1, None]}, 0]
MISSING = object()


def _edit_field(index: int | str, path: tuple, value: object) -> Mutate:
    """Set path (keys into the JSON object) in line ``index`` (or in the first record whose
    "t" is ``index``) to value (MISSING: delete it)."""
    def mutate(raw: bytes, lines: list[str]) -> bytes:
        lines = list(lines)
        at = index if isinstance(index, int) else next(
            i for i, line in enumerate(lines) if json.loads(line).get("t") == index)
        record = json.loads(lines[at])
        target = record
        for key in path[:-1]:
            target = target[key]
        if value is MISSING:
            target.pop(path[-1], None)
        elif callable(value):
            target[path[-1]] = value(target.get(path[-1]))
        else:
            target[path[-1]] = value
        lines[at] = _dumps(record)
        return _gz(lines)
    return mutate


def _flip(offset: int, mask: int) -> Mutate:
    def mutate(raw: bytes, lines: list[str]) -> bytes:
        data = bytearray(raw)
        data[offset % len(data)] ^= mask
        return bytes(data)
    return mutate


def _truncate(fraction: float) -> Mutate:
    return lambda raw, lines: raw[:int(len(raw) * fraction)]


def _lines(change: Callable[[list[str]], list[str]]) -> Mutate:
    return lambda raw, lines: _gz(change(list(lines)))


def _raw_text(change: Callable[[str], str]) -> Mutate:
    return lambda raw, lines: gzip.compress(change("".join(lines)).encode("utf-8", "surrogatepass"),
                                            mtime=0)


def _end_line(lines: list[str], vm: int) -> int:
    return next(i for i, line in enumerate(lines)
                if '"t":"end"' in line and json.loads(line)["vm"] == vm)


def _drop(kind: str, which: int = 0) -> Callable[[list[str]], list[str]]:
    def change(lines: list[str]) -> list[str]:
        found = [i for i, line in enumerate(lines) if f'"t":"{kind}"' in line]
        del lines[found[which % len(found)]]
        return lines
    return change


def _twice(pattern: str) -> Callable[[list[str]], list[str]]:
    """The first record matching pattern (a regular expression, or a record type) twice."""
    def change(lines: list[str]) -> list[str]:
        regex = re.compile(pattern if not pattern.isalpha() else f'"t":"{pattern}"')
        at = next(i for i, line in enumerate(lines) if i and regex.search(line))
        return lines[:at + 1] + lines[at:]
    return change


def _insert(at: int, record: dict) -> Callable[[list[str]], list[str]]:
    def change(lines: list[str]) -> list[str]:
        lines.insert(at % (len(lines) + 1) or 1, _dumps(record))
        return lines
    return change


def mutations() -> list[Mutation]:
    """The fixed list (seeded: the same mutants in every run)."""
    rng = random.Random(SEED)
    out: list[Mutation] = []
    sizes = {"shell.trace": 58_000, "disk.trace": 59_000, "ping.trace": 62_000}

    # -- bytes: flips anywhere in the gzip stream (header, deflate data, CRC, size) ----------
    for n in range(70):
        trace = rng.choice(list(sizes))
        offset = rng.choice([rng.randrange(0, 20), rng.randrange(sizes[trace]),
                             -rng.randrange(1, 9)])
        out.append(Mutation(f"flip byte {offset} of {trace}", trace,
                            _flip(offset, 1 << rng.randrange(8))))
    for n in range(25):
        fraction = rng.random()
        trace = rng.choice(list(sizes))
        out.append(Mutation(f"truncate {trace} to {fraction:.3f}", trace, _truncate(fraction),
                            semantic=True))

    # -- header fields: wrong types, nulls, nesting, huge numbers, missing -----------------
    header_paths = [("format",), ("version",), ("kernel",), ("append",), ("ram_mb",), ("vms",),
                    ("network",), ("disk",), ("initrd",), ("boot_decompressor",),
                    ("rtc_start",), ("kernel", "path"), ("kernel", "sha256"),
                    ("kernel", "size"), ("kernel", "bundled"), ("kernel", "encoding"),
                    ("kernel", "data")]
    for path in header_paths:
        for value in [MISSING, *rng.sample(VALUES, 5)]:
            out.append(Mutation(f"shell.trace header {'.'.join(path)} = {_show(value)}",
                                "shell.trace", _edit_field(0, path, value)))
    for path in [("disk", "path"), ("disk", "sha256"), ("disk", "size"), ("disk", "data"),
                 ("disk", "writable")]:
        for value in [MISSING, *rng.sample(VALUES, 4)]:
            out.append(Mutation(f"disk.trace header {'.'.join(path)} = {_show(value)}",
                                "disk.trace", _edit_field(0, path, value)))
    for value in [[None], ["x"], [{}], [{"path": "a", "spec": "a", "sha256": "0" * 64,
                                         "size": 1, "data": "QQ=="}],
                  [{"path": "a", "spec": "a", "sha256": "0" * 64, "size": 1, "data": None}]]:
        out.append(Mutation(f"shell.trace header initrd = {value}", "shell.trace",
                            _edit_field(0, ("initrd",), value)))
    out.append(Mutation("ping.trace header vms = 3", "ping.trace",
                        _edit_field(0, ("vms",), 3), semantic=True))
    out.append(Mutation("ping.trace header vms = 1", "ping.trace",
                        _edit_field(0, ("vms",), 1), semantic=True))
    out.append(Mutation("shell.trace header ram_mb = 32", "shell.trace",
                        _edit_field(0, ("ram_mb",), 32), semantic=True))
    out.append(Mutation("shell.trace header unknown field", "shell.trace",
                        _edit_field(0, ("turbo",), True)))

    # -- records: every field of an input, an event and an end ---------------------------
    for trace, kind, fields in [
            ("shell.trace", "input", ("t", "vm", "icount", "time", "channel", "data")),
            ("ping.trace", "input", ("vm", "icount", "time", "channel", "data")),
            ("shell.trace", "event", ("t", "vm", "e")),
            ("shell.trace", "end", ("t", "vm", "icount", "time", "reason", "message",
                                    "exit_status", "state_digest", "events",
                                    "events_sha256"))]:
        for name in fields:
            for value in [MISSING, *rng.sample(VALUES, 4)]:
                out.append(Mutation(f"{trace} first {kind} {name} = {_show(value)}", trace,
                                    _edit_field(kind, (name,), value), semantic=True))
    for name in ("icount", "kind", "eip"):
        for value in [MISSING, *rng.sample(VALUES, 3)]:
            out.append(Mutation(f"shell.trace first event e.{name} = {_show(value)}",
                                "shell.trace", _edit_field("event", ("e", name), value),
                                semantic=True))

    # -- edited semantics: the recorded end and inputs, values of the right type -----------
    bumps: list[tuple[str, Callable[[object], object]]] = [
        ("+1", lambda v: v + 1), ("-1", lambda v: v - 1), ("x1000", lambda v: v * 1000 + 1),
        ("huge", lambda v: 10 ** 18)]
    for trace, vm in [("shell.trace", 0), ("disk.trace", 0), ("ping.trace", 0),
                      ("ping.trace", 1)]:
        for name in ("icount", "time", "exit_status", "events"):
            for label, bump in bumps:
                out.append(Mutation(f"{trace} vm{vm} end {name} {label}", trace,
                                    _end_edit(vm, name, bump), semantic=True))
        for name, value in [("message", "edited"), ("reason", "cut-off"),
                            ("reason", "max-insns"), ("reason", "poweroff"),
                            ("state_digest", "0" * 64), ("events_sha256", "0" * 64),
                            ("message", "the run ended while this VM ran")]:
            out.append(Mutation(f"{trace} vm{vm} end {name} = {value!r}", trace,
                                _end_edit(vm, name, lambda v, value=value: value),
                                semantic=True))
    both_huge = lambda record: {**record, "icount": 10 ** 15, "time": 10 ** 15,  # noqa: E731
                                "reason": "cut-off"}
    for trace, vm in [("shell.trace", 0), ("ping.trace", 1), ("ping.trace", 0)]:
        out.append(Mutation(f"{trace} vm{vm} end cut-off at icount and time 10**15", trace,
                            _end_record(vm, both_huge), semantic=True))
    for trace in ("shell.trace", "ping.trace"):
        for label, bump in bumps[:3]:
            for name in ("icount", "time"):
                out.append(Mutation(f"{trace} last input {name} {label}", trace,
                                    _last_input_edit(name, bump), semantic=True))
    out.append(Mutation("shell.trace console input edited", "shell.trace",
                        _edit_field("input", ("data",), "bHMK"), semantic=True))

    # -- missing and extra records, broken lines -------------------------------------------
    for trace in ("shell.trace", "ping.trace"):
        for kind in ("end", "input", "event"):
            for which in (0, -1):
                out.append(Mutation(f"{trace} without {kind} record {which}", trace,
                                    _lines(_drop(kind, which)), semantic=True))
        out.append(Mutation(f"{trace} without its header", trace,
                            _lines(lambda lines: lines[1:]), semantic=True))
        out.append(Mutation(f"{trace} without any end record", trace, _lines(
            lambda lines: [x for x in lines if '"t":"end"' not in x]), semantic=True))
        out.append(Mutation(f"{trace} with an end record twice", trace, _lines(
            lambda lines: lines + [lines[-1]]), semantic=True))
        out.append(Mutation(f"{trace} with an event twice", trace, _lines(_twice("event")),
                            semantic=True))
        out.append(Mutation(f"{trace} with a non-empty input twice", trace,
                            _lines(_twice('"channel":"console","data":"[^"]')), semantic=True))
        for at, record in [
                (5, {"t": "input", "vm": 0, "icount": 10, "time": 10, "channel": "console",
                     "data": "eAo="}),
                (-1, {"t": "input", "vm": 0, "icount": 10, "time": 10, "channel": "net",
                      "data": "eAo="}),
                (3, {"t": "event", "vm": 0, "e": {"icount": 1, "kind": "irq", "eip": 0}}),
                (-1, {"t": "end", "vm": 5, "icount": 1, "time": 1, "reason": "poweroff",
                      "message": "", "exit_status": 0, "state_digest": "0" * 64,
                      "events": 0, "events_sha256": "0" * 64}),
                (2, {"t": "snapshot", "vm": 0}), (2, {"t": "__DEEP__"}), (2, {})]:
            out.append(Mutation(f"{trace} with an extra {record.get('t', 'untyped')} record "
                                f"at {at}", trace, _lines(_insert(at, record)),
                                semantic=True))
        for label, change in [
                ("an empty line", lambda text: text.replace("\n", "\n\n", 3)),
                ("a JSON array line", lambda text: text.replace("\n", "\n[1,2]\n", 2)),
                ("a line of deep nesting", lambda text: text.replace("\n", "\n" + DEEP + "\n", 2)),
                ("non-UTF-8 bytes", lambda text: text.replace('"t":"event"', '"t":"\udcff"', 1)),
                ("a NUL", lambda text: text.replace("\n", "\x00\n", 2)),
                ("NaN", lambda text: text.replace('"icount":', '"icount":NaN,"x":', 3)),
                ("a missing newline", lambda text: text.replace("}\n{", "}{", 2)),
                ("a header line only", lambda text: text.split("\n", 1)[0] + "\n")]:
            out.append(Mutation(f"{trace} with {label}", trace, _raw_text(change),
                                semantic=True))
    out.append(Mutation("empty gzip", "shell.trace", lambda raw, lines: gzip.compress(b"")))
    out.append(Mutation("empty file", "shell.trace", lambda raw, lines: b""))
    out.append(Mutation("not gzip", "shell.trace", lambda raw, lines: b"".join(
        line.encode() for line in lines)))
    return out


def _end_record(vm: int, change: Callable[[dict], dict]) -> Mutate:
    def mutate(raw: bytes, lines: list[str]) -> bytes:
        lines = list(lines)
        at = _end_line(lines, vm)
        lines[at] = _dumps(change(json.loads(lines[at])))
        return _gz(lines)
    return mutate


def _end_edit(vm: int, name: str, bump: Callable[[object], object]) -> Mutate:
    return _end_record(vm, lambda record: {**record, name: bump(record[name])})


def _last_input_edit(name: str, bump: Callable[[object], object]) -> Mutate:
    def mutate(raw: bytes, lines: list[str]) -> bytes:
        lines = list(lines)
        at = max(i for i, line in enumerate(lines) if '"t":"input"' in line)
        record = json.loads(lines[at])
        record[name] = bump(record[name])
        lines[at] = _dumps(record)
        return _gz(lines)
    return mutate


def _show(value: object) -> str:
    if value is MISSING:
        return "(missing)"
    text = repr(value)
    return text if len(text) < 30 else text[:27] + "..."


# -- running a mutant ------------------------------------------------------------------------

class Hang(BaseException):
    """The per-run bound ran out (a BaseException: nothing in dbgvm may swallow it)."""


@dataclass
class Outcome:
    verdict: str            # identical, differs (1), refused (2), crash, hang, bad-exit, ...
    status: int | None
    stderr: str


def replay_in_process(path: Path, bound: float = RUN_BOUND) -> Outcome:
    """`dbgvm replay PATH --batch` in this process: exit status and stderr (the guest's
    console output is dropped)."""
    from dbgvm import cli

    def expired(signum, frame):
        raise Hang()
    err = io.StringIO()
    out = io.TextIOWrapper(io.BytesIO())
    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, bound)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            status = cli.main(["replay", str(path), "--batch"])
    except Hang:
        return Outcome("hang", None, err.getvalue())
    except BaseException as exc:            # noqa: BLE001 - a traceback is the finding
        return Outcome("crash", None, err.getvalue() + "".join(
            traceback.format_exception_only(type(exc), exc)).strip())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return _judge(status, err.getvalue())


def replay_cli(path: Path) -> Outcome:
    """The same through the real command line (a fresh interpreter)."""
    try:
        proc = subprocess.run([sys.executable, "-m", "dbgvm", "replay", str(path), "--batch"],
                              capture_output=True, timeout=RUN_BOUND * 3, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return Outcome("hang", None, "")
    err = proc.stderr.decode(errors="replace")
    if "Traceback" in err:
        return Outcome("crash", proc.returncode, err)
    return _judge(proc.returncode, err)


def _judge(status: int, err: str) -> Outcome:
    lines = err.splitlines()
    if status == 0:
        ok = len(lines) == 1 and "replay identical to the recording" in lines[0]
        return Outcome("identical" if ok else "bad-output", status, err)
    if status == 2:
        return Outcome("refused" if len(lines) == 1 and lines[0].startswith("dbgvm: ")
                       else "bad-output", status, err)
    if status == 1:
        # a difference: one line, or a divergence (its line, then recorded:/replayed:)
        ok = lines and all(line.startswith(("dbgvm: ", "  recorded: ", "  replayed: "))
                           for line in lines)
        return Outcome("differs" if ok else "bad-output", status, err)
    return Outcome("bad-exit", status, err)


@dataclass
class Results:
    outcomes: list[tuple[Mutation, Outcome, float]]
    cli: list[tuple[Mutation, Outcome]]
    seconds: float

    def failures(self) -> list[str]:
        bad = []
        for mutation, outcome, _ in self.outcomes:
            if outcome.verdict in ("crash", "hang", "bad-output", "bad-exit") or (
                    mutation.semantic and outcome.verdict == "identical"):
                bad.append(f"{mutation.name}: {outcome.verdict} (exit {outcome.status}): "
                           f"{outcome.stderr.strip()[-300:]}")
        for mutation, outcome in self.cli:
            if outcome.verdict not in ("refused", "differs"):
                bad.append(f"CLI {mutation.name}: {outcome.verdict} (exit {outcome.status}): "
                           f"{outcome.stderr.strip()[-300:]}")
        return bad

    def figures(self) -> str:
        verdicts = Counter(o.verdict for _, o, _ in self.outcomes)
        slowest = max(self.outcomes, key=lambda x: x[2])
        return (f"{len(self.outcomes)} mutants replayed in process, {len(self.cli)} through "
                f"the CLI, {self.seconds:.1f} s in all (slowest run {slowest[2]:.2f} s, bound "
                f"{RUN_BOUND:.0f} s): " + ", ".join(f"{k} {v}" for k, v in
                                                     sorted(verdicts.items())) +
                f"; failures {len(self.failures())}")


def _same_text(content: bytes, lines: list[str]) -> bool:
    try:
        return gzip.decompress(content).decode() == "".join(lines)
    except (OSError, EOFError, ValueError):
        return False


def fuzz(traces: dict[str, Path], work: Path) -> Results:
    started = time.monotonic()
    sources = {}
    for name, path in traces.items():
        raw = path.read_bytes()
        sources[name] = (raw, gzip.decompress(raw).decode().splitlines(keepends=True))
    outcomes = []
    mutants = []
    for number, mutation in enumerate(mutations()):
        path = work / f"mutant-{number:03d}.trace"
        content = mutation.mutate(*sources[mutation.trace])
        path.write_bytes(content)
        if mutation.semantic and _same_text(content, sources[mutation.trace][1]):
            mutation = replace(mutation, semantic=False)    # a no-op edit (the same value)
        mutants.append((mutation, path))
        began = time.monotonic()
        outcome = replay_in_process(path)
        outcomes.append((mutation, outcome, time.monotonic() - began))
    # a few through the real command line: one of each kind of verdict, and crash-prone ones
    rng = random.Random(SEED)
    chosen = [m for m in mutants if m[0].semantic]
    picks = rng.sample(chosen, CLI_RUNS)
    cli = [(mutation, replay_cli(path)) for mutation, path in picks]
    return Results(outcomes, cli, time.monotonic() - started)


def test_mutated_traces_never_crash_hang_or_pass_as_identical(recorded_traces, tmp_path):
    results = fuzz(recorded_traces, tmp_path)
    failures = results.failures()
    assert not failures, results.figures() + "\n" + "\n".join(failures[:40])
    assert len(results.outcomes) >= 300
    assert Counter(o.verdict for _, o in results.cli) .keys() >= {"refused", "differs"}


def test_the_mutation_list_is_fixed():
    # seeded: the same mutants every time (a failure names one that can be made again)
    assert [m.name for m in mutations()] == [m.name for m in mutations()]


if __name__ == "__main__":
    import tempfile
    sys.path.insert(0, str(ROOT))           # this checkout's dbgvm, not an installed one
    from conftest import record_traces
    with tempfile.TemporaryDirectory() as tmp:
        traces = record_traces.record(Path(tmp) / "traces")
        results = fuzz(traces, Path(tmp))
        print(results.figures())
        for line in results.failures():
            print("  " + line)
