"""Packet transcripts of gdb sessions: recorded by the server, replayed by tests without gdb.

One JSON object per line: ``{"dir": "in" | "out", "packet": "..."}`` with the unescaped
payload (latin-1), in the order the packets crossed the wire.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


class Transcript:
    """Appends packets to a file as they cross the wire."""

    def __init__(self, path: str | Path) -> None:
        self._file = open(path, "w", encoding="utf-8")

    def append(self, entry: tuple[str, bytes]) -> None:
        direction, payload = entry
        self._file.write(json.dumps({"dir": direction, "packet": payload.decode("latin-1")})
                         + "\n")
        self._file.flush()


def read(path: str | Path) -> Iterator[tuple[str, bytes]]:
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        yield entry["dir"], entry["packet"].encode("latin-1")
