"""Several VMs ("domains", as early Xen called them) side by side in one process.

Each domain is a Machine (core/assembly.py's build_machine) with its board's PC devices
(board/board.py's attach) and its HAL devices (hal/assembly.py's attach_hal); their network interfaces hang off one switch.
They run in lockstep slices of virtual time, one after another on the one Unicorn thread, so a
frame one VM sends reaches the other within a slice and every run is deterministic given its
outside inputs. Idle stretches (every VM in HLT) are skipped, or waited out in real time when
the run is paced for a person at a terminal. The run ends when VM 0 ends; another VM that
powers off or dies is reported and retired.
"""
from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .board.board import AttachedDevices, Board, attach
from .core.assembly import build_machine
from .core.clock import NS_PER_INSN
from .core.faults import StopReason
from .core.loader import BootImage
from .core.machine import Machine, Stop
from .hal.abi import Channel
from .hal.assembly import NET_INPUT, HalDisk, NetPort, attach_hal
from .hal.block import BlockDevice
from .hal.console import ConsoleDevice
from .hal.host import Hal
from .hal.net import NetDevice, Switch
from .hal.pcap import PcapWriter
from .linux.panic import PanicPoints, PanicWatch

SLICE_SINGLE = 1_000_000        # instruction periods (10 ms virtual) with one VM
SLICE_SHARED = 100_000          # 1 ms virtual when VMs exchange frames
# how often a run that waits for outside input looks at its ``interrupted`` check (gdb
# attaching or sending Ctrl-C, a stop request): the wait is never longer than this then
INTERRUPT_POLL_SECONDS = 0.05
CONSOLE_INPUT = "console"
# stops after which a VM other than VM 0 is retired and the others go on
_FINAL = frozenset({StopReason.POWEROFF, StopReason.DEBUG_EXIT, StopReason.HALTED,
                    StopReason.TRIPLE_FAULT, StopReason.UNSUPPORTED, StopReason.BAD_MEMORY,
                    StopReason.VMM_ERROR})


class InputSource(Protocol):
    """Where console input comes from (a terminal, a pipe, the monitor)."""

    def poll(self) -> list[tuple[int, bytes]]:
        """What arrived since the last poll, as (VM index, bytes); b"" is end of input."""

    def wait(self, timeout: float | None) -> bool:
        """Block until input arrives or ``timeout`` seconds pass; False when no input can
        ever come again (and none is waiting)."""


@dataclass
class Domain:
    index: int
    machine: Machine
    hal: Hal
    console: ConsoleDevice
    net: NetDevice | None
    block: BlockDevice | None
    board: AttachedDevices | None = None     # the PC devices of a Linux guest
    stop: Stop | None = None          # how it ended (VMs other than 0 are then retired)

    def listening(self) -> bool:
        """Would console input reach the guest now (a HAL console buffer posted, or a UART
        whose guest driver is open)? Only then can outside input wake an idle guest."""
        uart = self.board.uart if self.board is not None else None
        return self.hal.can_receive(Channel.CONSOLE) or (uart is not None and
                                                          uart.accepting_input)


@dataclass(frozen=True)
class DomainConfig:
    ram_mb: int
    disk: str | None = None
    disk_writable: bool = False
    network: bool = True
    # the PC devices of a board (a Linux kernel needs them); None: only the core's
    board: Board | None = None
    rtc_start: int = 0          # Unix seconds the RTC reads at virtual time 0
    syscall_names: Mapping[int, str] = field(default_factory=dict)   # Linux: the i386 table
    panic_points: PanicPoints | None = None     # Linux: stop at its panic and oops entries


class Domains:
    def __init__(self, image: BootImage, count: int, config: DomainConfig,
                 console_sink: Callable[[int, bytes], None], *, pcap: PcapWriter | None = None,
                 notify: Callable[[str], None] = lambda text: None,
                 replay: bool = False) -> None:
        """``replay``: frames are not carried between VMs (each VM replays the frames it
        received as recorded inputs)."""
        if count < 1:
            raise ValueError("--vms must be at least 1")
        if config.disk_writable and count > 1:
            raise ValueError("--disk-writable needs a single VM (each VM gets its own "
                             "copy-on-write view of the image otherwise)")
        self.config = config
        self.switch = Switch(pcap, forward=not replay)
        # frames on their way to each VM, (send time in instruction periods, sequence, frame):
        # a frame reaches a VM when that VM's own clock reaches the time it was sent, so a
        # reply is never sent (nor stamped) before its request
        self._arriving: list[list[tuple[int, int, bytes]]] = [[] for _ in range(count)]
        self._arrivals = 0
        self.notify = notify
        self.realtime = False
        self.input: InputSource | None = None
        self.domains: list[Domain] = []
        try:
            for index in range(count):
                self.domains.append(self._domain(index, image, config, console_sink))
        except BaseException:
            self.close()
            raise
        self._slice = SLICE_SINGLE if count == 1 else SLICE_SHARED

    def _domain(self, index: int, image: BootImage, config: DomainConfig,
                console_sink: Callable[[int, bytes], None]) -> Domain:
        machine = build_machine(ram_mb=config.ram_mb,
                                console=lambda data, i=index: console_sink(i, data))
        machine.load(image)
        machine.syscalls.names = config.syscall_names
        if config.panic_points is not None:
            PanicWatch(machine, config.panic_points)
        board = None
        if config.board is not None:
            board = attach(machine, config.board, console=lambda data, i=index: console_sink(
                i, data), start_time=config.rtc_start)
            for paddr, table in board.acpi_tables:
                machine.write_physical(paddr, table)
        attached = attach_hal(
            machine, console=lambda data, i=index: console_sink(i, data),
            claim_console_input=lambda: self._unread_uart_input(index),
            disk=HalDisk(config.disk, config.disk_writable) if config.disk else None,
            net=NetPort(index, self.switch, lambda frame, sent_ns, m=machine: self._arrive(
                index, m, frame, sent_ns)) if config.network else None)
        console = attached.console
        # console input goes to the HAL console the bundled guest reads, or, on a board, to
        # the UART (what Linux reads with console=ttyS0) until the guest reads the HAL
        # console (Linux's hal_console, console=hvc0)
        uart = board.uart if board is not None else None
        machine.inputs.register(CONSOLE_INPUT, console.feed if uart is None else (
            lambda data, u=uart, c=console: (c.feed if c.guest_reads else u.feed)(data)))
        return Domain(index, machine, attached.hal, console, attached.net, attached.block,
                      board)

    def _unread_uart_input(self, index: int) -> bytes:
        """Input waiting in VM ``index``'s UART for a driver that never opened it."""
        board = self.domains[index].board
        if board is None or board.uart is None:
            return b""
        return board.uart.take_waiting_input()

    def _arrive(self, index: int, machine: Machine, frame: bytes, sent_ns: int) -> None:
        """A frame for VM ``index``, sent at ``sent_ns``: it enters the VM's input queue now
        if the VM's clock is already there (the VM ran its part of the slice before the
        sender), else it is held and scheduled at its send time when the VM runs next
        (_schedule_arrivals)."""
        sent = -(-sent_ns // NS_PER_INSN)
        if machine.clock.now() >= sent:
            machine.inputs.post(NET_INPUT, frame)
        else:
            heapq.heappush(self._arriving[index], (sent, self._arrivals, frame))
            self._arrivals += 1

    def _schedule_arrivals(self, domain: Domain) -> None:
        """The frames held for VM ``domain`` take effect when its clock reaches their send
        time: scheduled inputs, in time order (as a replay schedules the recorded ones, so the
        replay is the same run)."""
        arriving = self._arriving[domain.index]
        inputs = domain.machine.inputs
        while arriving:
            sent, _, frame = heapq.heappop(arriving)
            try:
                inputs.schedule(sent, NET_INPUT, frame)
            except ValueError:          # earlier than one still scheduled: at once, then
                inputs.post(NET_INPUT, frame)

    def _release_frames(self) -> None:
        """Write the captured frames no VM can still send an earlier one than (pcap.py)."""
        pcap = self.switch.pcap
        if pcap is not None:
            pcap.release(min(d.machine.clock.now() for d in self._live()) * NS_PER_INSN)

    @property
    def machines(self) -> list[Machine]:
        return [d.machine for d in self.domains]

    def close(self) -> None:
        for domain in self.domains:
            if domain.block is not None:
                domain.block.close()
        if self.switch.pcap is not None:
            self.switch.pcap.close()

    def console_input(self, vm: int, data: bytes) -> None:
        """Bytes for VM ``vm``'s console (b"": end of input); they enter the guest at its
        next quantum boundary."""
        self.domains[vm].machine.inputs.post(CONSOLE_INPUT, data)

    def hal_stats(self, vm: int) -> str:
        domain = self.domains[vm]
        lines = [domain.hal.stats.describe()]
        if domain.net is not None:
            forged = self.switch.forged[vm]
            dropped = sum(domain.net.dropped.values())
            lines.append(f"{'net':<10} forged {forged}, rx dropped {dropped}, switch forwarded "
                         f"{self.switch.forwarded} (to an unknown MAC: "
                         f"{self.switch.unknown_destination})")
        if domain.block is not None:
            mode = "writable" if domain.block.writable else "copy-on-write"
            lines.append(f"{'disk':<10} {domain.block.path}: {domain.block.sectors} sectors, "
                         f"{mode}")
        return "\n".join(lines)

    # -- running ---------------------------------------------------------------------------
    def _poll_input(self) -> None:
        if self.input is None:
            return
        for vm, data in self.input.poll():
            if 0 <= vm < len(self.domains) and self.domains[vm] in self._live():
                self.console_input(vm, data)

    def _live(self) -> list[Domain]:
        return [d for d in self.domains if d.stop is None or d.index == 0]

    def run(self, max_insns: int | None = None, *,
            interrupted: Callable[[], bool] | None = None) -> Stop:
        """Run every live VM until VM 0 stops (or any VM stops for the debugger).
        ``max_insns`` counts VM 0's instructions; ``interrupted`` is polled between slices."""
        try:
            return self._run(max_insns, interrupted)
        finally:
            self._release_frames()

    def _run(self, max_insns: int | None, interrupted: Callable[[], bool] | None) -> Stop:
        first = self.domains[0].machine
        limit = None if max_insns is None else first.icount + max_insns
        started_wall = time.monotonic()
        started_virtual = first.clock.now()
        while True:
            if interrupted is not None and interrupted():
                return first.run(interrupted=lambda: True)     # the REQUESTED stop
            self._poll_input()
            live = self._live()
            # slices on a fixed grid of virtual time: a run stopped by the debugger and
            # resumed exchanges frames at the same points as one that was not
            until = (min(d.machine.clock.now() for d in live) // self._slice + 1) * self._slice
            for domain in live:
                machine = domain.machine
                budget = None
                if domain.index == 0 and limit is not None:
                    budget = limit - machine.icount
                    if budget <= 0:
                        return machine.run(0)
                self._schedule_arrivals(domain)
                stop = machine.run(budget, interrupted=interrupted, until_time=until)
                if stop.reason is StopReason.TIME_SLICE:
                    continue
                if stop.reason in _FINAL:
                    domain.stop = stop
                    if domain.index != 0:
                        self.notify(f"vm{domain.index}: {stop.reason.value}: {stop.message}")
                        continue
                return stop
            self._release_frames()
            if all(d.machine.halted for d in self._live()) and not self._idle(interrupted):
                return first.run()       # ends at once, reporting the HLT nothing can end
            if self.realtime:
                self._pace(started_wall, started_virtual)

    def _idle(self, interrupted: Callable[[], bool] | None = None) -> bool:
        """Every live VM waits in HLT: with no timer that can wake one, wait for outside
        input; False when nothing can ever wake any of them. (Paced runs then wait out the
        idle time in _pace.) A run that can be interrupted waits a short while only, and
        the run loop looks at ``interrupted`` again (the idle VMs' time passing meanwhile,
        a slice at a time)."""
        live = self._live()
        wakeups = [t for t in (d.machine.wakeup_time() for d in live) if t is not None]
        wakeups += [self._arriving[d.index][0][0] for d in live if self._arriving[d.index]]
        # console input can only wake a guest that posted a buffer for it (a frame from
        # another VM cannot come either: every VM is waiting)
        listening = any(d.listening() for d in live)
        if self.input is None or not listening:
            return bool(wakeups)
        if not wakeups:
            return self.input.wait(None if interrupted is None else INTERRUPT_POLL_SECONDS)
        return True

    def _pace(self, started_wall: float, started_virtual: int) -> None:
        """Paced for a person: do not let virtual time run ahead of the wall clock."""
        ahead = (self.domains[0].machine.clock.now() - started_virtual) * NS_PER_INSN / 1e9 \
            - (time.monotonic() - started_wall)
        if ahead > 0.001:
            if self.input is not None:
                self.input.wait(ahead)
            else:
                time.sleep(min(ahead, 0.05))   # short: the caller polls for a stop request
