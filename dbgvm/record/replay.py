"""Replaying a recorded run (`dbgvm replay FILE`) and checking that it is the same run.

Each VM is rebuilt from the trace's header alone (kernel, initrd and disk contents come from
the trace; a kernel given on the command line must have the recorded content hash) and
replayed on its own: every outside input,
console bytes and frames from the other VMs alike, is scheduled at its recorded virtual time,
and frames the VM sends go nowhere (they are the other VMs' recorded inputs). Every event is
compared with the recorded one as it happens: the first difference stops the replay and is
reported with its instruction count. At the recorded end, the stop, event count and hash and
the state digest must match.
"""
from __future__ import annotations

import hashlib
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.events import Event, EventKind
from ..core.faults import StopReason
from ..boot import Boot, prepare_boot
from ..core.loader import Module
from ..core.machine import Machine, Stop
from ..domains import SLICE_SHARED, DomainConfig, Domains
from ..core.inputs import Input
from .recorder import CUT_OFF_MESSAGE, EventStream, entry_data, state_digest
from .trace import RecordedInput, Trace, TraceError


@dataclass(frozen=True)
class Divergence:
    vm: int
    index: int                  # position in the VM's event stream
    icount: int
    recorded: str | None        # None: the recorded run had no more events
    replayed: str | None        # None: the replay ended before this recorded event

    def describe(self) -> str:
        return (f"vm{self.vm}: replay diverged at event {self.index} (icount {self.icount}):\n"
                f"  recorded: {self.recorded or '(no such event: the recorded run ended)'}\n"
                f"  replayed: {self.replayed or '(no such event: the replay ended)'}")


class Verifier:
    """Compares one VM's events, and the inputs as they take effect, with the recorded ones
    as they happen."""

    def __init__(self, vm: int, machine: Machine, recorded: list[str],
                 inputs: list[RecordedInput] | None = None) -> None:
        self.vm = vm
        self._machine = machine
        self._recorded = recorded
        self.inputs = inputs or []
        self.inputs_applied = 0
        self.stream = EventStream()
        self.divergence: Divergence | str | None = None
        self.enabled = True
        machine.events.subscribe(set(EventKind), self._on_event)     # for the VM's lifetime
        machine.inputs.observe(self._on_input)

    def _on_input(self, applied: Input) -> None:
        """A recorded input takes effect: at its recorded instruction count and time."""
        if not self.enabled or self.divergence is not None:
            return
        index = self.inputs_applied
        self.inputs_applied += 1
        expected = self.inputs[index] if index < len(self.inputs) else None
        if expected is None or (expected.icount, expected.time, expected.channel,
                                expected.payload) != (applied.icount, applied.time,
                                                      applied.channel, applied.payload):
            recorded = "(none: the recording has no more)" if expected is None else \
                f"{expected.channel} at icount {expected.icount}, time {expected.time}"
            self.divergence = (f"vm{self.vm}: replay diverged at input {index}: recorded "
                               f"{recorded}; replayed {applied.channel} at icount "
                               f"{applied.icount}, time {applied.time}")
            self._machine.stop_after_current(StopReason.REQUESTED, "the replay diverged")

    def _on_event(self, event: Event) -> None:
        if not self.enabled or self.divergence is not None:
            return
        index = self.stream.count
        text = self.stream.add(event)
        if text is None:
            return
        expected = self._recorded[index] if index < len(self._recorded) else None
        if text != expected:
            self.divergence = Divergence(self.vm, index, event.icount, expected, text)
            self._machine.stop_after_current(StopReason.REQUESTED, "the replay diverged")


def _short(digest: str) -> str:
    return digest[:12]


def _read_kernel(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TraceError(f"{what} {path}: cannot read: {exc.strerror}") from None


def kernel_bytes(trace: Trace, given: str | None = None) -> bytes:
    """The bytes of the kernel the trace ran: those it carries (format 2), or a kernel given
    on the command line, or for an older trace the bundled guest or the recorded path, each
    checked against the recorded content hash (a refusal is one line)."""
    kernel = trace.header["kernel"]
    recorded = kernel["sha256"]
    if given is not None:
        data = _read_kernel(given, "--kernel")
        if hashlib.sha256(data).hexdigest() != recorded:
            raise TraceError(f"--kernel {given} is not the kernel this trace ran (sha256 "
                             f"{_short(hashlib.sha256(data).hexdigest())}..., recorded "
                             f"{_short(recorded)}...)")
        return data
    if "data" in kernel:
        return embedded(kernel, "the kernel")
    # format 1: the trace names its kernel; find it here
    old = f"this trace (format version {trace.header.get('version')}) does not carry its kernel"
    give = f"give the recorded kernel (sha256 {_short(recorded)}...) with --kernel FILE"
    path = kernel["path"]
    where = path
    if kernel.get("bundled"):
        from ..guest import GuestBuildError, bundled_kernel
        try:
            path = str(bundled_kernel())
        except GuestBuildError as exc:
            raise TraceError(f"{old}, and the bundled guest cannot be built here ({exc}): "
                             f"{give}") from None
        where = "the bundled guest built here"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TraceError(f"{old}, and {path} cannot be read ({exc.strerror}): {give}") from None
    if hashlib.sha256(data).hexdigest() != recorded:
        raise TraceError(f"{old}, and {where} is not the recorded one (content hash differs): "
                         f"{give}")
    return data


def embedded(entry: dict, what: str) -> bytes:
    """The bytes a header entry embeds, checked against its recorded hash and size."""
    try:
        data = entry_data(entry)
    except (ValueError, zlib.error) as exc:
        raise TraceError(f"{what} in the trace is damaged ({exc})") from None
    if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise TraceError(f"{what} in the trace is damaged (its size or content hash differs "
                         "from the recorded one)")
    return data


def build_boot(trace: Trace, kernel: bytes) -> Boot:
    """The boot of the recorded run (image and board): the kernel keeps its recorded name (the
    first word of a Multiboot command line), wherever its bytes come from."""
    header = trace.header
    modules = tuple(Module(entry["path"], embedded(entry, f"initrd module {entry['path']}"),
                           entry["spec"]) for entry in header.get("initrd", []))
    return prepare_boot(header["kernel"]["path"], header.get("append", ""), modules,
                        header["ram_mb"], header.get("boot_decompressor", False), data=kernel)


class Replay:
    """The VMs of a trace, rebuilt, with their recorded inputs scheduled."""

    def __init__(self, trace: Trace, console_sink: Callable[[int, bytes], None],
                 kernel: str | None = None) -> None:
        """``kernel``: a kernel file given by the user, checked against the recorded hash
        (by default the trace's own, or for an older trace the one it names)."""
        header = trace.header
        self.trace = trace
        self.kernel = kernel_bytes(trace, kernel)
        self._disk_file = None
        disk = None
        if header.get("disk") is not None:
            self._disk_file = tempfile.NamedTemporaryFile(prefix="dbgvm-replay-", suffix=".img")
            self._disk_file.write(embedded(header["disk"], "the disk image"))
            self._disk_file.flush()
            disk = self._disk_file.name
        try:
            boot = build_boot(trace, self.kernel)
            self.domains = Domains(boot.image, header["vms"],
                                   DomainConfig(header["ram_mb"], disk, False,
                                                header.get("network", True), boot.board,
                                                header.get("rtc_start", 0),
                                                boot.syscall_names, boot.panic_points),
                                   console_sink, replay=True)
        except BaseException:
            self.close()
            raise
        inputs: dict[int, list[RecordedInput]] = {}
        for recorded in trace.inputs:          # (trace.read checked VM numbers and order)
            self.domains.machines[recorded.vm].inputs.schedule(recorded.time, recorded.channel,
                                                               recorded.payload)
            inputs.setdefault(recorded.vm, []).append(recorded)
        self.verifiers = [Verifier(vm, m, trace.events.get(vm, []), inputs.get(vm, []))
                          for vm, m in enumerate(self.domains.machines)]

    def close(self) -> None:
        if getattr(self, "domains", None) is not None:
            self.domains.close()
        if self._disk_file is not None:
            self._disk_file.close()

    def end_icount(self, vm: int) -> int:
        return self.trace.ends[vm].icount

    def verify_vm(self, vm: int, stop: Stop) -> Divergence | str | None:
        """After VM ``vm`` ran to its recorded end: None when it is the same run, else what
        differs (one line, or a Divergence). Every field of the end record is compared."""
        verifier = self.verifiers[vm]
        if verifier.divergence is not None:
            return verifier.divergence
        recorded = self.trace.events.get(vm, [])
        if verifier.stream.count < len(recorded):
            return Divergence(vm, verifier.stream.count, stop.icount,
                              recorded[verifier.stream.count], None)
        end = self.trace.ends[vm]
        machine = self.domains.machines[vm]
        if end.reason == "cut-off":
            replayed = ("cut-off", CUT_OFF_MESSAGE, 0) if stop.reason in _PAUSES else \
                (stop.reason.value, stop.message, stop.exit_status)
        else:
            replayed = (stop.reason.value, stop.message, stop.exit_status)
        if replayed != (end.reason, end.message, end.exit_status):
            return (f"vm{vm}: the recorded run ended with {end.reason} ({end.message}, exit "
                    f"status {end.exit_status}), the replay with {replayed[0]} ({replayed[1]}, "
                    f"exit status {replayed[2]})")
        now = (machine.icount, machine.clock.now())
        if now != (end.icount, end.time):
            unreachable = now[0] < end.icount or now[1] < end.time
            return (f"vm{vm}: the recorded run ended at icount {end.icount}, time {end.time}; "
                    f"the replay at icount {now[0]}, time {now[1]}"
                    + (" (the recorded end cannot be reached)" if unreachable else ""))
        if verifier.inputs_applied != len(verifier.inputs):
            first = verifier.inputs[verifier.inputs_applied]
            return (f"vm{vm}: {len(verifier.inputs) - verifier.inputs_applied} recorded inputs "
                    f"never took effect in the replay (the first: {first.channel} at icount "
                    f"{first.icount}, time {first.time})")
        if verifier.stream.count != end.events:
            return (f"vm{vm}: the recorded run had {end.events} events, the replay "
                    f"{verifier.stream.count}")
        if verifier.stream.hexdigest() != end.events_sha256:
            return f"vm{vm}: the event stream differs from the recorded one"
        if state_digest(machine) != end.state_digest:
            return f"vm{vm}: the final state (RAM, registers, icount) differs from the recorded one"
        return None

    def run_and_verify(self) -> list[Divergence | str]:
        """Replay every VM to its recorded end; the differences found (none: the same run).
        Each run is bounded by its recorded end; a VM other than 0 also by the end of the
        run (VM 0's end in the replay, plus one time slice): VMs run in lockstep, so a VM
        cut off when VM 0 ended cannot be further on."""
        problems: list[Divergence | str] = []
        run_end: int | None = None
        for vm, machine in enumerate(self.domains.machines):
            end = self.trace.ends[vm]
            time = end.time if run_end is None else min(end.time, run_end + SLICE_SHARED)
            stop = _run_to(machine, end.icount, time)
            if vm == 0:
                run_end = machine.clock.now()
            problem = self.verify_vm(vm, stop)
            if problem is not None:
                problems.append(problem)
        return problems


_PAUSES = (StopReason.MAX_INSNS, StopReason.TIME_SLICE)


def _run_to(machine: Machine, icount: int, time: int) -> Stop:
    """Run to the recorded end: a stop there (poweroff, debug exit), or the instruction count
    and virtual time at which the recording cut this VM off (an idle VM's clock runs on
    without instructions: both bound the run). Never past either: when one is reached and
    the other cannot be without passing it (a run that makes no progress), the run ends
    there (verify_vm then reports the end that cannot be reached)."""
    while True:
        before = (machine.icount, machine.clock.now())
        stop = machine.run(max(icount - machine.icount, 0), until_time=time)
        if stop.reason not in _PAUSES:
            return stop
        now = (machine.icount, machine.clock.now())
        if now[0] >= icount and now[1] >= time or now == before:
            return stop
