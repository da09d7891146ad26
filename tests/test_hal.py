"""The host side of the HAL (dbgvm/hal, docs/hal.md): validation of every packet, the block
device's copy-on-write and writable modes, the switch's forging check and demultiplexing,
frame summaries, pcap output (parsed here, and by tshark when installed), and a guest that
misbehaves on purpose next to another VM. Expected values come from docs/hal.md."""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbgvm.core.assembly import build_machine
from dbgvm.core.events import EventKind
from dbgvm.core.hypercalls import HypercallArgs
from dbgvm.hal.abi import MAX_PAYLOAD, Status
from dbgvm.hal.block import BlockDevice, DiskError
from dbgvm.hal.console import ConsoleDevice
from dbgvm.hal.frames import summary
from dbgvm.hal.host import Hal
from dbgvm.hal.net import NetDevice, Switch
from dbgvm.hal.pcap import PcapWriter
from dbgvm.hal.system import SystemDevice
from guest_build import build

ROOT = Path(__file__).resolve().parent.parent
U32 = 0xFFFFFFFF


def _hex(status: Status) -> str:
    return f"{status & U32:08x}"


# -- a guest that misbehaves, next to another VM ----------------------------------------------

def test_bad_packets_get_their_status_are_counted_and_both_vms_keep_running(tmp_path):
    trace = tmp_path / "events.jsonl"
    proc = subprocess.run([sys.executable, "-m", "dbgvm", "run", "--batch", "--vms", "2",
                           "--trace-out", str(trace), str(build("halbad"))],
                          capture_output=True, timeout=120, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    expected = {
        "probe": "4c414844",
        "badaddr": _hex(Status.BADADDR),
        "oversize": f"{_hex(Status.BADLEN)} status={_hex(Status.BADLEN)}",
        "tail": f"{_hex(Status.BADADDR)} status={_hex(Status.BADADDR)}",
        "nochan": f"{_hex(Status.NOCHAN)} status={_hex(Status.NOCHAN)}",
        "noop": f"{_hex(Status.NOOP)} status={_hex(Status.NOOP)}",
        "badcall": _hex(Status.BADCALL),
        "info": "00000000 status=00000000",
        "forgedmac": f"{_hex(Status.FORGED)} status={_hex(Status.FORGED)}",
        "forgedip": f"{_hex(Status.FORGED)} status={_hex(Status.FORGED)}",
        "smallrx": f"{_hex(Status.BADLEN)} status={_hex(Status.BADLEN)}",
        "full": _hex(Status.FULL),
        "post": f"00000000 status={_hex(Status.PENDING)}",
        "send": "00000000 status=00000000",
    }
    for vm, other_mac_byte in ((0, 2), (1, 1)):
        lines = dict(line.split(" ", 2)[1:] for line in out.splitlines()
                     if line.startswith(f"[vm{vm}] "))
        for name, value in expected.items():
            assert lines.get(name) == value, (vm, name, out)
        # the good frame of the *other* VM arrived after all that
        assert lines.get("rx") == f"{other_mac_byte:08x} status=00000000", (vm, out)
    err = proc.stderr.decode()
    assert "vm1: poweroff" in err            # VM 1 finished on its own, VM 0 went on
    for vm in (0, 1):
        assert (f"vm{vm}: 9 bad HAL packets refused (BADADDR 2, BADCALL 1, BADLEN 2, FORGED 2, "
                f"FULL 1, NOOP 1), 2 forged frames dropped") in err
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    hal = [e for e in events if e["kind"] == "hal"]
    for vm in (0, 1):
        statuses = [e["status"] for e in hal if e["vm"] == vm and e["call"] != "rx"]
        assert statuses[:12] == ["OK", "BADADDR", "BADLEN", "BADADDR", "NOCHAN", "NOOP",
                                 "BADCALL", "OK", "FORGED", "FORGED", "BADLEN", "OK"]
    forged = [e for e in hal if e["status"] == "FORGED"]
    assert all(e["channel"] == "net" and e["op"] == "SEND" for e in forged)
    assert "ARP who-has 10.0.2.200 tell 10.0.2.99" in forged[1]["info"]


# -- the packet validator, fuzzed --------------------------------------------------------------

class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.powered_off: list[int] = []

    def write(self, data: bytes) -> None:
        self.data += data


@pytest.fixture(scope="module")
def hal_machine():
    machine = build_machine(ram_mb=2)
    sink = _Sink()
    switch = Switch()
    posted: list[bytes] = []
    net = NetDevice(0, switch, posted.append, lambda: 0)
    hal = Hal(machine, [SystemDevice(lambda status, message: sink.powered_off.append(status)),
                        ConsoleDevice(sink.write), net])
    return machine, hal, sink


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(function=st.integers(0, U32), addr=st.one_of(st.integers(0, 0x200100),
                                                    st.integers(0, U32)),
       header=st.binary(min_size=16, max_size=16), payload=st.binary(max_size=64))
def test_any_hypercall_returns_a_documented_status_and_never_raises(hal_machine, function,
                                                                    addr, header, payload):
    machine, hal, sink = hal_machine
    if addr + 16 + len(payload) <= machine.ram_size:
        machine.write_physical(addr, header + payload)
    before = bytes(machine.ram)
    result = hal.handle(HypercallArgs(function, addr, 0, 0))
    status = result.eax - (1 << 32) if result.eax & 0x80000000 else result.eax
    assert status in {int(s) for s in Status}
    # nothing outside the packet was touched
    after = bytes(machine.ram)
    end = addr + 16 + MAX_PAYLOAD
    assert after[:addr] == before[:addr] and after[end:] == before[end:]


def test_validation_order_and_status_field(hal_machine):
    machine, hal, sink = hal_machine
    base = 0x1000

    def submit(channel: int, op: int, length: int, payload: bytes = b"") -> tuple[int, int]:
        machine.write_physical(base, struct.pack("<HHIIi", channel, op, length, 7, 0x55) +
                               payload)
        eax = hal.handle(HypercallArgs(1, base, 0, 0)).eax
        field = struct.unpack_from("<i", machine.ram, base + 12)[0]
        return struct.unpack("<i", struct.pack("<I", eax))[0], field

    assert submit(1, 1, 5, b"hello") == (Status.OK, Status.OK)
    assert bytes(sink.data).endswith(b"hello")
    assert submit(1, 1, MAX_PAYLOAD + 1) == (Status.BADLEN, Status.BADLEN)
    assert submit(9, 1, MAX_PAYLOAD + 1) == (Status.BADLEN, Status.BADLEN)   # length first
    assert submit(9, 1, 0) == (Status.NOCHAN, Status.NOCHAN)
    assert submit(1, 2, 0) == (Status.NOOP, Status.NOOP)     # INPUT is host-to-guest only
    assert submit(0, 1, 2) == (Status.BADLEN, Status.BADLEN)   # POWEROFF needs 4 bytes
    assert sink.powered_off == []
    assert submit(0, 1, 4, struct.pack("<I", 3)) == (Status.OK, Status.OK)
    assert sink.powered_off == [3]
    # a payload that runs off the end of RAM
    machine.write_physical(machine.ram_size - 16, struct.pack("<HHIIi", 1, 1, 1, 0, 0))
    assert hal.handle(HypercallArgs(1, machine.ram_size - 16, 0, 0)).eax == Status.BADADDR & U32
    # the seq field is the guest's and stays untouched
    submit(1, 1, 1, b"x")
    assert struct.unpack_from("<I", machine.ram, base + 8)[0] == 7


def test_console_input_fills_posted_buffers_in_order_up_to_their_capacity():
    machine = build_machine(ram_mb=2)
    console = ConsoleDevice(lambda data: None)
    hal = Hal(machine, [console])
    irqs = []
    machine.pic.raise_irq = irqs.append              # observe the HAL interrupt line
    for addr in (0x2000, 0x3000):
        machine.write_physical(addr, struct.pack("<HHIIi", 1, 0, 4, 0, 0))
        assert hal.handle(HypercallArgs(2, addr, 0, 0)).eax == Status.OK
        assert struct.unpack_from("<i", machine.ram, addr + 12)[0] == Status.PENDING
    console.feed(b"abcdefgh!")
    console.feed(b"")
    first = struct.unpack_from("<HHIIi", machine.ram, 0x2000)
    second = struct.unpack_from("<HHIIi", machine.ram, 0x3000)
    assert first == (1, 2, 4, 1, 0) and bytes(machine.ram[0x2010:0x2014]) == b"abcd"
    assert second == (1, 2, 4, 2, 0) and bytes(machine.ram[0x3010:0x3014]) == b"efgh"
    assert irqs == [5, 5]
    assert console.waiting_input == 1                 # "!" waits for the next buffer
    machine.write_physical(0x2000, struct.pack("<HHIIi", 1, 0, 4, 0, 0))
    hal.handle(HypercallArgs(2, 0x2000, 0, 0))
    assert struct.unpack_from("<HHIIi", machine.ram, 0x2000) == (1, 2, 1, 3, 0)
    machine.write_physical(0x2000, struct.pack("<HHIIi", 1, 0, 4, 0, 0))
    hal.handle(HypercallArgs(2, 0x2000, 0, 0))
    assert struct.unpack_from("<HHIIi", machine.ram, 0x2000) == (1, 3, 0, 4, 0)   # EOF


# -- block device ------------------------------------------------------------------------------

def _image(tmp_path: Path, sectors: int = 4) -> tuple[Path, bytes]:
    path = tmp_path / "disk.img"
    content = bytes((i * 7) & 0xFF for i in range(512 * sectors))
    path.write_bytes(content)
    return path, content


def _request(sector: int, count: int, data: bytes = b"") -> bytes:
    return struct.pack("<II", sector, count) + (data or bytes(512 * count))


@pytest.mark.parametrize("writable", [False, True])
def test_block_writes_reach_the_file_only_when_writable(tmp_path, writable):
    path, content = _image(tmp_path)
    disk = BlockDevice(str(path), writable)
    info = disk.submit(1, bytes(12))
    assert info.status is Status.OK
    assert struct.unpack("<III", info.payload) == (4, 512, int(writable))
    new = b"N" * 1024
    assert disk.submit(3, _request(1, 2, new)).status is Status.OK
    read = disk.submit(2, _request(0, 4))
    assert read.payload[8:] == content[:512] + new + content[1536:]
    assert disk.submit(4, b"").status is Status.OK
    disk.close()
    expected = content[:512] + new + content[1536:] if writable else content
    assert path.read_bytes() == expected


def test_block_refuses_out_of_range_and_bad_counts(tmp_path):
    path, _ = _image(tmp_path)
    disk = BlockDevice(str(path))
    assert disk.submit(2, _request(3, 2)).status is Status.IOERR
    assert disk.submit(2, _request(4, 1)).status is Status.IOERR
    assert disk.submit(2, _request(0, 0)).status is Status.BADLEN
    assert disk.submit(2, struct.pack("<II", 0, 2) + bytes(512)).status is Status.BADLEN
    assert disk.submit(2, _request(0xFFFFFFFF, 1)).status is Status.IOERR
    disk.close()


def _rss() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) << 10 for line in status if line.startswith("VmRSS:"))


def test_copy_on_write_keeps_written_sectors_out_of_host_memory(tmp_path):
    # a guest writing every sector of a large image: the overlay is a file, not host memory
    size = 128 << 20
    path = tmp_path / "big.img"
    with open(path, "wb") as image:
        image.truncate(size)                        # sparse: no disk space for the test
        image.seek(size - 512)
        image.write(b"last sector".ljust(512, b"."))
    before_mtime = path.stat().st_mtime_ns
    disk = BlockDevice(str(path))
    rss = _rss()
    count = 127
    for sector in range(0, size // 512, count):
        n = min(count, size // 512 - sector)
        data = struct.pack("<I", sector) * (128 * n)
        assert disk.submit(3, _request(sector, n, data)).status is Status.OK
    grown = _rss() - rss
    assert grown < 48 << 20, f"RSS grew by {grown >> 20} MiB writing {size >> 20} MiB"
    # what stays in memory is the index: 4 bytes a sector, no sector data
    index = sum(len(chunk) * chunk.itemsize for chunk in disk._overlay.chunks.values())
    assert index <= 4 * (size // 512) and len(disk._overlay) == size // 512
    for sector in (0, 1, 126, 127, 4095, 4096, 200_000, size // 512 - 1):
        read = disk.submit(2, _request(sector, 1))
        first = sector - sector % count
        assert read.payload[8:] == struct.pack("<I", first) * 128, sector
    disk.close()
    # the image never changed (copy-on-write)
    assert path.stat().st_mtime_ns == before_mtime
    with open(path, "rb") as image:
        assert image.read(512) == bytes(512)
        image.seek(size - 512)
        assert image.read(512) == b"last sector".ljust(512, b".")


def test_copy_on_write_state_goes_back_with_snapshots(tmp_path):
    # the device's saved state is part of every snapshot (domains.py), restored in place
    path, content = _image(tmp_path, sectors=3 * 4096)
    disk = BlockDevice(str(path))

    def write(sector: int, fill: bytes) -> None:
        assert disk.submit(3, _request(sector, 2, fill * 1024)).status is Status.OK

    def read(sector: int) -> bytes:
        return disk.submit(2, _request(sector, 2)).payload[8:]
    original = content[4095 * 512:4097 * 512]
    snapshots = [disk.save()]                            # nothing written
    write(4095, b"A")                                       # across two index chunks
    snapshots.append(disk.save())
    write(4095, b"B")
    write(10, b"b")
    snapshots.append(disk.save())
    write(4095, b"C")
    assert read(4095) == b"C" * 1024
    for index, expected in [(1, b"A" * 1024), (0, original), (2, b"B" * 1024),
                            (1, b"A" * 1024)]:
        disk.restore(snapshots[index])
        assert read(4095) == expected, index
    # after going back, new writes leave the later snapshots as they were
    disk.restore(snapshots[1])
    write(4095, b"D")
    write(10, b"d")
    assert read(4095) == b"D" * 1024 and read(10) == b"d" * 1024
    disk.restore(snapshots[2])
    assert read(4095) == b"B" * 1024 and read(10) == b"b" * 1024
    disk.restore(snapshots[0])
    assert read(4095) == original and read(10) == content[10 * 512:12 * 512]
    disk.close()
    assert path.read_bytes() == content


def test_disk_images_that_cannot_work_are_one_line_errors(tmp_path):
    odd = tmp_path / "odd.img"
    odd.write_bytes(bytes(100))
    with pytest.raises(DiskError, match="not a positive multiple of 512"):
        BlockDevice(str(odd))
    with pytest.raises(DiskError, match="cannot open"):
        BlockDevice(str(tmp_path / "missing.img"))


# -- switch and frames --------------------------------------------------------------------------

def _eth(dst: bytes, src: bytes, ethertype: int, body: bytes) -> bytes:
    return dst + src + struct.pack(">H", ethertype) + body


def _ipv4_icmp(src_ip: bytes, dst_ip: bytes, icmp_type: int, seq: int) -> bytes:
    icmp = bytes([icmp_type, 0, 0, 0]) + struct.pack(">HH", 0x1234, seq) + b"data"
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0, src_ip,
                         dst_ip)
    return header + icmp


def _arp(op: int, sha: bytes, spa: bytes, tpa: bytes) -> bytes:
    return struct.pack(">HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sha, spa, bytes(6), tpa)


def test_switch_demultiplexes_by_mac_broadcasts_to_others_and_drops_forgeries(tmp_path):
    switch = Switch(PcapWriter(open(tmp_path / "s.pcap", "wb")))
    inboxes: list[list[bytes]] = [[], [], []]
    ports = [NetDevice(i, switch, lambda frame, t, box=inboxes[i]: box.append(frame),
                       lambda: 1_500_000) for i in range(3)]
    mac = [p.mac for p in ports]
    assert mac[1] == bytes.fromhex("525400123402") and ports[2].ip == bytes([10, 0, 2, 17])
    unicast = _eth(mac[2], mac[0], 0x0800, _ipv4_icmp(ports[0].ip, ports[2].ip, 8, 1))
    assert switch.transmit(ports[0], unicast, 0) is Status.OK
    broadcast = _eth(b"\xff" * 6, mac[1], 0x0806, _arp(1, mac[1], ports[1].ip, ports[0].ip))
    assert switch.transmit(ports[1], broadcast, 0) is Status.OK
    forged_mac = _eth(mac[2], mac[1], 0x0800, _ipv4_icmp(ports[0].ip, ports[2].ip, 8, 2))
    assert switch.transmit(ports[0], forged_mac, 0) is Status.FORGED
    forged_ip = _eth(mac[2], mac[0], 0x0800, _ipv4_icmp(ports[1].ip, ports[2].ip, 8, 3))
    assert switch.transmit(ports[0], forged_ip, 0) is Status.FORGED
    nobody = _eth(bytes.fromhex("525400123409"), mac[0], 0x0800,
                  _ipv4_icmp(ports[0].ip, bytes([10, 0, 2, 23]), 8, 4))
    assert switch.transmit(ports[0], nobody, 0) is Status.OK     # forwarded, to no port
    assert inboxes == [[broadcast], [], [unicast, broadcast]]
    assert switch.forged[0] == 2 and switch.forwarded == 3 and switch.unknown_destination == 1
    switch.pcap.close()


def test_frame_summaries():
    a, b = bytes.fromhex("525400123401"), bytes.fromhex("525400123402")
    ip_a, ip_b = bytes([10, 0, 2, 15]), bytes([10, 0, 2, 16])
    assert summary(_eth(b"\xff" * 6, a, 0x0806, _arp(1, a, ip_a, ip_b))) == \
        "52:54:00:12:34:01 > ff:ff:ff:ff:ff:ff ARP who-has 10.0.2.16 tell 10.0.2.15"
    assert summary(_eth(a, b, 0x0806, _arp(2, b, ip_b, ip_a))) == \
        "52:54:00:12:34:02 > 52:54:00:12:34:01 ARP reply 10.0.2.16 is-at 52:54:00:12:34:02"
    assert summary(_eth(b, a, 0x0800, _ipv4_icmp(ip_a, ip_b, 8, 3))) == \
        ("52:54:00:12:34:01 > 52:54:00:12:34:02 IPv4 10.0.2.15 > 10.0.2.16 ICMP echo request "
         "id=4660 seq=3 len=12")
    udp = struct.pack(">HHHH", 68, 67, 8, 0)
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, ip_a, ip_b)
    assert summary(_eth(b, a, 0x0800, header + udp)).endswith("UDP 68 > 67 len=8")
    assert summary(b"\x01\x02") == "runt frame (2 bytes)"
    assert "ethertype 0x88b5" in summary(_eth(b, a, 0x88B5, b"x"))
    assert "malformed" in summary(_eth(b, a, 0x0800, b"\x45"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_frame_summaries_never_raise_on_garbage(frame):
    assert isinstance(summary(frame), str)


# -- pcap and tshark --------------------------------------------------------------------------

TSHARK = shutil.which("tshark")


def _two_vm_pcap(tmp_path: Path) -> Path:
    pcap = tmp_path / "ping.pcap"
    proc = subprocess.run([sys.executable, "-m", "dbgvm", "run", "--batch", "--vms", "2",
                           "--pcap", str(pcap)], input=b"ping 10.0.2.16\n", cwd=ROOT,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert b"3 transmitted, 3 received" in proc.stdout
    return pcap


def _pcap_records(data: bytes) -> list[tuple[int, bytes]]:
    """(timestamp in microseconds, frame) of each record of a classic pcap file."""
    records, pos = [], 24
    while pos < len(data):
        seconds, micros, length, _ = struct.unpack_from("<IIII", data, pos)
        records.append((seconds * 1_000_000 + micros, data[pos + 16:pos + 16 + length]))
        pos += 16 + length
    return records


def test_pcap_is_in_time_order_and_replies_follow_their_requests(tmp_path):
    """The VMs run one after another through each slice: frames were written in sending
    order with the sender's clock (VM 1's reply stamped before VM 0's request, which it
    received before its own clock got there; capinfos: "Strict time order: False")."""
    pcap = _two_vm_pcap(tmp_path)
    records = _pcap_records(pcap.read_bytes())
    times = [t for t, _ in records]
    assert times == sorted(times), times
    requests, replies = {}, {}
    for t, frame in records:
        if frame[12:14] == b"\x08\x00" and frame[23] == 1:          # IPv4 ICMP
            icmp = frame[14 + (frame[14] & 0xF) * 4:]
            seq = struct.unpack(">H", icmp[6:8])[0]
            (requests if icmp[0] == 8 else replies)[seq] = t
    assert len(requests) == 3 and requests.keys() == replies.keys()
    assert all(replies[seq] > requests[seq] for seq in requests), (requests, replies)
    capinfos = shutil.which("capinfos")
    if capinfos is not None:
        proc = subprocess.run([capinfos, str(pcap)], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "HOME": str(tmp_path)})
        assert re.search(r"Strict time order:\s+True", proc.stdout), proc.stdout


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (.ci/run installs it)")
def test_tshark_reads_the_arp_and_icmp_exchange(tmp_path):
    pcap = _two_vm_pcap(tmp_path)
    proc = subprocess.run([TSHARK, "-r", str(pcap), "-T", "fields", "-e", "eth.src",
                           "-e", "arp.opcode", "-e", "icmp.type"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert ["52:54:00:12:34:01", "1", ""] in rows          # ARP request from VM 0
    assert ["52:54:00:12:34:02", "2", ""] in rows          # ARP reply from VM 1
    assert sum(r[2] == "8" for r in rows) == 3 and sum(r[2] == "0" for r in rows) == 3
