"""hal_net: two Debian Linux VMs (`dbgvm run --vms 2`) on dbgvm's switch, driven through
their serial consoles.

One run serves every test (a two-VM boot is the most expensive thing here): VM 0 pings VM 1,
the switch's pcap is read back with tshark, then VM 0 takes a MAC that is not its port's
and pings again, which the switch must refuse. The expected addresses come from docs/hal.md
(VM i: MAC 52:54:00:12:34:(i+1), IPv4 10.0.2.(i+15)/24), the counts from what the guests and
tshark report.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from linux_fixtures import RTC_BASE, ConsolePipe

REPO = Path(__file__).resolve().parent.parent
APPEND = "console=ttyS0 cryptomgr.notests"
VM0_IP, VM1_IP = "10.0.2.15", "10.0.2.16"
VM0_MAC, VM1_MAC = "52:54:00:12:34:01", "52:54:00:12:34:02"
FORGED_MAC = "52:54:00:12:34:99"
DEADLINE = 1200                      # seconds for the whole run on a busy 2-core machine
REPLY = re.compile(rf"64 bytes from {re.escape(VM1_IP)}: seq=(\d+) ttl=64 time=([\d.]+) ms")
FORGED_LINE = re.compile(rb"dbgvm: vm0: \d+ bad HAL packets refused.*, (\d+) forged frames "
                         rb"dropped")


class TwoVMConsole(ConsolePipe):
    """The console of a `dbgvm run --vms 2 --batch` subprocess: lines prefixed [vmK]; a line
    typed with the prefix `@K ` goes to VM K. A partial line (a prompt) is only shown with
    the line it ends, so each command is followed by an echo of a marker with its status."""

    def __init__(self, proc: subprocess.Popen, deadline: float) -> None:
        super().__init__(proc, deadline)
        self.commands = 0

    def type(self, vm: int, line: str) -> None:
        prefix = f"@{vm} " if vm else ""
        self.proc.stdin.write(f"{prefix}{line}\n".encode())
        self.proc.stdin.flush()

    def command(self, vm: int, line: str) -> tuple[str, int]:
        """What ``line`` printed on VM ``vm`` (its lines, the echo of the typed line
        excluded) and its exit status."""
        self.commands += 1
        start = len(self.output)
        # the marker's echo shows the quotes, its output does not
        self.type(vm, f'{line}; echo "::end $?" "{self.commands}"')
        end = self.wait_for(re.compile(rb"\[vm%d\] ::end (\d+) %d\r?\n" % (vm, self.commands)),
                            start)
        prefix = b"[vm%d] " % vm
        lines = [raw.removeprefix(prefix).rstrip(b"\r").decode("utf-8", "replace")
                 for raw in self.output[start:end.start()].split(b"\n")
                 if raw.startswith(prefix) and b"::end" not in raw]
        return "\n".join(lines), int(end.group(1))


@dataclass(frozen=True)
class NetRun:
    addr0: str                 # `ip addr show eth0` on VM 0
    addr1: str                 # ... and on VM 1
    ping: str                  # VM 0's `ping -c 3` of VM 1
    ping_status: int
    ping_wall: float           # seconds the ping command took on the host
    forged_ping: str           # the same after VM 0 changed its MAC
    forged_ping_status: int
    link_after: str            # `ip link show eth0` on VM 0 after the change
    tx_dropped: int            # VM 0's eth0 counter after the refused pings
    status: int
    stderr: str
    pcap: Path


@pytest.fixture(scope="module")
def net_run(linux_kernel, tmp_path_factory) -> NetRun:
    tmp = tmp_path_factory.mktemp("net")
    pcap, stderr = tmp / "switch.pcap", tmp / "stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "dbgvm", "run", str(linux_kernel.kernel),
                                 "--initrd", str(linux_kernel.initrd), "--append", APPEND,
                                 "--vms", "2", "--batch", "--rtc-base", str(RTC_BASE),
                                 "--pcap", str(pcap)],
                                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        try:
            console = TwoVMConsole(proc, time.monotonic() + DEADLINE)
            # the init hook's line on both VMs, then each shell's banner
            for vm in (0, 1):
                console.wait_for(re.compile(rb"\[vm%d\] Enter 'help'" % vm), 0)
            addr0, _ = console.command(0, "ip addr show eth0")
            addr1, _ = console.command(1, "ip addr show eth0")
            began = time.monotonic()
            ping, ping_status = console.command(0, f"ping -c 3 {VM1_IP}")
            ping_wall = time.monotonic() - began
            console.command(0, f"ip link set eth0 address {FORGED_MAC}")
            forged_ping, forged_status = console.command(0, f"ping -c 2 -W 2 {VM1_IP}")
            link_after, _ = console.command(0, "ip link show eth0")
            dropped, _ = console.command(0, "cat /sys/class/net/eth0/statistics/tx_dropped")
            console.type(0, "poweroff")
            status = console.finish()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return NetRun(addr0, addr1, ping, ping_status, ping_wall, forged_ping, forged_status,
                  link_after, int(dropped.strip().splitlines()[-1]), status,
                  stderr.read_text(), pcap)


def test_the_init_hook_gives_each_vm_its_port_address(net_run):
    assert f"link/ether {VM0_MAC}" in net_run.addr0
    assert f"inet {VM0_IP}/24" in net_run.addr0
    assert f"link/ether {VM1_MAC}" in net_run.addr1
    assert f"inet {VM1_IP}/24" in net_run.addr1
    assert "UP" in net_run.addr0.splitlines()[0].split()[2]


def test_vm0_pings_vm1(net_run):
    replies = REPLY.findall(net_run.ping)
    assert [int(seq) for seq, _ in replies] == [0, 1, 2], net_run.ping
    assert "3 packets transmitted, 3 packets received, 0% packet loss" in net_run.ping
    assert net_run.ping_status == 0
    # the round trips, in the guests' virtual time and on the host (reported, not judged)
    times = ", ".join(f"{float(ms):.3f}" for _, ms in replies)
    print(f"\nping {VM0_IP} -> {VM1_IP}: {times} ms virtual; the command took "
          f"{net_run.ping_wall:.1f} s of wall time")


def _tshark(pcap: Path, *fields: str, where: str = "") -> list[list[str]]:
    tshark = shutil.which("tshark")
    assert tshark is not None, "tshark is missing (scripts/debian-packages lists it)"
    args = [tshark, "-r", str(pcap), "-T", "fields", *sum((["-e", f] for f in fields), [])]
    if where:
        args += ["-Y", where]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [line.split("\t") for line in proc.stdout.splitlines()]


def test_the_pcap_shows_the_echo_exchange(net_run):
    rows = _tshark(net_run.pcap, "eth.src", "ip.src", "ip.dst", "icmp.type", "icmp.seq",
                   where="icmp")
    requests = [r for r in rows if r[:4] == [VM0_MAC, VM0_IP, VM1_IP, "8"]]
    replies = [r for r in rows if r[:4] == [VM1_MAC, VM1_IP, VM0_IP, "0"]]
    assert [r[4] for r in requests] == ["0", "1", "2"], rows
    assert [r[4] for r in replies] == ["0", "1", "2"], rows
    # and the ARP exchange before them
    arp = _tshark(net_run.pcap, "eth.src", "arp.opcode", "arp.src.proto_ipv4",
                  "arp.dst.proto_ipv4", where="arp")
    assert [VM0_MAC, "1", VM0_IP, VM1_IP] in arp, arp
    assert [VM1_MAC, "2", VM1_IP, VM0_IP] in arp, arp


def test_a_forged_mac_is_dropped_by_the_switch(net_run):
    assert f"link/ether {FORGED_MAC}" in net_run.link_after
    assert "2 packets transmitted, 0 packets received, 100% packet loss" in \
        net_run.forged_ping, net_run.forged_ping
    assert net_run.forged_ping_status == 1
    # the guest saw its frames refused (hal_net counts FORGED as tx_dropped) ...
    assert net_run.tx_dropped >= 2
    # ... the host counted them ...
    found = FORGED_LINE.search(net_run.stderr.encode())
    assert found is not None and int(found.group(1)) >= 2, net_run.stderr
    # ... and none of them reached the wire
    assert _tshark(net_run.pcap, "frame.number", where=f"eth.src == {FORGED_MAC}") == []


def test_the_run_ends_with_vm0s_poweroff(net_run):
    assert net_run.status == 0, net_run.stderr
