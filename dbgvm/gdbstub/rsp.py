"""GDB remote serial protocol framing: ``$payload#cs`` packets, acks, escapes, Ctrl-C.

The decoder never raises on malformed input: bytes outside a packet are dropped, a bad
checksum or an oversize packet becomes an event the session answers, and a packet is only
ever handed on whole.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

MAX_PACKET = 0x4000          # what we advertise as PacketSize; longer packets are refused
INTERRUPT = 0x03


class Kind(enum.Enum):
    PACKET = "packet"
    INTERRUPT = "interrupt"
    ACK = "ack"
    NACK = "nack"
    BAD_CHECKSUM = "bad-checksum"
    OVERSIZE = "oversize"


@dataclass(frozen=True)
class Frame:
    kind: Kind
    payload: bytes = b""


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def escape(payload: bytes) -> bytes:
    out = bytearray()
    for byte in payload:
        if byte in b"$#}*":
            out += bytes((0x7D, byte ^ 0x20))
        else:
            out.append(byte)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    out = bytearray()
    it = iter(data)
    for byte in it:
        if byte == 0x7D:
            nxt = next(it, None)
            if nxt is not None:
                out.append(nxt ^ 0x20)
        else:
            out.append(byte)
    return bytes(out)


def encode(payload: bytes) -> bytes:
    body = escape(payload)
    return b"$" + body + b"#" + f"{checksum(body):02x}".encode()


class Decoder:
    """Feed bytes in, get frames out."""

    def __init__(self) -> None:
        self._body = bytearray()
        self._sum = bytearray()
        self._state = "idle"          # idle -> body ('$' seen) -> checksum ('#' seen)

    def feed(self, data: bytes) -> list[Frame]:
        frames = []
        for byte in data:
            if self._state == "idle":
                if byte == ord("$"):
                    self._state = "body"
                    self._body.clear()
                elif byte == INTERRUPT:
                    frames.append(Frame(Kind.INTERRUPT))
                elif byte == ord("+"):
                    frames.append(Frame(Kind.ACK))
                elif byte == ord("-"):
                    frames.append(Frame(Kind.NACK))
            elif self._state == "body":
                if byte == ord("#"):
                    self._state = "checksum"
                    self._sum.clear()
                elif byte == ord("$"):
                    self._body.clear()            # a new packet restarts framing
                elif len(self._body) > MAX_PACKET:
                    self._state = "idle"
                    frames.append(Frame(Kind.OVERSIZE))
                else:
                    self._body.append(byte)
            else:
                self._sum.append(byte)
                if len(self._sum) == 2:
                    self._state = "idle"
                    frames.append(self._finish(bytes(self._body), bytes(self._sum)))
        return frames

    @staticmethod
    def _finish(body: bytes, sent: bytes) -> Frame:
        try:
            ok = int(sent, 16) == checksum(body)
        except ValueError:
            ok = False
        if not ok:
            return Frame(Kind.BAD_CHECKSUM)
        return Frame(Kind.PACKET, unescape(body))
