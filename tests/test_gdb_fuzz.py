"""A socket-level fuzzer for the gdb stub: hypothesis sends sequences of packets (well-formed
names with hostile numbers, random arguments, raw garbage, bad checksums, oversize packets,
Ctrl-C) to a stub served in-process, then checks that

* the server thread is alive and every framed packet got an answer (until garbage may have
  desynchronised the framing);
* a fresh debugger still gets correct answers to ``?`` and ``g``;
* the monitor hole (the Machine's ``hole``, 0xFFC00000 and up) never leaks: marker bytes
  written there appear in no reply, in any encoding, and are never overwritten; reading hole
  addresses is an error.

The budget is fixed and the run derandomized, so the suite is reproducible and takes a few
seconds; DBGVM_FUZZ_EXAMPLES=N and DBGVM_FUZZ_RANDOM=1 make a longer, random campaign.
"""
from __future__ import annotations

import binascii
import os
import re
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stub_harness import Stub, machine_for

from dbgvm.core.descriptors import VMM_HOLE
from dbgvm.gdbstub import rsp
from dbgvm.gdbstub.session import Session
from dbgvm.repl import commands as S
from dbgvm.repl.errors import CommandError
from dbgvm.repl.parser import parse

EXAMPLES = int(os.environ.get("DBGVM_FUZZ_EXAMPLES", "80"))
RANDOM = bool(os.environ.get("DBGVM_FUZZ_RANDOM"))
MARKER = bytes.fromhex("d0b9c3e1a55a17f00dbadcafe5e1f0c4")
MARKER_AT = (0x50000, 0x80000, 0xFF000, 0x0FF0)      # unused bytes of the hole
STATS = {"examples": 0, "packets": 0, "raw": 0, "seconds": 0.0}


def _encodings(marker: bytes) -> list[bytes]:
    """The marker as a reply could carry it: raw, hex (m, O packets), spaced hex (monitor
    dumps), and as little-endian 32-bit words (x/xw)."""
    words = [marker[i:i + 4][::-1].hex().encode() for i in range(0, len(marker), 4)]
    return [marker, marker.hex().encode(), marker.hex().upper().encode(),
            " ".join(f"{b:02x}" for b in marker).encode(), *words]


# -- the packets ----------------------------------------------------------------------------
INTERESTING = [0, 1, 4, 0xFFF, 0x1000, 0x100000, 0x3FFFFFC, 0x4000000, VMM_HOLE,
               VMM_HOLE + 0x50000, VMM_HOLE + 0x80000, 0xFFFFF000, 0xFFFFFFFC,
               0xFFFFFFFF, 1 << 32, 0x1000000D1, VMM_HOLE + (1 << 32), (1 << 64) - 1, 1 << 64]
numbers = st.one_of(st.sampled_from(INTERESTING), st.integers(0, 1 << 36))
hexnum = st.one_of(numbers.map(lambda n: b"%x" % n), numbers.map(lambda n: b"%X" % n),
                   st.sampled_from([b"", b"-1", b"-0", b"0x10", b"+5", b" 4", b"1_0",
                                    b"f" * 17, b"0" * 20 + b"1", b"zz", b"\xff"]))
lengths = st.one_of(st.sampled_from([0, 1, 2, 4, 0x10, 0xFFF, 0x1000, 0x2000, 0x2001, 0x4000,
                                     0x4001]).map(lambda n: b"%x" % n), hexnum)
data = st.binary(max_size=24)
hexdata = st.one_of(data.map(binascii.hexlify), st.sampled_from([b"0", b"zz", b"xx" * 4]))
MONITOR_COMMANDS = ["regs", "info", "xp 0xffc50000 16", "x 0xffc50000 16", "x/4xw 0xffc80000",
                    "xp 0xfffffff0 16", "setp 0xffc50000 1 2", "disas 0xffc50000 2",
                    "pt walk 0xffc50000", "gdt", "idt", "tss", "step", "help", "bogus",
                    "x 0x100000 16", "events", "catch vif"]


def _join(*parts: bytes) -> bytes:
    return b"".join(parts)


def _runs_the_guest(line: bytes) -> bool:
    """Would this monitor command run the guest (for ever: the spin guest never stops)?"""
    try:
        command = parse(line.decode("utf-8", "replace"))
    except CommandError:
        return False
    return isinstance(command, (S.Continue, S.Step))


# reads and writes of a few bytes at the edges: the hole, 2**32, malformed numbers
small = st.sampled_from([b"1", b"4", b"10", b"0"])
edges = st.one_of(st.sampled_from(INTERESTING).map(lambda n: b"%x" % n), hexnum)
memory = st.one_of(
    st.builds(lambda a, n: _join(b"m", a, b",", n), edges, small),
    st.builds(lambda a, d: _join(b"M", a, b",%x:" % len(d), d.hex().encode()), edges, data),
    st.builds(lambda a, d: _join(b"X", a, b",%x:" % len(d), d), edges, data),
)
structured = st.one_of(
    memory, memory, memory,
    st.builds(lambda a, n: _join(b"m", a, b",", n), hexnum, lengths),
    st.builds(lambda a, n, d: _join(b"M", a, b",", n, b":", d), hexnum, lengths, hexdata),
    st.builds(lambda a, n, d: _join(b"X", a, b",", n, b":", d), hexnum, lengths, data),
    st.builds(lambda z, t, a, k: _join(z, t, b",", a, b",", k), st.sampled_from([b"Z", b"z"]),
              st.sampled_from([b"0", b"1", b"2", b"3", b"4", b"5", b"-1"]), hexnum,
              st.one_of(st.sampled_from([b"1", b"2", b"4", b"8"]), lengths)),
    st.builds(lambda r: b"p" + r, st.one_of(st.integers(0, 80).map(lambda n: b"%x" % n),
                                            hexnum)),
    st.builds(lambda r, d: _join(b"P", r, b"=", d),
              st.one_of(st.integers(0, 80).map(lambda n: b"%x" % n), hexnum), hexdata),
    st.builds(lambda d: b"G" + d, st.one_of(hexdata, st.just(b"0" * 1200))),
    st.builds(lambda o, n: _join(b"qXfer:features:read:target.xml:", o, b",", n),
              hexnum, lengths),
    st.builds(lambda w, o, n: _join(b"qXfer:", w, b":", o, b",", n),
              st.binary(max_size=30), hexnum, lengths),
    st.builds(lambda a: b"s" + a, st.one_of(st.just(b""), hexnum)),
    st.sampled_from([b"vCont;s", b"vCont;S05", b"vCont;s:1", b"vCont;", b"vCont;x",
                     b"vCont?", b"?", b"g", b"qSupported:swbreak+", b"qC", b"qAttached",
                     b"Hg0", b"Hc-1", b"T01", b"qfThreadInfo", b"qsThreadInfo",
                     b"vMustReplyEmpty", b"qTStatus", b"QStartNoAckMode", b"bs", b"bc", b""]),
    st.builds(lambda c: b"qRcmd," + c.encode().hex().encode(), st.sampled_from(MONITOR_COMMANDS)),
    st.builds(lambda d: b"qRcmd," + d.hex().encode(),
              data.filter(lambda d: not _runs_the_guest(d))),
    st.builds(lambda d: b"qRcmd," + d, st.sampled_from([b"0", b"zz", b"xx" * 4])),
)
# any name but those that run the guest indefinitely or end the session
names = st.sampled_from([b"m", b"M", b"X", b"Z", b"z", b"p", b"P", b"g", b"G", b"H", b"T",
                         b"q", b"Q", b"v", b"qXfer", b"qXfer:features:read:", b"qSupported",
                         b"qC", b"?", b"s", b"i", b"!", b"R", b"A", b"F", b"vFile:open:",
                         b"vFile:pread:", b"qCRC:", b"qL", b"Hg", b"vRun;"])
random_packets = st.builds(lambda n, a: n + a, names, st.binary(max_size=40))
raw = st.one_of(st.binary(min_size=1, max_size=48),
                st.sampled_from([b"\x03", b"-", b"+", b"$g#00", b"$m0,4#zz", b"}}}",
                                 b"$" + b"a" * (rsp.MAX_PACKET + 16) + b"#00", b"#", b"$"]))
steps = st.lists(st.one_of(structured.map(lambda p: ("packet", p)),
                           random_packets.map(lambda p: ("packet", p)),
                           raw.map(lambda b: ("raw", b))), min_size=1, max_size=10)

STOP_REPLY = re.compile(rb"(T[0-9a-f]{2}thread:01;.*|W[0-9a-f]{2}|S[0-9a-f]{2})", re.S)
MEMORY = re.compile(rb"([mMX])([^,:]*),([^,:]*)(:.*)?", re.S)
HEX = re.compile(rb"[0-9a-fA-F]{1,16}")


def _must_fail(packet: bytes) -> bool:
    """m/M/X packets the stub must refuse whatever the memory holds: a malformed number
    (sign, 0x, blank, too long), or a range reaching into the hole or past 32 bits."""
    match = MEMORY.fullmatch(packet)
    if not match:
        return False
    if not (HEX.fullmatch(match[2]) and HEX.fullmatch(match[3])):
        return True
    addr, length = int(match[2], 16), int(match[3], 16)
    return length > 0 and addr + length > VMM_HOLE


def _leaks(received: bytes) -> bool:
    return any(e in received for e in _encodings(MARKER))


@settings(max_examples=EXAMPLES, derandomize=not RANDOM, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(steps=steps)
def test_fuzzed_packets_never_break_the_stub(steps):
    started = time.monotonic()
    machine = machine_for("spin")
    for offset in MARKER_AT:
        machine.hole[offset:offset + len(MARKER)] = MARKER
    stub = Stub(machine)
    clients = []
    try:
        client = stub.attach()
        clients.append(client)
        received = bytearray()
        in_sync = True                     # framing not disturbed by raw garbage yet
        for kind, payload in steps:
            STATS["packets" if kind == "packet" else "raw"] += 1
            if kind == "raw":
                client.sock.sendall(payload)
                in_sync = False
                continue
            client.send_packet(payload)
            try:
                reply = client.reply(timeout=5 if in_sync else 0.05)
                while reply.startswith(b"O") and reply != b"OK":     # console output
                    reply = client.reply(timeout=5 if in_sync else 0.05)
            except TimeoutError:
                assert not in_sync, f"no answer to {payload[:60]!r}"
                continue
            assert stub.alive(), stub.error
            if in_sync and _must_fail(payload):
                assert reply.startswith(b"E"), (payload, reply)
        client.sock.settimeout(0.01)              # what else came (after garbage)
        try:
            while chunk := client.sock.recv(65536):
                client.received += chunk
        except OSError:
            pass
        received += client.received
        client.close()
        assert stub.alive(), stub.error

        # a new debugger gets correct answers; the hole neither leaks nor changed
        live = stub.attach()
        clients.append(live)
        assert STOP_REPLY.fullmatch(live.ask(b"?")), "bad stop reply"
        regs = live.ask(b"g")
        assert regs == Session(machine).handle(b"g")      # the stub thread waits in select
        for addr in (VMM_HOLE, VMM_HOLE + 0x50000, VMM_HOLE + 0x80000, 0xFFFFF000):
            assert live.ask(b"m%x,10" % addr).startswith(b"E")
        received += live.received
        live.ask(b"D")
        live.close()
        assert not _leaks(bytes(received)), "a reply carried the hole's marker"
        for offset in MARKER_AT:
            assert machine.hole[offset:offset + len(MARKER)] == MARKER, "the hole was written"
        assert stub.alive(), stub.error
    finally:
        for c in clients:
            c.close()
        stub.close()
        assert not stub.alive(), "the stub did not end on vKill"
        STATS["examples"] += 1
        STATS["seconds"] += time.monotonic() - started


def teardown_module() -> None:
    if os.environ.get("DBGVM_FUZZ_REPORT"):
        print(f"\nfuzz: {STATS['examples']} examples, {STATS['packets']} packets, "
              f"{STATS['raw']} raw chunks, {STATS['seconds']:.1f} s")


def test_the_leak_check_sees_the_marker():
    """The hole marker check is not vacuous: a reply carrying the marker in any of the
    encodings is caught."""
    for encoded in _encodings(MARKER):
        assert _leaks(b"$O" + encoded + b"#00")
    assert not _leaks(b"$" + bytes(16).hex().encode() + b"#00")
