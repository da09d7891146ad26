"""One-line summaries of Ethernet frames for `hal` events and traces: Ethernet, ARP, IPv4,
ICMP, UDP; anything else is shown by its EtherType or protocol number. Never raises on a
malformed frame (frames come from guests)."""
from __future__ import annotations

import struct
from dataclasses import dataclass

ETH_HEADER = 14
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
BROADCAST = b"\xff" * 6


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def ip_text(ip: bytes) -> str:
    return ".".join(str(b) for b in ip)


@dataclass(frozen=True)
class Addresses:
    """The source addresses a frame claims (what the switch checks against the sender)."""

    mac: bytes
    ip: bytes | None        # ARP sender or IPv4 source, when the frame has one


def claimed_source(frame: bytes) -> Addresses:
    src = frame[6:12]
    ethertype = struct.unpack_from(">H", frame, 12)[0] if len(frame) >= ETH_HEADER else None
    if ethertype == ETHERTYPE_ARP and len(frame) >= ETH_HEADER + 18:
        return Addresses(src, frame[ETH_HEADER + 14:ETH_HEADER + 18])
    if ethertype == ETHERTYPE_IPV4 and len(frame) >= ETH_HEADER + 20:
        return Addresses(src, frame[ETH_HEADER + 12:ETH_HEADER + 16])
    return Addresses(src, None)


def summary(frame: bytes) -> str:
    if len(frame) < ETH_HEADER:
        return f"runt frame ({len(frame)} bytes)"
    dst, src = mac_text(frame[:6]), mac_text(frame[6:12])
    ethertype = struct.unpack_from(">H", frame, 12)[0]
    body = frame[ETH_HEADER:]
    head = f"{src} > {dst}"
    if ethertype == ETHERTYPE_ARP:
        return f"{head} {_arp(body)}"
    if ethertype == ETHERTYPE_IPV4:
        return f"{head} {_ipv4(body)}"
    return f"{head} ethertype {ethertype:#06x} len {len(body)}"


def _arp(body: bytes) -> str:
    if len(body) < 28:
        return f"ARP truncated ({len(body)} bytes)"
    op = struct.unpack_from(">H", body, 6)[0]
    sha, spa, tpa = body[8:14], body[14:18], body[24:28]
    if op == 1:
        return f"ARP who-has {ip_text(tpa)} tell {ip_text(spa)}"
    if op == 2:
        return f"ARP reply {ip_text(spa)} is-at {mac_text(sha)}"
    return f"ARP op {op}"


def _ipv4(body: bytes) -> str:
    if len(body) < 20 or body[0] >> 4 != 4:
        return f"IPv4 malformed ({len(body)} bytes)"
    ihl = (body[0] & 0xF) * 4
    total = struct.unpack_from(">H", body, 2)[0]
    proto = body[9]
    src, dst = ip_text(body[12:16]), ip_text(body[16:20])
    payload = body[ihl:total] if ihl <= total <= len(body) else body[ihl:]
    if proto == 1 and len(payload) >= 8:
        icmp_type, code = payload[0], payload[1]
        ident, seq = struct.unpack_from(">HH", payload, 4)
        names = {0: "echo reply", 8: "echo request"}
        name = names.get(icmp_type, f"type {icmp_type} code {code}")
        return f"IPv4 {src} > {dst} ICMP {name} id={ident} seq={seq} len={len(payload)}"
    if proto == 17 and len(payload) >= 8:
        sport, dport, length = struct.unpack_from(">HHH", payload)
        return f"IPv4 {src} > {dst} UDP {sport} > {dport} len={length}"
    return f"IPv4 {src} > {dst} proto {proto} len={len(payload)}"
