"""Serving gdb over TCP: one debugger at a time, the VM paused between sessions.

Everything, the guest included, runs on the serving thread (Unicorn is used from one thread);
while the guest runs, the socket is polled between quanta for gdb's Ctrl-C.
"""
from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable
from typing import Protocol

from ..core.machine import Machine
from . import rsp
from .hostio import ServedFile
from .session import MonitorCommand, Reverse, Runner, Session

REFUSAL = b"E.dbgvm: another debugger is already attached"
REFUSAL_WAIT = 1.0            # seconds a refused client has to send its first packet
MAX_REFUSING = 8              # clients being refused at once; more are just closed


class Recorder(Protocol):
    def append(self, entry: tuple[str, bytes]) -> None: ...


def parse_address(text: str) -> tuple[str, int]:
    """``1234``, ``:1234`` or ``host:1234``; loopback unless a host is named."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"bad gdb port {text!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"bad gdb port {text!r}")
    return host or "127.0.0.1", number


class Connection:
    """A connected gdb: framing, acks and retransmission over one socket.

    Any socket error, sending or receiving, is gdb hanging up (a gdb killed with unread data
    in its socket resets the connection): ``closed`` is set and the session ends, the VM
    stays paused and the server waits for the next debugger.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = rsp.Decoder()
        self.pending: list[rsp.Frame] = []
        self._last = b""
        self.transcript: Recorder | None = None
        self.closed = False

    def _write(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def send(self, payload: bytes) -> None:
        self._last = rsp.encode(payload)
        if self.transcript is not None:
            self.transcript.append(("out", payload))
        self._write(self._last)

    def ack(self, good: bool = True) -> None:
        self._write(b"+" if good else b"-")

    def resend(self) -> None:
        if self._last:
            self._write(self._last)

    def receive(self, timeout: float | None) -> list[rsp.Frame] | None:
        """Frames from gdb (None once it hung up); [] when nothing came within ``timeout``."""
        if self.pending:
            frames, self.pending = self.pending, []
            return frames
        if self.closed:
            return None
        try:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                return []
            data = self.sock.recv(65536)
        except (OSError, ValueError):
            data = b""
        if not data:
            self.closed = True
            return None
        return self.decoder.feed(data)

    def interrupted(self) -> bool:
        """Polled while the guest runs: did gdb send Ctrl-C? Other frames are kept."""
        frames = self.receive(0)
        if frames is None:
            return True
        hit = any(f.kind is rsp.Kind.INTERRUPT for f in frames)
        self.pending.extend(f for f in frames if f.kind is not rsp.Kind.INTERRUPT)
        return hit


def serve_session(conn: Connection, session: Session) -> None:
    """Answer packets until gdb detaches, kills or hangs up."""
    session.interrupted = conn.interrupted
    while not (session.killed or session.detached):
        frames = conn.receive(None)
        if frames is None:
            return
        for frame in frames:
            if conn.closed:
                return
            if frame.kind is rsp.Kind.PACKET:
                if conn.transcript is not None:
                    conn.transcript.append(("in", frame.payload))
                if not session.no_ack:
                    conn.ack()
                reply = session.handle(frame.payload)
                for line in session.output:
                    conn.send(line)
                session.output.clear()
                if reply is not None:
                    conn.send(reply)
                if session.killed or session.detached:
                    return
            elif frame.kind is rsp.Kind.BAD_CHECKSUM:
                conn.ack(False)
            elif frame.kind is rsp.Kind.OVERSIZE:
                conn.ack()
                conn.send(b"E01")
            elif frame.kind is rsp.Kind.NACK:
                conn.resend()
            elif frame.kind is rsp.Kind.INTERRUPT:
                conn.send(b"T02thread:01;")


class GdbServer:
    def __init__(self, machine: Machine, address: tuple[str, int], *,
                 monitor: MonitorCommand | None = None,
                 log: Callable[[str], None] = lambda text: None,
                 run: Runner | None = None, reverse: Reverse | None = None,
                 exec_file: ServedFile | None = None) -> None:
        self.machine = machine
        self.exec_file = exec_file      # served to gdb (qXfer:exec-file, vFile)
        self._run = run
        self._reverse = reverse
        self._monitor = monitor
        self._log = log
        self.listener = socket.create_server(address, reuse_port=False)
        self.address = self.listener.getsockname()[:2]
        self.transcript: Recorder | None = None
        self._refusing = threading.BoundedSemaphore(MAX_REFUSING)

    def serve(self) -> int:
        """Serve debuggers one after another until one kills the VM, or until the debugger
        that was told the guest ended (a ``W`` reply: debug-exit, power-off) detaches or
        hangs up, as QEMU's stub ends with its guest. Returns the exit status: the guest's
        after its end, 0 after a kill."""
        last_stop = None
        while True:
            try:
                sock, peer = self.listener.accept()
            except ConnectionError:          # gone before it was taken (ECONNABORTED)
                continue
            self._log(f"dbgvm: gdb connected from {peer[0]}:{peer[1]}")
            try:        # the ack and the reply are two small writes: no Nagle delay between
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            conn = Connection(sock)
            conn.transcript = self.transcript
            session = Session(self.machine, monitor=self._monitor, run=self._run,
                              reverse=self._reverse, exec_file=self.exec_file)
            if last_stop is not None:
                session.last_stop = last_stop
            self.listener.settimeout(None)
            try:
                self._serve_with_refusals(conn, session)
            finally:
                sock.close()
                session.release_points()
            last_stop = session.last_stop
            if session.killed:
                self._log("dbgvm: killed by gdb")
                return 0
            if session.exited is not None:
                stop = session.exited
                self._log(f"dbgvm: {stop.reason.value}: {stop.message}")
                self._log("dbgvm: the guest has ended and gdb was told: dbgvm exits "
                          f"(status {stop.exit_status})")
                return stop.exit_status
            self._log("dbgvm: gdb detached; the VM stays paused, waiting for a debugger")

    def _serve_with_refusals(self, conn: Connection, session: Session) -> None:
        """Serve one session; a second gdb connecting meanwhile is told why it is refused."""
        stop = threading.Event()
        wake, waker = socket.socketpair()       # ends the wait at once when the session ends

        def accept_others() -> None:
            while not stop.is_set():
                try:
                    ready, _, _ = select.select([self.listener, wake], [], [])
                    if stop.is_set() or self.listener not in ready:
                        continue
                    other, _ = self.listener.accept()
                except ConnectionError:
                    continue
                except (OSError, ValueError):     # the listener was closed
                    return
                if self._refusing.acquire(blocking=False):
                    threading.Thread(target=self._refuse, args=(other,), daemon=True).start()
                else:
                    other.close()            # a crowd: no explanation for the rest
        thread = threading.Thread(target=accept_others, daemon=True)
        thread.start()
        try:
            serve_session(conn, session)
        finally:
            stop.set()
            waker.send(b"x")
            thread.join()
            wake.close()
            waker.close()

    def _refuse(self, other: socket.socket) -> None:
        """Tell a refused client why, on its own thread: gdb's first packet is read first
        (so that closing does not reset the connection before gdb reads the reason), but a
        client that says nothing is waited for at most REFUSAL_WAIT seconds and never holds
        up the next debugger."""
        try:
            other.settimeout(REFUSAL_WAIT)
            try:
                other.recv(4096)
            except TimeoutError:
                pass
            other.sendall(b"+" + rsp.encode(REFUSAL))
        except OSError:
            pass
        finally:
            other.close()
            self._refusing.release()
