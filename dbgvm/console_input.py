"""Console input from a terminal or a pipe, for `--batch` runs.

A thread reads stdin (so the single Unicorn thread never blocks on it) and queues what it
read. With several VMs, a line starting with ``@N `` goes to VM N (the prefix is removed);
every other line goes to VM 0, and so does the end of input: VM 0's shell powers off at end
of input, and the run ends with it."""
from __future__ import annotations

import os
import queue
import re
import threading

_ROUTE = re.compile(rb"@(\d+) (.*)", re.DOTALL)


class StdinSource:
    def __init__(self, fd: int, vms: int) -> None:
        self._fd = fd
        self._vms = vms
        self._queue: queue.Queue[bytes | None] = queue.Queue()     # None: wake()
        self._closed = False
        self._partial = b""
        self._held: list[bytes] = []     # taken off the queue by wait(), routed by poll()
        threading.Thread(target=self._reader, name="dbgvm-stdin", daemon=True).start()

    def _reader(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 4096)
            except OSError:
                data = b""
            self._queue.put(data)
            if not data:
                return

    def _route(self, data: bytes) -> list[tuple[int, bytes]]:
        if self._vms == 1:
            return [(0, data)]
        if not data:
            tail, self._partial = self._partial, b""
            return ([(0, tail)] if tail else []) + [(0, b"")]
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        routed = []
        for line in lines:
            match = _ROUTE.fullmatch(line)
            if match is not None and int(match.group(1)) < self._vms:
                routed.append((int(match.group(1)), match.group(2) + b"\n"))
            else:
                routed.append((0, line + b"\n"))
        return routed

    def poll(self) -> list[tuple[int, bytes]]:
        routed: list[tuple[int, bytes]] = []
        while True:
            if self._held:
                data = self._held.pop(0)
            else:
                try:
                    data = self._queue.get_nowait()
                except queue.Empty:
                    return routed
            if data is None:
                continue
            self._closed = self._closed or not data
            routed += self._route(data)

    def wait(self, timeout: float | None) -> bool:
        if self._held:
            return True
        if self._closed and self._queue.empty():
            if timeout:
                # nothing more can come: still let the requested real time pass
                threading.Event().wait(timeout)
            return False
        try:
            data = self._queue.get(timeout=timeout)
        except queue.Empty:
            return True
        if data is not None:
            self._held.append(data)
        return True

    def wake(self) -> None:
        """End a wait() early (any thread, not a signal handler: Ctrl-C starts a thread to
        call it), so that the run loop looks at its stop request."""
        self._queue.put(None)
