"""A dbgvm gdb stub served in-process (a thread) and a raw-socket RSP client, for the
socket-level tests: hang-ups, refusals, Ctrl-C, the fuzzer."""
from __future__ import annotations

import socket
import threading
import time

from guest_build import build

from dbgvm.core.assembly import build_machine
from dbgvm.core.loader import load
from dbgvm.core.machine import Machine
from dbgvm.gdbstub import rsp
from dbgvm.gdbstub.server import GdbServer
from dbgvm.repl.commands import CommandInterpreter


def machine_for(name: str) -> Machine:
    m = build_machine()
    m.load(load(build(name), m.ram_size))
    return m


class Stub:
    """``GdbServer.serve`` on a thread; ``error`` is what killed it, if anything did."""

    def __init__(self, machine: Machine, **kwargs) -> None:
        self.machine = machine
        kwargs.setdefault("monitor", CommandInterpreter(machine).run)
        self.log: list[str] = []
        self.server = GdbServer(machine, ("127.0.0.1", 0), log=self.log.append, **kwargs)
        self.port = self.server.address[1]
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.server.serve()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def alive(self) -> bool:
        return self.thread.is_alive()

    def client(self, timeout: float = 5.0) -> Client:
        return Client(self.port, timeout)

    def attach(self, timeout: float = 5.0) -> Client:
        """A client the stub serves: while the previous debugger's session is still ending
        (the stub has not yet seen it hang up), a new one is refused; try again."""
        deadline = time.monotonic() + timeout
        while True:
            c = Client(self.port, timeout)
            reply = c.ask(b"?", timeout)
            if not reply.startswith(b"E.dbgvm: another"):
                return c
            c.close()
            if time.monotonic() > deadline:
                raise TimeoutError("the stub kept refusing")
            time.sleep(0.05)

    def close(self) -> None:
        if self.thread.is_alive():
            try:
                with self.attach(2.0) as c:
                    c.send_packet(b"vKill")
                    c.reply()
            except OSError:
                pass
            self.thread.join(5)
        self.server.listener.close()


class Client:
    """A raw RSP client (acks on), packet by packet."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = rsp.Decoder()
        self.frames: list[rsp.Frame] = []
        self.received = bytearray()          # everything the stub sent

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send_packet(self, payload: bytes) -> None:
        self.sock.sendall(rsp.encode(payload))

    def reply(self, timeout: float | None = None) -> bytes:
        """The next packet from the stub (acks skipped, O packets included)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for i, frame in enumerate(self.frames):
                if frame.kind is rsp.Kind.PACKET:
                    del self.frames[:i + 1]
                    self.sock.sendall(b"+")
                    return frame.payload
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no reply from the stub")
                self.sock.settimeout(left)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the stub hung up")
            self.received += data
            self.frames = [f for f in self.frames if f.kind is rsp.Kind.PACKET]
            self.frames += self.decoder.feed(data)

    def ask(self, payload: bytes, timeout: float | None = None) -> bytes:
        """Send a packet, return its reply (skipping console O packets)."""
        self.send_packet(payload)
        while True:
            reply = self.reply(timeout)
            if not (reply.startswith(b"O") and reply != b"OK"):
                return reply
