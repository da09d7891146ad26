"""Recording a run (`dbgvm run --record FILE`): what ran, every outside input, every event.

Inputs are taken where they enter each machine (InputQueue observers), so console bytes from
the host and frames from another VM are both there, stamped with the instruction count and
virtual time at which they took effect. Events are written as the JSON the trace shows, and
hashed as they go; at the end each VM's stop, event count and hash and a digest of its state
close the file.
"""
from __future__ import annotations

import hashlib
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..core.events import Event, EventKind
from ..core.machine import Machine, Stop
from .trace import RecordedEnd, TraceWriter, decode, encode


CUT_OFF_MESSAGE = "the run ended while this VM ran"     # the end of a VM that was cut off


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def state_digest(machine: Machine) -> str:
    """Guest RAM (CRC-32 per MiB: a cryptographic hash of 64 MiB would cost more than many a
    recorded run), the registers as the guest sees them, the instruction count and time."""
    ram = machine.ram
    crcs = [zlib.crc32(ram[offset:offset + (1 << 20)]) for offset in range(0, len(ram), 1 << 20)]
    digest = hashlib.sha256(repr(crcs).encode())
    digest.update(repr(sorted(asdict(machine.registers()).items())).encode())
    digest.update(f"{machine.icount}:{machine.clock.now()}".encode())
    return digest.hexdigest()


class EventStream:
    """The events of one VM as the trace stores and compares them (JSON, stop events aside:
    where a recorded run was cut off is not a guest event)."""

    def __init__(self) -> None:
        self.count = 0
        self._hash = hashlib.sha256()

    def add(self, event: Event) -> str | None:
        if event.kind is EventKind.STOP:
            return None
        text = event.to_json()
        self.count += 1
        self._hash.update(text.encode() + b"\n")
        return text

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class Recorder:
    def __init__(self, path: str | Path, header: dict[str, Any],
                 machines: list[Machine]) -> None:
        self._writer = TraceWriter(path, header)
        self._machines = machines
        self._streams = [EventStream() for _ in machines]
        for vm, machine in enumerate(machines):
            machine.inputs.observe(
                lambda i, vm=vm: self._writer.input(vm, i.icount, i.time, i.channel, i.payload))
            machine.events.subscribe(set(EventKind), lambda e, vm=vm: self._event(vm, e))

    def _event(self, vm: int, event: Event) -> None:
        text = self._streams[vm].add(event)
        if text is not None:
            self._writer.event(vm, text)

    def finish(self, stops: dict[int, Stop]) -> None:
        """Close the trace; ``stops`` holds the stop of each VM that ended (the others were
        cut off where the run ended)."""
        for vm, machine in enumerate(self._machines):
            stop = stops.get(vm)
            stream = self._streams[vm]
            self._writer.end(RecordedEnd(
                vm, machine.icount, machine.clock.now(), stop.reason.value if stop else "cut-off",
                stop.message if stop else CUT_OFF_MESSAGE,
                stop.exit_status if stop else 0, state_digest(machine), stream.count,
                stream.hexdigest()))
        self._writer.close()


def file_entry(path: str | Path, data: bytes, embed: bool,
               compress: bool = False) -> dict[str, Any]:
    """What the header says of a file: its name, hash and size, and its bytes when embedded
    (base64; with ``compress``, of their zlib compression, ``"encoding": "zlib"``)."""
    entry: dict[str, Any] = {"path": str(path), "sha256": sha256(data), "size": len(data)}
    if embed and compress:
        entry["encoding"] = "zlib"
        entry["data"] = encode(zlib.compress(data, 6))
    elif embed:
        entry["data"] = encode(data)
    return entry


def entry_data(entry: dict[str, Any]) -> bytes:
    """The bytes a file entry embeds (its ``data``, decoded and decompressed)."""
    data = decode(entry["data"])
    if entry.get("encoding") == "zlib":
        data = zlib.decompress(data)
    elif entry.get("encoding") is not None:
        raise ValueError(f"unknown encoding {entry['encoding']!r} of {entry.get('path')}")
    return data
