"""Channel 3: a virtual network interface, and the in-process switch all VMs hang off.

As in early Xen's virtual network, each interface has a fixed MAC and IPv4 address, the switch
refuses (and counts) frames whose claimed source is not the sender's, and demultiplexes the
rest by destination MAC. A frame reaches another VM as an *external input* of that VM (queued,
applied at its next quantum boundary), so every VM stays deterministic given its inputs."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .abi import Channel, NetOp, Status
from .device import Deliver, Reply
from .frames import BROADCAST, claimed_source, ip_text, mac_text, summary
from .pcap import PcapWriter

MIN_FRAME = 14
MAX_FRAME = 1514
NETMASK = bytes([255, 255, 255, 0])


def mac_of(index: int) -> bytes:
    return bytes([0x52, 0x54, 0x00, 0x12, 0x34, index + 1])


def ip_of(index: int) -> bytes:
    return bytes([10, 0, 2, 15 + index])


@dataclass(frozen=True)
class NetState:
    dropped: tuple[tuple[str, int], ...]     # frames no posted buffer took, by reason


class NetDevice:
    channel = Channel.NET
    ops = NetOp
    rx_capacity = MAX_FRAME
    # its place on the switch and the wiring: fixed when the VM is built (the switch's
    # counters are every VM's, not one VM's state)
    NOT_SAVED = frozenset({"index", "mac", "ip", "switch", "post_input", "now_ns", "deliver"})

    def __init__(self, index: int, switch: Switch, post_input: Callable[[bytes, int], None],
                 now_ns: Callable[[], int]) -> None:
        self.index = index
        self.mac = mac_of(index)
        self.ip = ip_of(index)
        self._switch = switch
        self._post_input = post_input      # hands a frame (and its send time) towards this
                                           # VM's input queue
        self._now_ns = now_ns
        self._deliver: Deliver | None = None
        self.dropped = Counter[str]()
        switch.attach(self)

    def save(self) -> NetState:
        return NetState(tuple(sorted(self.dropped.items())))

    def restore(self, state: NetState) -> None:
        self.dropped = Counter(dict(state.dropped))

    def min_length(self, op: int) -> int:
        return {NetOp.INFO: 16, NetOp.SEND: MIN_FRAME, NetOp.FRAME: 0}[NetOp(op)]

    def submit(self, op: int, payload: bytes) -> Reply:
        op = NetOp(op)
        if op is NetOp.INFO:
            return Reply(Status.OK, self.mac + b"\0\0" + self.ip + NETMASK,
                         info="info " + summary_of_interface(self.mac, self.ip))
        if op is NetOp.FRAME:
            return Reply(Status.NOOP, info="FRAME is host-to-guest only")
        if len(payload) > MAX_FRAME:
            return Reply(Status.BADLEN, info=f"frame of {len(payload)} bytes > {MAX_FRAME}")
        status = self._switch.transmit(self, payload, self._now_ns())
        return Reply(status, info=summary(payload))

    def describe(self, op: int, payload: bytes) -> str:
        return summary(payload)

    def attach(self, deliver: Deliver) -> None:
        self._deliver = deliver

    def rx_posted(self) -> None:
        pass

    # -- from the switch -----------------------------------------------------------------
    def arrive(self, frame: bytes, time_ns: int) -> None:
        """Called by the switch: the frame, sent at the sender's virtual ``time_ns``, becomes
        an external input of this VM (dbgvm/domains.py: not before this VM's own clock reaches
        that time)."""
        self._post_input(frame, time_ns)

    def receive(self, frame: bytes) -> None:
        """The input queue's consumer: into a posted buffer, or dropped like a NIC without
        free descriptors."""
        assert self._deliver is not None
        if self._deliver(Channel.NET, NetOp.FRAME, frame) is None:
            self.dropped["no-rx-buffer"] += 1


def summary_of_interface(mac: bytes, ip: bytes) -> str:
    return f"{mac_text(mac)} {ip_text(ip)}"


class Switch:
    def __init__(self, pcap: PcapWriter | None = None, forward: bool = True) -> None:
        self.ports: list[NetDevice] = []
        self.pcap = pcap
        self.forward = forward        # off in a replay: the receivers replay recorded frames
        self.forwarded = 0
        self.forged = Counter[int]()          # by sending VM
        self.unknown_destination = 0          # unicast frames no port's MAC matched

    def attach(self, port: NetDevice) -> None:
        self.ports.append(port)

    def transmit(self, sender: NetDevice, frame: bytes, time_ns: int) -> Status:
        claimed = claimed_source(frame)
        if claimed.mac != sender.mac or (claimed.ip is not None and claimed.ip != sender.ip):
            self.forged[sender.index] += 1
            return Status.FORGED
        self.forwarded += 1
        if not self.forward:
            return Status.OK
        if self.pcap is not None:
            self.pcap.write(time_ns, frame)
        destination = frame[:6]
        if destination == BROADCAST or destination[0] & 1:
            for port in self.ports:
                if port is not sender:
                    port.arrive(frame, time_ns)
            return Status.OK
        for port in self.ports:
            if port.mac == destination:
                port.arrive(frame, time_ns)
                break
        else:
            self.unknown_destination += 1
        return Status.OK
