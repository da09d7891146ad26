"""The packet layer against malformed input (hypothesis), and recorded gdb sessions replayed
against the stub without gdb."""
from __future__ import annotations

from pathlib import Path

import pytest
from guest_build import build
from hypothesis import given, settings
from hypothesis import strategies as st

from dbgvm.core.loader import load
from dbgvm.core.machine import Machine
from dbgvm.gdbstub import rsp, transcript
from dbgvm.gdbstub.session import Session

TRANSCRIPTS = Path(__file__).parent / "transcripts"


def machine_for(name: str) -> Machine:
    m = Machine()
    m.load(load(build(name), m.ram_size))
    return m


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decoder_never_raises_and_only_yields_whole_frames(data):
    frames = rsp.Decoder().feed(data)
    for frame in frames:
        assert isinstance(frame.kind, rsp.Kind)


@given(st.binary(max_size=200))
def test_encode_decode_round_trip(payload):
    frames = rsp.Decoder().feed(rsp.encode(payload))
    assert frames == [rsp.Frame(rsp.Kind.PACKET, payload)]


def test_bad_checksum_and_oversize_are_frames_not_errors():
    d = rsp.Decoder()
    assert d.feed(b"$g#00") == [rsp.Frame(rsp.Kind.BAD_CHECKSUM)]
    big = b"$" + b"a" * (rsp.MAX_PACKET + 10) + b"#00"
    assert rsp.Frame(rsp.Kind.OVERSIZE) in d.feed(big)
    assert d.feed(b"\x03+-") == [rsp.Frame(rsp.Kind.INTERRUPT), rsp.Frame(rsp.Kind.ACK),
                                 rsp.Frame(rsp.Kind.NACK)]


_SESSION = Session(machine_for("basics"))

packet_names = st.sampled_from([b"g", b"G", b"p", b"P", b"m", b"M", b"X", b"Z", b"z", b"H",
                                b"qXfer:features:read:", b"qRcmd,", b"vCont;", b"qSupported",
                                b"?", b"T", b"qAttached", b"vCont?"])


@settings(max_examples=400, deadline=None)
@given(name=packet_names, args=st.binary(max_size=80))
def test_session_answers_any_packet_without_raising(name, args):
    reply = _SESSION.handle(name + args if name not in (b"vCont;",) else b"vCont;x" + args)
    assert reply is None or isinstance(reply, bytes)


@pytest.mark.parametrize("packet, reply", [
    (b"m1000d1,zz", b"E01"),                 # bad hex
    (b"mfff00000,4", b"E02"),                # unmapped (the monitor hole / outside RAM)
    (b"M100000,4:0011", b"E01"),             # length does not match the data
    (b"p999", b"E01"),                       # no such register
    (b"Z9,100000,1", b""),                   # unknown breakpoint type: not supported
    (b"qXfer:features:read:other.xml:0,10", b"E00"),
    (b"bogus", b""),                         # unknown packets get an empty reply
])
def test_malformed_and_out_of_range_requests_get_error_replies(packet, reply):
    assert Session(machine_for("basics")).handle(packet) == reply


def test_qsupported_is_derived_from_the_capabilities():
    features = Session(machine_for("basics")).handle(b"qSupported:swbreak+;hwbreak+").split(b";")
    assert {b"swbreak+", b"hwbreak+", b"qXfer:features:read+", b"QStartNoAckMode+",
            b"vContSupported+"} <= set(features)
    assert any(f.startswith(b"PacketSize=") for f in features)


@pytest.mark.parametrize("path", sorted(TRANSCRIPTS.glob("*.jsonl")), ids=lambda p: p.stem)
def test_recorded_session_replays(path):
    """Each recorded gdb session, replayed packet by packet against a fresh stub on the same
    guest, gets exactly the replies gdb got."""
    guest = path.stem.split("-")[0]
    session = Session(machine_for(guest))
    entries = list(transcript.read(path))
    assert entries, "empty transcript"
    expected: list[bytes] = []
    got: list[bytes] = []
    for direction, packet in entries:
        if direction == "in":
            reply = session.handle(packet)
            got.extend(session.output)
            session.output.clear()
            if reply is not None:
                got.append(reply)
        else:
            expected.append(packet)
    assert got == expected
