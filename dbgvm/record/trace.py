"""The recorded-run file (docs/trace-format.md): gzip-compressed JSON Lines, versioned.

A header says what ran (the kernel, initrd and disk contents, options); then, per
VM and in the order they happened, every outside input with the exact instruction count and
virtual time at which it took effect, and every event; last, per VM, how its run ended and a
digest of its final state. Reading is strict: a file of a newer format version, or one that is
not a dbgvm trace, is refused with one line.
"""
from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

FORMAT = "dbgvm-trace"
VERSION = 2             # 2: the kernel is in the header; 1: only its hash (still read)


class TraceError(ValueError):
    """The file cannot be used (one line for the user)."""


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


@dataclass(frozen=True)
class RecordedInput:
    vm: int
    icount: int
    time: int
    channel: str
    payload: bytes


@dataclass(frozen=True)
class RecordedEnd:
    vm: int
    icount: int
    time: int
    reason: str
    message: str
    exit_status: int
    state_digest: str
    events: int
    events_sha256: str


@dataclass
class Trace:
    header: dict[str, Any]
    inputs: list[RecordedInput] = field(default_factory=list)
    events: dict[int, list[str]] = field(default_factory=dict)      # vm -> event JSON lines
    ends: dict[int, RecordedEnd] = field(default_factory=dict)


class TraceWriter:
    def __init__(self, path: str | Path, header: dict[str, Any]) -> None:
        # fast compression, lines gathered in batches: recording must stay cheap
        self._out: IO[str] = gzip.open(path, "wt", encoding="utf-8", compresslevel=1)
        self._lines: list[str] = []
        self._write({"format": FORMAT, "version": VERSION, **header})

    def _line(self, line: str) -> None:
        self._lines.append(line)
        if len(self._lines) >= 4096:
            self._flush()

    def _flush(self) -> None:
        self._out.write("".join(self._lines))
        self._lines.clear()

    def _write(self, record: dict[str, Any]) -> None:
        self._line(json.dumps(record, separators=(",", ":")) + "\n")

    def input(self, vm: int, icount: int, time: int, channel: str, payload: bytes) -> None:
        self._write({"t": "input", "vm": vm, "icount": icount, "time": time,
                     "channel": channel, "data": encode(payload)})

    def event(self, vm: int, event_json: str) -> None:
        self._line('{"t":"event","vm":%d,"e":%s}\n' % (vm, event_json))

    def end(self, end: RecordedEnd) -> None:
        self._write({"t": "end", **end.__dict__})

    def close(self) -> None:
        self._flush()
        self._out.close()


def _records(path: Path) -> Iterator[dict[str, Any]]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as stream:
            for number, line in enumerate(stream, 1):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise TraceError(f"{path}:{number}: not a JSON record") from None
                if not isinstance(record, dict):
                    raise TraceError(f"{path}:{number}: not a JSON object")
                yield record
    except OSError as exc:      # includes gzip.BadGzipFile
        raise TraceError(f"{path}: cannot read a dbgvm trace: {exc}") from None


def read(path: str | Path) -> Trace:
    path = Path(path)
    records = _records(path)
    header = next(records, None)
    if header is None or header.get("format") != FORMAT:
        raise TraceError(f"{path}: not a dbgvm trace")
    version = header.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise TraceError(f"{path}: trace format version {version} is newer than this dbgvm "
                         f"reads ({VERSION}): use a newer dbgvm")
    trace = Trace(header)
    try:
        for record in records:
            kind = record.get("t")
            if kind == "input":
                trace.inputs.append(RecordedInput(record["vm"], record["icount"],
                                                  record["time"], record["channel"],
                                                  decode(record["data"])))
            elif kind == "event":
                trace.events.setdefault(record["vm"], []).append(
                    json.dumps(record["e"], separators=(",", ":")))
            elif kind == "end":
                fields = {k: v for k, v in record.items() if k != "t"}
                trace.ends[record["vm"]] = RecordedEnd(**fields)
            else:
                raise TraceError(f"{path}: unknown record type {kind!r}")
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, TraceError):
            raise
        raise TraceError(f"{path}: malformed record ({exc})") from None
    return trace
