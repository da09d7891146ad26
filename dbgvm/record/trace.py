"""The recorded-run file (docs/trace-format.md): gzip-compressed JSON Lines, versioned.

A header says what ran (the kernel, initrd and disk contents, options); then, per
VM and in the order they happened, every outside input with the exact instruction count and
virtual time at which it took effect, and every event; last, per VM, how its run ended and a
digest of its final state. Reading is strict: a file of a newer format version, or one that is
not a dbgvm trace, is refused with one line; so is one that does not fit the documented schema
(types and ranges of every field, one end record per VM: docs/trace-format.md).
"""
from __future__ import annotations

import base64
import gzip
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..core.machine import MAX_RAM_MB

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


MAX_VMS = 16                    # `dbgvm run --vms` (cli.py) takes the same bound
MAX_COUNT = 1 << 63             # instruction counts, virtual times, sizes: below 2**63
RTC_RANGE = (-62135596800, 253402300799)    # Unix seconds of years 1..9999
CHANNELS = ("console", "net")
HEADER_FIELDS = {"format", "version", "kernel", "append", "ram_mb", "vms", "network",
                 "boot_decompressor", "rtc_start", "initrd", "disk"}
KERNEL_FIELDS = {"path", "sha256", "size", "bundled", "encoding", "data"}
FILE_FIELDS = {"path", "sha256", "size", "encoding", "data"}
RECORD_FIELDS = {"input": {"t", "vm", "icount", "time", "channel", "data"},
                 "event": {"t", "vm", "e"},
                 "end": {"t", *RecordedEnd.__dataclass_fields__}}


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, JSON object) of every line; any damage is a one-line TraceError."""
    number = 0
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="\n") as stream:
            for number, line in enumerate(stream, 1):
                try:
                    record = json.loads(line)
                except RecursionError:
                    raise TraceError(f"{path}:{number}: JSON nested too deeply") from None
                except ValueError:      # JSONDecodeError, a number of too many digits
                    raise TraceError(f"{path}:{number}: not a JSON record") from None
                if not isinstance(record, dict):
                    raise TraceError(f"{path}:{number}: not a JSON object")
                yield number, record
    except EOFError:
        raise TraceError(f"{path}: the file is truncated (after line {number})") from None
    except (OSError, zlib.error) as exc:        # OSError includes gzip.BadGzipFile
        raise TraceError(f"{path}: cannot read a dbgvm trace: "
                         f"{exc.strerror or exc if isinstance(exc, OSError) else exc}") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path}:{number + 1}: not UTF-8 text") from None


def _is_int(value: object, low: int = 0, high: int = MAX_COUNT) -> bool:
    return type(value) is int and low <= value < high


def _is_digest(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and \
        all(c in "0123456789abcdef" for c in value)


def _is_base64(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        decode(value)
    except ValueError:          # binascii.Error, non-ASCII text
        return False
    return True


class _Checker:
    """Checks one JSON object against its schema; errors name the line and the field."""

    def __init__(self, where: str, obj: dict[str, Any], what: str, allowed: set[str]) -> None:
        self.where, self.obj, self.what = where, obj, what
        unknown = sorted(set(obj) - allowed)
        if unknown:
            self.fail(f"unknown field {unknown[0]!r}")

    def fail(self, problem: str) -> None:
        raise TraceError(f"{self.where}: {self.what}: {problem}")

    def field(self, name: str, test: Callable[[object], bool], expected: str,
              optional: bool = False) -> Any:
        if name not in self.obj:
            if optional:
                return None
            self.fail(f"no {name!r} field")
        value = self.obj[name]
        if not test(value):
            shown = json.dumps(value)
            if len(shown) > 40:
                shown = shown[:37] + "..."
            self.fail(f"{name!r} must be {expected}, not {shown}")
        return value


def _check_file(where: str, entry: object, what: str, fields: set[str],
                data_required: bool) -> None:
    if not isinstance(entry, dict):
        raise TraceError(f"{where}: {what} must be a JSON object")
    check = _Checker(where, entry, what, fields)
    check.field("path", lambda v: isinstance(v, str), "a string")
    check.field("sha256", _is_digest, "a SHA-256 (64 hex digits)")
    check.field("size", _is_int, "a size")
    check.field("encoding", lambda v: v == "zlib", '"zlib"', optional=True)
    check.field("data", _is_base64, "base64 text", optional=not data_required)


def check_header(header: dict[str, Any], where: str) -> None:
    """The header against docs/trace-format.md (format and version already checked)."""
    check = _Checker(where, header, "header", HEADER_FIELDS)
    check.field("version", lambda v: _is_int(v, 1), "a version number")
    version = header["version"]
    _check_file(where, check.field("kernel", lambda v: isinstance(v, dict), "an object"),
                "kernel", KERNEL_FIELDS, data_required=version >= 2)
    _Checker(where, header["kernel"], "kernel", KERNEL_FIELDS).field(
        "bundled", lambda v: isinstance(v, bool), "true or false")
    check.field("append", lambda v: isinstance(v, str), "a string")
    check.field("ram_mb", lambda v: _is_int(v, 2, MAX_RAM_MB + 1), f"2..{MAX_RAM_MB} (MiB)")
    check.field("vms", lambda v: _is_int(v, 1, MAX_VMS + 1), f"1..{MAX_VMS}")
    check.field("network", lambda v: isinstance(v, bool), "true or false")
    check.field("boot_decompressor", lambda v: isinstance(v, bool), "true or false",
                optional=True)
    check.field("rtc_start", lambda v: _is_int(v, RTC_RANGE[0], RTC_RANGE[1] + 1),
                "Unix seconds (years 1..9999)", optional=True)
    initrd = check.field("initrd", lambda v: isinstance(v, list), "a list")
    for index, entry in enumerate(initrd or ()):
        _check_file(where, entry, f"initrd module {index}", FILE_FIELDS | {"spec"}, True)
        _Checker(where, entry, f"initrd module {index}", FILE_FIELDS | {"spec"}).field(
            "spec", lambda v: isinstance(v, str), "a string")
    disk = check.field("disk", lambda v: v is None or isinstance(v, dict), "null or an object")
    if disk is not None:
        _check_file(where, disk, "disk", FILE_FIELDS | {"writable"}, True)
        _Checker(where, disk, "disk", FILE_FIELDS | {"writable"}).field(
            "writable", lambda v: isinstance(v, bool), "true or false")


def _check_record(where: str, record: dict[str, Any], vms: int) -> str:
    kind = record.get("t")
    if kind not in RECORD_FIELDS:
        shown = json.dumps(kind)
        raise TraceError(f"{where}: unknown record type "
                         f"{shown if len(shown) <= 40 else shown[:37] + '...'}")
    check = _Checker(where, record, f"{kind} record", RECORD_FIELDS[kind])
    check.field("vm", lambda v: _is_int(v, 0, vms), f"a VM number (0..{vms - 1})")
    if kind == "input":
        check.field("icount", _is_int, "an instruction count")
        check.field("time", _is_int, "a virtual time")
        check.field("channel", lambda v: v in CHANNELS, " or ".join(map(json.dumps, CHANNELS)))
        check.field("data", _is_base64, "base64 text")
    elif kind == "event":
        event = check.field("e", lambda v: isinstance(v, dict), "an event object")
        inner = _Checker(where, event, "event", set(event))
        inner.field("icount", _is_int, "an instruction count")
        inner.field("kind", lambda v: isinstance(v, str), "a string")
        inner.field("eip", lambda v: _is_int(v, 0, 1 << 32), "an address")
    else:
        check.field("icount", _is_int, "an instruction count")
        check.field("time", _is_int, "a virtual time")
        check.field("reason", lambda v: isinstance(v, str) and v != "", "a stop reason")
        check.field("message", lambda v: isinstance(v, str), "a string")
        check.field("exit_status", lambda v: _is_int(v, -MAX_COUNT), "an exit status")
        check.field("state_digest", _is_digest, "a SHA-256 (64 hex digits)")
        check.field("events", _is_int, "an event count")
        check.field("events_sha256", _is_digest, "a SHA-256 (64 hex digits)")
    return kind


def read(path: str | Path) -> Trace:
    """The trace in ``path``, checked against docs/trace-format.md: any damage or schema
    violation is a one-line TraceError (with the line number where there is one)."""
    path = Path(path)
    records = _records(path)
    first = next(records, None)
    if first is None:
        raise TraceError(f"{path}: not a dbgvm trace (empty)")
    _, header = first
    if header.get("format") != FORMAT:
        raise TraceError(f"{path}: not a dbgvm trace")
    version = header.get("version")
    if _is_int(version) and version > VERSION:
        raise TraceError(f"{path}: trace format version {version} is newer than this dbgvm "
                         f"reads ({VERSION}): use a newer dbgvm")
    check_header(header, f"{path}:1")
    vms = header["vms"]
    network = header.get("network", True)
    trace = Trace(header)
    last_input: dict[int, tuple[int, int]] = {}
    for number, record in records:
        where = f"{path}:{number}"
        kind = _check_record(where, record, vms)
        vm = record["vm"]
        if vm in trace.ends:
            raise TraceError(f"{where}: a record for vm{vm} after its end record")
        if kind == "input":
            if record["channel"] == "net" and not network:
                raise TraceError(f"{where}: a net input, but the trace has no network")
            icount, time = record["icount"], record["time"]
            before = last_input.get(vm, (0, 0))
            if icount < before[0] or time < before[1] or icount > time:
                raise TraceError(f"{where}: input out of order (icount {icount}, time {time}: "
                                 "instruction counts and times only grow, and a time is at "
                                 "least its instruction count)")
            last_input[vm] = (icount, time)
            trace.inputs.append(RecordedInput(vm, record["icount"], record["time"],
                                              record["channel"], decode(record["data"])))
        elif kind == "event":
            trace.events.setdefault(vm, []).append(
                json.dumps(record["e"], separators=(",", ":")))
        else:
            if record["icount"] > record["time"]:
                raise TraceError(f"{where}: end of vm{vm} at icount {record['icount']} before "
                                 f"time {record['time']} (a time is at least its instruction "
                                 "count)")
            fields = {k: v for k, v in record.items() if k != "t"}
            trace.ends[vm] = RecordedEnd(**fields)
    missing = [vm for vm in range(vms) if vm not in trace.ends]
    if missing:
        raise TraceError(f"{path}: no end record for vm{missing[0]} (the trace has {vms} VMs; "
                         "a truncated or incomplete file)")
    return trace
