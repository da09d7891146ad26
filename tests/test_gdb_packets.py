"""The packet layer against malformed input (hypothesis), and the stub's answers to malformed
and out-of-range requests. (Recorded gdb sessions are replayed in test_gdb_sessions.py.)"""
from __future__ import annotations

import pytest
from guest_build import build
from hypothesis import given, settings
from hypothesis import strategies as st

from dbgvm.core.assembly import build_machine
from dbgvm.core.guest_registers import read_register
from dbgvm.core.loader import load
from dbgvm.core.machine import Machine
from dbgvm.gdbstub import rsp
from dbgvm.gdbstub.session import Session


def machine_for(name: str) -> Machine:
    m = build_machine()
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


@pytest.mark.parametrize("packet", [
    b"m100000000,4",                         # an address over 32 bits is no alias of 0
    b"m100000,-1", b"m-100000,4",            # no signs
    b"m0x100000,4", b"m+100000,4", b"m 100000,4", b"m10_0000,4", b"m,4", b"m100000,",
    b"m100000", b"m100000,4,", b"m100000,2001",  # no separator, trailing, too long a reply
    b"mfffffffe,4",                          # runs past the end of the address space
    b"M100000000,1:00", b"M100000,-1:", b"M100000,1:0g",
    pytest.param(b"M100000,2001:" + b"00" * 0x2001, id="M-too-long"),
    b"X100000000,1:a", b"X100000,-1:", b"X100000,4001:", b"Xffffffff,2:ab",
    b"Z0,1000000d1,1", b"z0,1000000d1,1", b"Z0,100000,-1", b"Z-1,100000,1",
    b"Z2,100000,100000000", b"Z2,100000,-4", b"z2,100000,-4", b"Z2,100000,1001",
    b"Z0,100000,1;X2,ab", b"Z0,100000",
    b"qXfer:features:read:target.xml:-1,10", b"qXfer:features:read:target.xml:0,-10",
    b"qXfer:features:read:target.xml:100000000,10", b"qXfer:features:read:target.xml:0,4001",
    b"qXfer:features:read:target.xml:0", b"qXfer:features",
    b"p-1", b"p 8", b"p-0", b"p100000008", b"p", b"p8,",
    b"P8=00", b"P-0=00000000", b"P100000008=00000000", b"P8=0010100000", b"P8", b"P8=zz",
    b"c100000000", b"s100000000", b"c-1", b"s 100000",
    b"qRcmd,zz", b"qRcmd,123",
])
def test_out_of_range_and_malformed_numbers_are_errors(packet):
    """Every address, length and register number is parsed by its handler's schema and
    range-checked: a bad one is an E reply and changes nothing."""
    m = machine_for("basics")
    session = Session(m)
    regs, eip = session.handle(b"g"), read_register(m, "eip")
    low = m.debug.read_virtual(0, 16)
    assert session.handle(packet).startswith(b"E"), packet
    assert session.handle(b"g") == regs and read_register(m, "eip") == eip
    assert m.debug.read_virtual(0, 16) == low
    assert m.debug.breakpoints == [] and session.handle(b"?") == b"T05thread:01;"


@pytest.mark.parametrize("packet, reply", [
    (b"m100000,4", None), (b"mFFFFF,1", None), (b"m0000000000100000,1", None),
    (b"M100000,2:0102", b"OK"), (b"X100000,1:a", b"OK"), (b"X100000,0:", b"OK"),
    (b"Z0,100000,1", b"OK"), (b"z0,100000,1", b"OK"), (b"Z2,100000,4", b"OK"),
    (b"p8", None), (b"P0=78563412", b"OK"), (b"qRcmd,", b"OK"),
    (b"qXfer:features:read:target.xml:0,10", None),
    (b"qXfer:features:read:target.xml:ffffff,10", b"l"),
])
def test_well_formed_numbers_are_accepted(packet, reply):
    got = Session(machine_for("basics")).handle(packet)
    assert got and not got.startswith(b"E"), (packet, got)
    if reply is not None:
        assert got == reply


def test_qsupported_is_derived_from_the_capabilities():
    features = Session(machine_for("basics")).handle(b"qSupported:swbreak+;hwbreak+").split(b";")
    assert {b"swbreak+", b"hwbreak+", b"qXfer:features:read+", b"QStartNoAckMode+",
            b"vContSupported+"} <= set(features)
    assert any(f.startswith(b"PacketSize=") for f in features)
