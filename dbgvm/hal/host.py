"""The host side of the HAL for one VM: the hypercall handler, packet validation, posted
receive buffers, counters and `hal` events (docs/hal.md is the contract).

Everything the guest hands over is checked before it is used: the header and payload lie in
guest RAM, lengths are bounded, channel and op exist. A bad packet gets an error status, is
counted, and shows as an event; nothing here raises because of guest data, and nothing but
guest RAM is ever read or written on the guest's behalf.
"""
from __future__ import annotations

import struct
from collections import Counter, deque
from dataclasses import dataclass, field

from ..core.events import EventKind
from ..core.hypercalls import HypercallArgs, HypercallResult
from ..core.machine import Machine
from .abi import (HEADER_SIZE, IRQ_LINE, MAGIC, MAX_PAYLOAD, MAX_POSTED, STATUS_OFFSET,
                  VERSION, Channel, Function, Header, Status, channel_name)
from .device import Device, Reply


Counts = tuple[tuple[str, int], ...]      # a Counter as a snapshot keeps it, sorted


def _counts(counter: Counter[str]) -> Counts:
    return tuple(sorted(counter.items()))


@dataclass(frozen=True)
class HalStatsState:
    """The counters as a snapshot keeps them (the same fields)."""

    calls: Counts
    packets: Counts
    refused: Counts
    received: Counts
    dropped: Counts


@dataclass
class HalStats:
    calls: Counter[str] = field(default_factory=Counter)        # by function name
    packets: Counter[str] = field(default_factory=Counter)      # by channel name
    refused: Counter[str] = field(default_factory=Counter)      # by status name
    received: Counter[str] = field(default_factory=Counter)     # rx buffers filled, by channel
    dropped: Counter[str] = field(default_factory=Counter)      # device-level drops, by reason

    def save(self) -> HalStatsState:
        return HalStatsState(**{name: _counts(counter) for name, counter in vars(self).items()})

    @classmethod
    def restored(cls, state: HalStatsState) -> HalStats:
        return cls(**{name: Counter(dict(counts)) for name, counts in vars(state).items()})

    def describe(self) -> str:
        def line(title: str, counter: Counter[str]) -> str:
            items = ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"
            return f"{title:<10} {items}"
        return "\n".join([line("calls", self.calls), line("packets", self.packets),
                          line("received", self.received), line("refused", self.refused),
                          line("dropped", self.dropped)])


@dataclass(frozen=True)
class HalState:
    """What goes back in time with the machine: the counters (``hal stats``), the buffers the
    guest posted, by channel, and each channel's last receive sequence number."""

    stats: HalStatsState
    posted: tuple[tuple[int, tuple[int, ...]], ...]
    rx_seq: tuple[tuple[int, int], ...]


class Hal:
    NOT_SAVED = frozenset({"machine", "devices", "ops"})  # wiring; each device saves its own

    def __init__(self, machine: Machine, devices: list[Device]) -> None:
        self.machine = machine
        self.devices: dict[int, Device] = {int(d.channel): d for d in devices}
        self._ops = {int(d.channel): frozenset(int(op) for op in d.ops) for d in devices}
        self.stats = HalStats()
        self._posted: dict[int, deque[int]] = {c: deque() for c in self.devices}
        self._rx_seq: dict[int, int] = {c: 0 for c in self.devices}
        machine.hypercalls.register(self.handle)
        for device in devices:
            device.attach(self._deliver)

    def save(self) -> HalState:
        return HalState(self.stats.save(),
                        tuple((c, tuple(posted)) for c, posted in self._posted.items()),
                        tuple(self._rx_seq.items()))

    def restore(self, state: HalState) -> None:
        self.stats = HalStats.restored(state.stats)
        self._posted = {c: deque(posted) for c, posted in state.posted}
        self._rx_seq = dict(state.rx_seq)

    # -- guest memory, checked ---------------------------------------------------------------
    def _in_ram(self, addr: int, size: int) -> bool:
        return 0 <= addr and addr + size <= self.machine.ram_size

    def _write_status(self, addr: int, status: Status) -> None:
        self.machine.write_physical(addr + STATUS_OFFSET, struct.pack("<i", status))

    # -- the hypercall ---------------------------------------------------------------------
    def handle(self, args: HypercallArgs) -> HypercallResult:
        """The hypercall handler (registered on the machine's bus; public for tests)."""
        try:
            function = Function(args.eax)
        except ValueError:
            self.stats.calls["unknown"] += 1
            return self._refuse_call(args.eax, Status.BADCALL)
        self.stats.calls[function.name.lower()] += 1
        if function is Function.PROBE:
            self._event(call="probe", status=Status.OK.name)
            return HypercallResult(eax=Status.OK, ebx=MAGIC, ecx=VERSION, edx=IRQ_LINE)
        if function is Function.SUBMIT:
            return HypercallResult(eax=self._submit(args.ebx) & 0xFFFFFFFF)
        return HypercallResult(eax=self._post_rx(args.ebx) & 0xFFFFFFFF)

    def _refuse_call(self, function: int, status: Status) -> HypercallResult:
        self.stats.refused[status.name] += 1
        self._event(call=f"function {function:#x}", status=status.name)
        return HypercallResult(eax=status & 0xFFFFFFFF)

    def _read_header(self, addr: int) -> Header | None:
        if not self._in_ram(addr, HEADER_SIZE):
            return None
        return Header.unpack(self.machine.read_physical(addr, HEADER_SIZE))

    def _check(self, call: str, addr: int, header: Header | None
               ) -> tuple[Status, Device | None]:
        """The validation of docs/hal.md section 2, in its order."""
        if header is None:
            return Status.BADADDR, None
        if header.length > MAX_PAYLOAD:
            return Status.BADLEN, None
        if not self._in_ram(addr, HEADER_SIZE + header.length):
            return Status.BADADDR, None
        device = self.devices.get(header.channel)
        if device is None:
            return Status.NOCHAN, None
        if call == "post_rx":
            if not device.rx_capacity:
                return Status.NOOP, None
            if header.length < device.rx_capacity:
                return Status.BADLEN, None
            if len(self._posted[header.channel]) >= MAX_POSTED:
                return Status.FULL, None
            return Status.OK, device
        if header.op not in self._ops[header.channel]:
            return Status.NOOP, None
        if header.length < device.min_length(header.op):
            return Status.BADLEN, None
        return Status.OK, device

    def _refuse(self, call: str, addr: int, header: Header | None, status: Status) -> int:
        self.stats.refused[status.name] += 1
        if header is not None:
            self._write_status(addr, status)
        fields = {} if header is None else self._header_fields(header)
        self._event(call=call, addr=addr, **fields, status=status.name)
        return status

    def _header_fields(self, header: Header) -> dict[str, object]:
        device = self.devices.get(header.channel)
        op: object = header.op
        if device is not None:
            try:
                op = device.ops(header.op).name
            except ValueError:
                pass
        return {"channel": channel_name(header.channel), "op": op, "len": header.length,
                "seq": header.seq}

    def _submit(self, addr: int) -> int:
        header = self._read_header(addr)
        status, device = self._check("submit", addr, header)
        if device is None or header is None:
            return self._refuse("submit", addr, header, status)
        channel = channel_name(header.channel)
        self.stats.packets[channel] += 1
        payload = self.machine.read_physical(addr + HEADER_SIZE, header.length)
        reply: Reply = device.submit(header.op, payload)
        length = header.length
        if reply.payload is not None and reply.status == Status.OK:
            length = len(reply.payload)
            self.machine.write_physical(addr + HEADER_SIZE, reply.payload)
        # length, the guest's seq, status: one write
        self.machine.write_physical(addr + 4, struct.pack("<IIi", length, header.seq,
                                                          reply.status))
        if reply.status != Status.OK:
            self.stats.refused[reply.status.name] += 1
        if self.machine.events.wants(EventKind.HAL):
            self._event(call="submit", **self._header_fields(header),
                        status=reply.status.name, info=reply.info)
        return reply.status

    def _post_rx(self, addr: int) -> int:
        header = self._read_header(addr)
        status, device = self._check("post_rx", addr, header)
        if device is None or header is None:
            return self._refuse("post_rx", addr, header, status)
        self._posted[header.channel].append(addr)
        self._write_status(addr, Status.PENDING)
        self._event(call="post_rx", addr=addr, channel=channel_name(header.channel),
                    len=header.length, status=Status.OK.name)
        device.rx_posted()
        return Status.OK

    # -- receiving -----------------------------------------------------------------------
    def _deliver(self, channel: Channel, op: int, data: bytes) -> int | None:
        posted = self._posted[int(channel)]
        while posted:
            addr = posted.popleft()
            header = self._read_header(addr)
            # the guest may have rewritten its buffer since posting it: check again
            if header is None or header.channel != channel or \
                    not self._in_ram(addr, HEADER_SIZE + min(header.length, MAX_PAYLOAD)):
                self.stats.dropped["stale-buffer"] += 1
                continue
            taken = min(len(data), header.length)
            self._rx_seq[int(channel)] += 1
            seq = self._rx_seq[int(channel)]
            # header and payload are contiguous: one host write
            self.machine.write_physical(
                addr, Header(channel, op, taken, seq, Status.OK).pack() + data[:taken])
            name = channel_name(channel)
            self.stats.received[name] += 1
            if self.machine.events.wants(EventKind.HAL):   # a frame summary costs
                device = self.devices[int(channel)]
                self._event(call="rx", channel=name, op=device.ops(op).name, len=taken,
                            seq=seq, status=Status.OK.name,
                            info=device.describe(op, data[:taken]))
            self.machine.raise_irq(IRQ_LINE)
            return taken
        return None

    def can_receive(self, channel: Channel) -> bool:
        """Whether the guest has a buffer posted for ``channel`` (input could wake it)."""
        return bool(self._posted.get(int(channel)))

    def _event(self, **fields: object) -> None:
        self.machine.emit(EventKind.HAL, **fields)

