"""The gdb stub's TCP server at the socket level, against raw clients: a debugger that hangs up
abruptly, a second client that never speaks, Ctrl-C during a monitor command."""
from __future__ import annotations

import socket
import struct
import time

import pytest
from stub_harness import Stub, machine_for

from dbgvm.gdbstub import rsp
from dbgvm.gdbstub.session import Session


@pytest.fixture
def stub():
    s = Stub(machine_for("spin"))
    yield s
    s.close()


def _expected(machine, packet: bytes) -> bytes:
    """What a fresh session answers (read while the stub is idle between debuggers)."""
    return Session(machine).handle(packet)


def test_a_debugger_reset_while_replies_are_pending_does_not_kill_the_stub(stub):
    """gdb killed with unread data in its socket sends a reset: the stub's sendall gets
    ECONNRESET/EPIPE. The server must end that session, keep the VM paused and serve the next
    debugger."""
    with stub.client() as first:
        assert first.ask(b"?").startswith(b"T05")
        eip_before = first.ask(b"p8")
    icount = stub.machine.icount
    rude = socket.create_connection(("127.0.0.1", stub.port), timeout=5)
    rude.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # far more reply data than the socket buffers hold: the stub blocks in sendall
    rude.sendall(b"".join(rsp.encode(b"m100000,2000") for _ in range(600)))
    time.sleep(0.5)
    rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    rude.close()                                          # RST, replies still pending
    with stub.attach() as second:
        assert second.ask(b"?", timeout=5).startswith(b"T05")
        assert second.ask(b"p8") == eip_before            # still paused where it was
        regs = second.ask(b"g")
        second.ask(b"D")
    assert stub.alive(), stub.error
    assert stub.machine.icount == icount
    assert regs == _expected(stub.machine, b"g")


def test_a_silent_second_client_does_not_block_the_next_debugger(stub):
    """A second client that connects while gdb is attached and never sends anything must not
    hold up the stub: once the first gdb detaches, the next one is served at once."""
    first = stub.attach()
    regs = first.ask(b"g")
    silent = stub.client()
    time.sleep(0.5)                           # the stub has taken it (to refuse it)
    assert first.ask(b"D") == b"OK"
    first.close()
    started = time.monotonic()
    with stub.attach(timeout=5) as third:
        assert third.ask(b"?", timeout=5).startswith(b"T05")
        assert third.ask(b"g", timeout=5) == regs
        third.ask(b"D")
    assert time.monotonic() - started < 3
    # the silent one is still told why, without having said anything
    silent.sock.settimeout(5)
    data = silent.sock.recv(4096)
    silent.close()
    assert b"another debugger is already attached" in data



def test_monitor_continue_is_refused_and_the_guest_does_not_move(stub):
    """`monitor continue` would run the guest inside a qRcmd, behind gdb's back (gdb keeps
    showing its cached registers): it is refused with one line naming gdb's command, the
    guest does not run, and the stub goes on answering."""
    with stub.attach() as c:
        counter = stub.machine.symbols["counter"]
        before = c.ask(b"m%x,4" % counter)
        regs = c.ask(b"g")
        c.send_packet(b"qRcmd," + "continue".encode().hex().encode())
        output = []
        while (reply := c.reply(timeout=5)) != b"OK":
            assert reply.startswith(b"O"), reply
            output.append(bytes.fromhex(reply[1:].decode()).decode())
        text = "".join(output)
        assert text.startswith("error: 'continue' would change the guest behind gdb's back"), \
            text
        assert "use gdb's 'continue'" in text and len(text.splitlines()) == 2   # line, caret
        assert c.ask(b"m%x,4" % counter) == before and c.ask(b"g") == regs
        assert c.ask(b"?").startswith(b"T")
