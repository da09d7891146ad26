#!/usr/bin/env python3
"""dbgvm benchmarks. Every figure is a ratio against a reference measured in the same run
(these machines are noisy), plus the absolute numbers behind it.

  guest speed: MIPS of a compute loop under dbgvm vs raw Unicorn running the same code, the
               same number of instructions, with the same quantum (target ratio >= 0.9)
  trap cost:   microseconds per emulated instruction on a CLI/STI loop (target <= 10 us)
  shadow fill: fills per second and microseconds per fill on a page-touching guest, and its
               run time against raw Unicorn walking the guest's page tables natively
  CR3 switch:  microseconds per switch between two address spaces (including the refills the
               flush causes), against raw Unicorn doing the same switches natively
  breakpoints: guest speed with 100 breakpoints set but never hit, against none (target
               ratio >= 0.95)
  gdb stepi:   single steps per second driven by the real gdb (`stepi N`), against QEMU's
               gdbstub on the same guest when qemu-system-i386 is installed
  HAL block:   MB/s a guest reads a 16 MiB disk image through the HAL (127-sector requests),
               against this process reading the same file with the same request sizes
  HAL calls:   HAL round trips (SUBMIT of an empty console write) per second, against the
               emulated CLI/STI trap rate of the same run
  recording:   a run with --record against the same run without (target ratio <= 1.3), on a
               compute guest (100 M instructions) and on the trap-heavy CLI/STI guest (two
               events per iteration: the worst case)
  replay:      replaying and verifying that recording, against recording it
  reverse:     reverse-stepi latency at the end of a 10-million-instruction replay (snapshots
               every 2 million instructions; target <= 200 ms)
  linux-blk:   Debian's i386 kernel (as for `linux`) reading a 32 MiB disk image through
               dbgvm's hal_blk driver, `dd if=/dev/halblk0 of=/dev/null bs=1M` through the page
               cache and with iflag=direct: MB/s of wall time and of the guest's own (virtual)
               clock, against this process reading the same file in 1 MiB reads
  linux:       Debian's i386 kernel (`dbgvm linux fetch`) booted with 'console=ttyS0
               cryptomgr.notests' -m 128 to the busybox prompt, with the vmlinux dbgvm
               unpacks and with --boot-decompressor: wall seconds against QEMU (TCG) booting
               the same kernel and initrd to the same prompt (target ratio <= 4), guest
               instructions and MIPS, then a second, instrumented boot: the VMM's handlers
               timed per kind of trap (emulated instruction, port I/O, reflected fault, shadow
               fill; targets: an emulated trap <= 5 us, a shadow fill <= 8 us), shadow fills,
               zaps, CR3 switches and interrupts delivered
  linux-record: a Linux boot to the prompt with console input typed into the shell (a command
               that lists /proc, then poweroff), by `dbgvm run --batch`, with and without
               --record: the recording's overhead (ratio), its trace size and events, then
               `dbgvm replay --batch` verifying it (ratio to recording), and reverse-stepi
               latency at the end of the replay (the snapshots of the gdb/monitor replay)
  linux-net:   two of those Linux VMs (--vms 2) on dbgvm's switch, VM 0 pinging VM 1 over
               hal_net: ping's round trips in virtual time, and the wall seconds a ping
               costs (one a virtual second, as ping sends them)

`--only linux` (or any comma-separated names above) runs only those benchmarks.
"""
from __future__ import annotations

import argparse
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from unicorn import UC_ARCH_X86, UC_MODE_32, Uc, UcError  # noqa: E402
from unicorn.x86_const import UC_X86_REG_EIP, UC_X86_REG_ESP  # noqa: E402

from guest_build import build  # noqa: E402

from dbgvm.core.assembly import build_machine  # noqa: E402
from dbgvm.core.events import Event, EventKind  # noqa: E402
from dbgvm.core.faults import StopReason, Vector  # noqa: E402
from dbgvm.core.loader import load  # noqa: E402
from dbgvm.core.instruction_hooks import InstructionHooks  # noqa: E402
from dbgvm.core.machine import Machine  # noqa: E402
from dbgvm.core.scheduler import QUANTUM, Scheduler  # noqa: E402
from dbgvm.core.traps import TrapDispatch  # noqa: E402
from dbgvm.core.paging import Paging  # noqa: E402
from dbgvm.core.port_io import PortIo  # noqa: E402


CLISTI_ITERATIONS = 50000  # as in tests/guests/bench_clisti.S


def run_dbgvm(name: str) -> tuple[Machine, float]:
    machine = build_machine()
    image = load(build(name), machine.ram_size)
    machine.load(image)
    start = time.perf_counter()
    stop = machine.run()
    elapsed = time.perf_counter() - start
    if stop.exit_status != 1:
        raise SystemExit(f"bench guest {name} ended badly: {stop.message}")
    return machine, elapsed


def run_raw_unicorn(name: str, instructions: int) -> float:
    """The same image and instruction count in a bare Unicorn (CPL 0, no hooks)."""
    image = load(build(name), 64 << 20)
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 64 << 20)
    for chunk in image.chunks:
        uc.mem_write(chunk.paddr, chunk.data)
    uc.reg_write(UC_X86_REG_ESP, 0x7C00)
    uc.ctl_exits_enabled(True)
    uc.ctl_set_exits([])
    eip, left = image.entry, instructions
    start = time.perf_counter()
    while left > 0:
        count = min(QUANTUM, left)
        try:
            uc.emu_start(eip, 0, count=count)
        except UcError:
            break   # ran past the guest's debug exit (a no-op port write here) into garbage
        eip = uc.reg_read(UC_X86_REG_EIP)
        left -= count
    return time.perf_counter() - start


def bench_speed(repeat: int) -> None:
    best_ours = best_raw = float("inf")
    for _ in range(repeat):
        machine, ours = run_dbgvm("bench_compute")
        raw = run_raw_unicorn("bench_compute", machine.icount)
        best_ours, best_raw = min(best_ours, ours), min(best_raw, raw)
    n = machine.icount
    ratio = best_raw / best_ours
    print(f"guest speed     dbgvm {n / best_ours / 1e6:7.1f} MIPS   raw Unicorn "
          f"{n / best_raw / 1e6:7.1f} MIPS   ratio {ratio:.3f}  (target >= 0.9) "
          f"[{n} insns, quantum {QUANTUM}]")


def bench_traps(repeat: int) -> None:
    best = float("inf")
    for _ in range(repeat):
        machine, elapsed = run_dbgvm("bench_clisti")
        traps = 2 * CLISTI_ITERATIONS
        raw = run_raw_unicorn("bench_compute", machine.icount)  # the non-trap part, for scale
        best = min(best, (elapsed - raw) / traps)
    print(f"trap round trip {best * 1e6:7.2f} us per emulated CLI/STI  "
          f"({1 / best / 1e3:.0f}k emulated insns/s; target <= 10 us) [{traps} traps]")


def bench_shadow_fills(repeat: int) -> None:
    best = None
    for _ in range(repeat):
        machine, ours = run_dbgvm("bench_pages")
        raw = run_raw_unicorn("bench_pages", machine.icount)
        if best is None or ours < best[1]:
            best = (machine.mmu.stats.fills, ours, raw)
    fills, ours, raw = best
    # The guest does little but fault (4 instructions a page), so its whole run time is
    # charged to the fills; raw Unicorn runs the same instructions on its own page tables.
    print(f"shadow fills    {fills / ours:9.0f} fills/s   {ours / fills * 1e6:6.2f} us per fill   "
          f"(raw Unicorn, no shadow: {raw:.3f} s for the same instructions) [{fills} fills]")


def bench_cr3_switch(repeat: int) -> None:
    best = None
    for _ in range(repeat):
        machine, ours = run_dbgvm("bench_cr3")
        raw = run_raw_unicorn("bench_cr3", machine.icount)
        if best is None or ours < best[1]:
            best = (machine.mmu.stats, ours, raw)
    stats, ours, raw = best
    print(f"CR3 switch      {ours / stats.switches * 1e6:7.2f} us per switch back and forth "
          f"between two address spaces ({stats.reused} of {stats.switches} reused a kept shadow, "
          f"{stats.fills} fills in all)   raw Unicorn {raw / stats.switches * 1e6:.2f} us")


def bench_breakpoints(repeat: int) -> None:
    image = load(build("bench_compute"), 64 << 20)
    # 100 addresses the compute loop never executes, on its own code page (after the loop),
    # so that all are armed exits compiled into the loop's page.
    loop = image.symbols["loop"]
    spots = [loop + 0x40 + 4 * i for i in range(100)]
    assert all(spot >> 12 == loop >> 12 for spot in spots)
    best: dict[bool, float] = {}
    armed = 0
    for with_bps in (False, True) * repeat:
        machine = build_machine()
        machine.load(image)
        if with_bps:
            for addr in spots:
                machine.debug.add_breakpoint(addr, "bench")
        start = time.perf_counter()
        machine.run()
        elapsed = time.perf_counter() - start
        if with_bps:
            armed = len(machine.debug.armed)
        best[with_bps] = min(best.get(with_bps, elapsed), elapsed)
    print(f"breakpoints     guest speed with 100 breakpoints set ({armed} armed), not hit, vs "
          f"none: ratio {best[False] / best[True]:.3f} (target >= 0.95)")


def _gdb_session_time(start_stub, kernel, steps: int) -> float:
    """Seconds for a whole gdb batch session that connects, runs to de_insn and steps."""
    import subprocess

    from gdb_harness import free_port

    port = free_port()
    proc = start_stub(kernel, port)
    try:
        begin = time.perf_counter()
        subprocess.run(["gdb", "--nx", "-q", "-batch", "-ex", "set pagination off",
                        "-ex", f"target remote 127.0.0.1:{port}", "-ex", "break *de_insn",
                        "-ex", "continue", "-ex", f"stepi {steps}", "-ex", "kill", str(kernel)],
                       capture_output=True, timeout=600, check=True)
        return time.perf_counter() - begin
    finally:
        proc.kill()
        proc.wait()


def _gdb_stepi_rate(start_stub, kernel, steps: int) -> float:
    """Steps per second: the difference between sessions of ``steps`` and of 1 step."""
    return (steps - 1) / (_gdb_session_time(start_stub, kernel, steps) -
                          _gdb_session_time(start_stub, kernel, 1))


def bench_gdb_stepi(steps: int = 300) -> None:
    """From de_insn, 300 steps stay clear of the guest's STI/HLT wait loop."""
    import shutil

    from gdb_harness import start_dbgvm, start_qemu

    if shutil.which("gdb") is None:
        print("gdb stepi        skipped: gdb is not installed")
        return
    kernel = build("basics")
    ours = _gdb_stepi_rate(start_dbgvm, kernel, steps)
    line = f"gdb stepi       dbgvm {ours:7.0f} steps/s"
    if shutil.which("qemu-system-i386"):
        theirs = _gdb_stepi_rate(start_qemu, kernel, steps)
        line += f"   QEMU gdbstub {theirs:7.0f} steps/s   ratio {ours / theirs:.2f}"
    else:
        line += "   (QEMU not installed: no reference)"
    print(line + f"  [{steps} steps]")


HAL_BLOCK_PASSES, HAL_BLOCK_CHUNK = 4, 127 * 512     # as in tests/guests/bench_hal_block.S
HAL_CALLS = 50000                                   # as in tests/guests/bench_hal_calls.S


def run_domain(name: str, disk: str | None = None) -> float:
    """Run a bench guest with its HAL devices (one VM, console discarded)."""
    from dbgvm.domains import DomainConfig, Domains
    domains = Domains(load(build(name), 64 << 20), 1, DomainConfig(64, disk),
                      lambda vm, data: None)
    try:
        start = time.perf_counter()
        stop = domains.run()
        elapsed = time.perf_counter() - start
    finally:
        domains.close()
    if stop.exit_status != 1:
        raise SystemExit(f"bench guest {name} ended badly: {stop.message}")
    return elapsed


def host_read(path: str) -> float:
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    start = time.perf_counter()
    for _ in range(HAL_BLOCK_PASSES):
        for offset in range(0, size, HAL_BLOCK_CHUNK):
            os.pread(fd, HAL_BLOCK_CHUNK, offset)
    elapsed = time.perf_counter() - start
    os.close(fd)
    return elapsed


def bench_hal_block(repeat: int) -> None:
    with tempfile.NamedTemporaryFile(suffix=".img") as image:
        image.write(os.urandom(16 << 20))
        image.flush()
        megabytes = HAL_BLOCK_PASSES * 16
        ours = min(run_domain("bench_hal_block", image.name) for _ in range(repeat))
        host = min(host_read(image.name) for _ in range(repeat))
    print(f"HAL block read  {megabytes / ours:7.0f} MB/s through the HAL vs {megabytes / host:.0f} "
          f"MB/s read on the host: ratio {host / ours:.3f} [{megabytes} MiB]")


def bench_hal_calls(repeat: int) -> None:
    calls = min(run_domain("bench_hal_calls") for _ in range(repeat))
    _, clisti = run_dbgvm("bench_clisti")
    rate, trap_rate = HAL_CALLS / calls, 2 * CLISTI_ITERATIONS / clisti
    print(f"HAL round trips {rate:9.0f} calls/s ({1e6 / rate:.1f} us each) vs {trap_rate:.0f} "
          f"emulated CLI/STI per second: ratio {rate / trap_rate:.3f} [{HAL_CALLS} calls]")


RECORD_INSNS = 10_000_000


def _record_run(name: str, max_insns: int | None, trace: str | None) -> float:
    from dbgvm.domains import DomainConfig, Domains
    from dbgvm.record.recorder import Recorder
    domains = Domains(load(build(name), 64 << 20), 1, DomainConfig(64), lambda vm, data: None)
    recorder = None
    if trace is not None:
        recorder = Recorder(trace, {"kernel": {"path": name, "sha256": "", "bundled": False},
                                    "ram_mb": 64, "vms": 1, "disk": None, "initrd": []},
                            domains.machines)
    start = time.perf_counter()
    stop = domains.run(max_insns)
    if recorder is not None:
        recorder.finish({0: stop} if stop.reason.value != "max-insns" else {})
    elapsed = time.perf_counter() - start
    domains.close()
    return elapsed


def _replay(trace: str, name: str) -> tuple[float, object]:
    from dbgvm.record import replay as replay_module
    from dbgvm.record.trace import read
    original = replay_module._kernel
    replay_module._kernel = lambda header: str(build(name))     # bench guests: by name
    try:
        replay = replay_module.Replay(read(trace), lambda vm, data: None)
        start = time.perf_counter()
        problems = replay.run_and_verify()
        elapsed = time.perf_counter() - start
    finally:
        replay_module._kernel = original
    if problems:
        raise SystemExit(f"bench replay of {name} diverged: {problems[0]}")
    return elapsed, replay


def bench_record_replay(repeat: int) -> None:
    for name, insns in (("bench_compute", 10 * RECORD_INSNS), ("bench_clisti", None)):
        with tempfile.TemporaryDirectory() as tmp:
            trace = os.path.join(tmp, "bench.trace")
            plain = min(_record_run(name, insns, None) for _ in range(repeat))
            recorded = min(_record_run(name, insns, trace) for _ in range(repeat))
            replayed = min(_replay(trace, name)[0] for _ in range(repeat))
            size = os.path.getsize(trace)
        print(f"recording       {name}: ratio {recorded / plain:.3f} to a plain run "
              f"({recorded:.3f} s vs {plain:.3f} s; target <= 1.3), trace {size} bytes; "
              f"replay+verify {replayed:.3f} s: ratio {replayed / recorded:.3f} to recording")


def _forward_then_step_back(engine) -> tuple[float, list[float]]:
    """Seconds to run ``engine`` to its end (taking snapshots), then of five reverse-stepi."""
    start = time.perf_counter()
    engine.run()
    forward = time.perf_counter() - start
    latencies = []
    for _ in range(5):
        start = time.perf_counter()
        engine.step_back()
        latencies.append(time.perf_counter() - start)
    return forward, latencies


def bench_reverse_stepi() -> None:
    """(A machine without outside inputs replays itself: the engine needs no trace here.)"""
    from dbgvm.record.reverse import ReverseEngine
    fresh = build_machine()
    fresh.load(load(build("bench_compute"), fresh.ram_size))
    engine = ReverseEngine(fresh, RECORD_INSNS)
    forward, latencies = _forward_then_step_back(engine)
    print(f"reverse-stepi   {max(latencies) * 1e3:6.1f} ms worst of 5 (mean "
          f"{sum(latencies) / 5 * 1e3:.1f} ms) at icount {fresh.icount} of a "
          f"{RECORD_INSNS}-instruction run (forward with snapshots: {forward:.3f} s, "
          f"{len(engine.store.snapshots)} snapshots; target <= 200 ms)")


# -- Linux boot --------------------------------------------------------------------------------
LINUX_APPEND = "console=ttyS0 cryptomgr.notests"    # the configuration the targets are for
LINUX_RAM_MB = 128
LINUX_RTC_BASE = 1_767_225_600      # as tests/linux_fixtures.py: every boot runs the same way
LINUX_LIMIT = 20_000_000_000        # instructions: a boot that has not prompted by then failed
QEMU_TIMEOUT = 300.0                # seconds
INIT_LINE = b"Run /init"
PROMPT = re.compile(rb"\n/ # ")     # busybox sh's prompt, as tests/linux_fixtures.py waits for
TARGET_RATIO, TARGET_TRAP_US, TARGET_FILL_US = 4.0, 5.0, 8.0


class PromptWatch:
    """Console output of a Linux boot: notes when the busybox prompt follows "Run /init"."""

    def __init__(self) -> None:
        self.output = bytearray()
        self._init_at: int | None = None
        self.seen = False

    def feed(self, data: bytes) -> bool:
        """Add console output; True the first time the prompt is there."""
        start = max(0, len(self.output) - len(INIT_LINE))
        self.output += data
        if self.seen:
            return False
        if self._init_at is None:
            at = self.output.find(INIT_LINE, start)
            if at < 0:
                return False
            self._init_at = start = at
        self.seen = PROMPT.search(self.output, start) is not None
        return self.seen

    def tail(self) -> str:
        return self.output[-1500:].decode("utf-8", "replace")


def qemu_boot(files) -> float:
    """Wall seconds from starting qemu-system-i386 (TCG) to the prompt on its stdout."""
    command = ["qemu-system-i386", "-accel", "tcg", "-kernel", str(files.kernel),
               "-initrd", str(files.initrd), "-append", LINUX_APPEND,
               "-m", str(LINUX_RAM_MB), "-nographic", "-no-reboot"]
    watch = PromptWatch()
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        fd = proc.stdout.fileno()
        while time.perf_counter() - start < QEMU_TIMEOUT:
            if not select.select([fd], [], [], 1.0)[0]:
                continue
            data = os.read(fd, 65536)
            if not data:
                break
            if watch.feed(data):
                return time.perf_counter() - start
        raise SystemExit(f"QEMU showed no busybox prompt; its console ends with:\n"
                         f"{watch.tail()}")
    finally:
        proc.kill()
        proc.wait()


@dataclass
class LinuxBoot:
    wall: float           # seconds from reading the kernel to the prompt
    load: float           # of which preparing the boot image and building the machine
    icount: int
    stats: object         # the shadow MMU's ShadowStats


class TrapProfile:
    """Times the VMM's handlers with perf_counter_ns and classifies each call by the
    events it emitted (the last `trap` event's instruction and action; for a #PF without one,
    the `pt` events). Wraps Machine's methods on the class, so the hooks that a Machine
    created inside ``patched()`` registers call the timed versions; dbgvm's code is unchanged."""

    # (class, method): the handlers timed, by the name _classify knows them by
    WRAPPED = ((TrapDispatch, "_on_intr"), (TrapDispatch, "_on_invalid"), (PortIo, "on_in"),
               (PortIo, "on_out"), (InstructionHooks, "on_cpuid"),
               (InstructionHooks, "on_sysenter"), (Scheduler, "boundary"),
               (Paging, "after_protected_write"))
    KINDS = (EventKind.TRAP, EventKind.PT, EventKind.IRQ)

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.ns: Counter[str] = Counter()
        # events emitted inside each kind's calls: trap events, and pt/irq events
        self.trap_events: Counter[str] = Counter()
        self.other_events: Counter[str] = Counter()
        # what one event costs a handler because we listen (measure_event_cost)
        self.trap_ns = self.trap_bench_ns = self.other_ns = 0.0
        self.section: dict[str, str] = {}
        self.pt_ops: Counter[str] = Counter()
        self.flush_causes: Counter[str] = Counter()
        self.irqs = 0
        self._current: list[Event] | None = None
        self._counting = True

    def listen(self, event: Event) -> None:
        if self._current is not None:
            self._current.append(event)
        if not self._counting:
            return
        if event.kind is EventKind.IRQ:
            self.irqs += 1
        elif event.kind is EventKind.PT:
            op = event.fields["op"]
            self.pt_ops[op] += 1
            if op == "flush":
                self.flush_causes[event.fields["cause"]] += 1

    def _record(self, kind: str | None, section: str, ns: int, events: list[Event]) -> None:
        if kind is None:
            return
        self.calls[kind] += 1
        self.ns[kind] += ns
        traps = sum(1 for e in events if e.kind is EventKind.TRAP)
        self.trap_events[kind] += traps
        self.other_events[kind] += len(events) - traps
        self.section.setdefault(kind, section)

    @staticmethod
    def _trap_kind(event: Event) -> tuple[str, str]:
        """(kind, section) of a `trap` event."""
        fields = event.fields
        vector, insn, action = fields["vector"], fields["insn"], fields["action"]
        if action == "emulate":
            mnemonic, _, operands = insn.partition(" ")
            if mnemonic == "mov":
                dest, _, source = operands.partition(", ")
                if dest[:2] in ("cr", "dr"):
                    return f"mov {dest}, r32", "emulated"
                if source[:2] in ("cr", "dr"):
                    return f"mov r32, {source}", "emulated"
                return "mov sreg", "emulated"
            if mnemonic == "invlpg":
                return "invlpg", "emulated"
            return mnemonic, "emulated"
        if action == "deliver":
            return f"int {vector:#x}", "reflected"
        try:
            name = "#" + Vector(vector).name
        except ValueError:
            name = f"vector {vector}"
        return f"{name} reflected", "reflected"

    def _classify(self, method: str, machine: Machine, args: tuple, events: list[Event],
                  after_steps: int) -> tuple[str | None, str]:
        if method in ("on_in", "on_out"):
            return ("in" if method == "on_in" else "out"), "port I/O"
        if method == "on_cpuid":
            return "cpuid", "emulated"
        if method == "after_protected_write":
            return "page-table write: zap, re-protect", "page faults"
        if method == "boundary":
            irq = any(e.kind is EventKind.IRQ for e in events)
            return ("interrupt delivery" if irq else None), "interrupts"
        traps = [e for e in events if e.kind is EventKind.TRAP]
        if traps:
            return self._trap_kind(traps[-1])
        if method == "_on_intr" and args[1] == Vector.PF:
            if len(machine.after_step) > after_steps:
                return "#PF page-table write (let through)", "page faults"
            if any(e.kind is EventKind.PT and e.fields["op"] == "fill" for e in events):
                return "#PF shadow fill", "page faults"
            return "#PF other", "page faults"
        if method == "_on_invalid":
            return "vmcall (hypercall)", "emulated"
        if method == "_on_intr":
            return f"vector {args[1]} retried", "reflected"
        return method, "other"

    def _timed(self, method: str, original: Callable) -> Callable:
        clock = time.perf_counter_ns

        def timed(part: object, *args: object) -> object:
            machine = part if isinstance(part, Machine) else part._m   # a part's owner
            outer, events = self._current, []
            self._current = events
            after_steps = len(machine.after_step)
            start = clock()
            try:
                return original(part, *args)
            finally:
                elapsed = clock() - start
                self._current = outer
                kind, section = self._classify(method, machine, args, events, after_steps)
                self._record(kind, section, elapsed, events)
        return timed

    @contextmanager
    def patched(self) -> Iterator[None]:
        originals = {(cls, name): getattr(cls, name) for cls, name in self.WRAPPED}
        try:
            for (cls, name), original in originals.items():
                setattr(cls, name, self._timed(name, original))
            yield
        finally:
            for (cls, name), original in originals.items():
                setattr(cls, name, original)

    def attach(self, machine: Machine) -> Callable[[], None]:
        return machine.events.subscribe(self.KINDS, self.listen)

    def net_ns(self, kind: str) -> float:
        """The kind's mean handler time less what its events cost because we listen."""
        extra = self.trap_events[kind] * self.trap_ns + self.other_events[kind] * self.other_ns
        return max(0.0, (self.ns[kind] - extra) / self.calls[kind])

    def measure_event_cost(self, machine: Machine) -> None:
        """What one `trap` event and one `pt` event cost the handler that emits it with this
        profile subscribed, over what the same emit costs with nobody listening (measured
        here, on this machine, now): sets trap_ns and other_ns."""
        insn = machine.decoder.disassemble_one(b"\xfa", 0)     # cli
        emits = (lambda: machine.emit_trap(13, 0, insn, "emulate"),
                 lambda: machine._emit_pt("fill", 0, vaddr=0, paddr=0, perm="rw"))
        n = 2000

        def per_emit(emit: Callable[[], None]) -> float:
            start = time.perf_counter_ns()
            for _ in range(n):
                emit()
            return (time.perf_counter_ns() - start) / n

        # rounds with and without the subscription alternate (they share the machine's
        # noise); the median difference is kept
        self._counting = False
        costs = []
        for emit in emits:
            differences = []
            for _ in range(21):
                unsubscribe = self.attach(machine)
                listened = per_emit(emit)
                unsubscribe()
                differences.append(listened - per_emit(emit))
            costs.append(max(0.0, sorted(differences)[len(differences) // 2]))
        self._counting = True
        self.trap_bench_ns, self.other_ns = costs
        # In a hot loop a trap event costs less than inside a real trap (caches are warm):
        # the CLI/STI guest's handlers timed with and without a listener give the real cost.
        self.trap_ns = max(self.trap_bench_ns, self._trap_event_in_situ())

    @staticmethod
    def _trap_event_in_situ() -> float:
        per_trap = []
        for kinds in ((), (EventKind.TRAP,)):
            profile = TrapProfile()
            with profile.patched():
                machine = build_machine()
                machine.load(load(build("bench_clisti"), machine.ram_size))
                for kind in kinds:
                    machine.events.subscribe((kind,), lambda event: None)
                machine.run()
            hot = [k for k, n in profile.calls.items() if n >= CLISTI_ITERATIONS // 2]
            per_trap.append(sum(profile.ns[k] for k in hot) / sum(profile.calls[k] for k in hot))
        return per_trap[1] - per_trap[0]


def _linux_files(label: str):
    """The cached Debian kernel and initrd (fetched if needed), or None after a line saying
    why the benchmark is skipped."""
    from dbgvm.linux.fetch import FetchError, fetch
    try:
        return fetch(lambda text: None)
    except FetchError as exc:
        print(f"{label}skipped: no Debian i386 kernel (dbgvm linux fetch: {exc})")
        return None


def dbgvm_linux_boot(files, decompressor: bool, profile: TrapProfile | None = None
                     ) -> LinuxBoot:
    from dbgvm.boot import prepare_boot
    from dbgvm.core.loader import Module
    from dbgvm.domains import DomainConfig, Domains

    watch = PromptWatch()
    machines: list[Machine] = []

    def console(vm: int, data: bytes) -> None:
        if watch.feed(data):
            machines[0].stop_after_current(StopReason.REQUESTED, "busybox prompt")

    start = time.perf_counter()
    with profile.patched() if profile is not None else nullcontext():
        initrd = Path(files.initrd).read_bytes()
        boot = prepare_boot(str(files.kernel), LINUX_APPEND,
                            (Module(str(files.initrd), initrd, ""),), LINUX_RAM_MB, decompressor)
        domains = Domains(boot.image, 1, DomainConfig(LINUX_RAM_MB, board=boot.board,
                                                      rtc_start=LINUX_RTC_BASE), console)
        machine = domains.machines[0]
        machines.append(machine)
        unsubscribe = profile.attach(machine) if profile is not None else None
        loaded = time.perf_counter()
        try:
            stop = domains.run(LINUX_LIMIT)
        finally:
            domains.close()
        wall = time.perf_counter() - start
        if unsubscribe is not None:
            unsubscribe()
    if not watch.seen:
        raise SystemExit(f"dbgvm: no busybox prompt ({stop.reason.value}: {stop.message}); "
                         f"the console ends with:\n{watch.tail()}")
    if profile is not None:
        profile.measure_event_cost(machine)
    return LinuxBoot(wall, loaded - start, machine.icount, machine.mmu.stats)


def _linux_table(plain: LinuxBoot, timed: LinuxBoot, profile: TrapProfile) -> None:
    handled = sum(profile.ns.values()) / 1e9
    calls = sum(profile.calls.values())
    print(f"    {'handler kind':<36} {'count':>9} {'mean us':>8} {'net us':>7} "
          f"{'total s':>8} {'of run':>6}  target")
    order = ("emulated", "port I/O", "reflected", "page faults", "interrupts", "other")
    for section in order:
        kinds = [k for k in profile.calls if profile.section[k] == section]
        if not kinds:
            continue
        print(f"    {section}:")
        for kind in sorted(kinds, key=lambda k: -profile.ns[k]):
            count, ns = profile.calls[kind], profile.ns[kind]
            mean, net = ns / count / 1e3, profile.net_ns(kind) / 1e3
            goal = TARGET_TRAP_US if section == "emulated" else \
                TARGET_FILL_US if kind == "#PF shadow fill" else None
            target = "" if goal is None else \
                f"<= {goal:g} us " + ("ok" if net <= goal else "MISSED")
            print(f"      {kind:<34} {count:>9} {mean:>8.2f} {net:>7.2f} {ns / 1e9:>8.3f} "
                  f"{ns / 1e9 / timed.wall:>6.1%}  {target}")
    emulated = [k for k in profile.calls if profile.section[k] == "emulated"]
    e_calls = sum(profile.calls[k] for k in emulated)
    e_ns = sum(profile.ns[k] for k in emulated)
    if e_calls:
        mean = e_ns / e_calls / 1e3
        net = sum(profile.net_ns(k) * profile.calls[k] for k in emulated) / e_calls / 1e3
        print(f"    all emulated instructions: {e_calls} traps, mean {mean:.2f} us, net "
              f"{net:.2f} us (target <= {TARGET_TRAP_US:g} us: "
              f"{'ok' if net <= TARGET_TRAP_US else 'MISSED'})")
    stats = plain.stats
    causes = ", ".join(f"{n} {c}" for c, n in profile.flush_causes.most_common())
    print(f"    shadow: {stats.fills} fills, {stats.zaps} zaps, {stats.dirty} dirty-bit faults, "
          f"{stats.invlpgs} invlpgs, {stats.reflects} #PF reflected; {stats.switches} address-"
          f"space switches ({stats.reused} reused a kept shadow; by cause: {causes}); "
          f"{profile.irqs} interrupts delivered")
    same = "the same" if timed.icount == plain.icount else f"DIFFERENT ({timed.icount})"
    print(f"    instrumentation: the timed boot took {timed.wall:.1f} s, "
          f"{timed.wall / plain.wall:.2f}x the plain one ({same} instruction count); its "
          f"{calls} handler calls took {handled:.1f} s ({handled / timed.wall:.0%} of it).\n"
          f"    Listening to trap/pt/irq events costs the handlers {profile.trap_ns / 1e3:.2f} us "
          f"per trap event (CLI/STI guest timed with and without a listener; "
          f"{profile.trap_bench_ns / 1e3:.2f} us in a hot loop)\n"
          f"    and {profile.other_ns / 1e3:.2f} us per pt/irq event (hot loop), measured now: "
          f"'mean' includes it and the timing wrapper, 'net' subtracts it.\n"
          f"    Neither includes Unicorn's exit to and re-entry from each hook (the trap round "
          f"trip figure does).")


def bench_linux(repeat: int, dbgvm_repeat: int) -> None:
    files = _linux_files("linux boot      ")
    if files is None:
        return
    qemu = shutil.which("qemu-system-i386") is not None
    print(f"linux boot      {files.release}, '{LINUX_APPEND}' -m {LINUX_RAM_MB}, to the busybox "
          f"prompt after 'Run /init' (dbgvm: best of {dbgvm_repeat}, from reading the kernel; "
          f"QEMU TCG: best of {repeat}, from starting the process)")
    results = []
    for decompressor in (False, True):
        name = "--boot-decompressor" if decompressor else "vmlinux unpacked by dbgvm"
        # QEMU's reference is measured next to each dbgvm boot (noisy machines)
        theirs = min(qemu_boot(files) for _ in range(repeat)) if qemu else None
        plain = min((dbgvm_linux_boot(files, decompressor) for _ in range(dbgvm_repeat)),
                    key=lambda boot: boot.wall)
        run = plain.wall - plain.load
        line = (f"  {name:<26} dbgvm {plain.wall:6.1f} s ({plain.load:.1f} s loading), "
                f"{plain.icount / 1e9:.2f} G insns, {plain.icount / run / 1e6:.1f} MIPS")
        if theirs is not None:
            ratio = plain.wall / theirs
            line += (f"   QEMU {theirs:5.1f} s   ratio {ratio:.1f} (target <= {TARGET_RATIO:g}: "
                     f"{'ok' if ratio <= TARGET_RATIO else 'MISSED'})")
        else:
            line += "   (QEMU not installed: no reference)"
        print(line, flush=True)
        results.append((name, plain))
    for name, plain in results:
        profile = TrapProfile()
        timed = dbgvm_linux_boot(files, name == "--boot-decompressor", profile)
        print(f"  {name}: the VMM's handlers, timed (a second, instrumented boot)")
        _linux_table(plain, timed, profile)


# -- Linux record/replay -----------------------------------------------------------------------
LINUX_TYPED = b"ls /proc | wc -l\npoweroff\n"     # typed while the kernel boots; read at the prompt


def _timed_cli(*args: str, stdin: bytes = b"") -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    repo = str(Path(__file__).resolve().parent.parent)       # this checkout's dbgvm
    done = subprocess.run([sys.executable, "-m", "dbgvm", *args], input=stdin,
                          capture_output=True, env={**os.environ, "PYTHONPATH": repo})
    return time.perf_counter() - start, done


def bench_linux_record(repeat: int) -> None:
    from dbgvm.record.replay import Replay
    from dbgvm.record.reverse import ReverseEngine
    from dbgvm.record.trace import read

    files = _linux_files("linux record    ")
    if files is None:
        return
    boot = ("run", str(files.kernel), "--initrd", str(files.initrd), "--append", LINUX_APPEND,
            "-m", str(LINUX_RAM_MB), "--rtc-base", str(LINUX_RTC_BASE), "--batch")
    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, "linux.trace")
        plain = min(_timed_cli(*boot, stdin=LINUX_TYPED)[0] for _ in range(repeat))
        recorded, done = _timed_cli(*boot, "--record", trace, stdin=LINUX_TYPED)
        if done.returncode != 0:
            raise SystemExit(f"linux record: dbgvm run --record failed: {done.stderr[-500:]!r}")
        replayed, checked = _timed_cli("replay", trace, "--batch")
        if b"replay identical to the recording" not in checked.stdout + checked.stderr:
            raise SystemExit(f"linux record: the replay diverged: {checked.stderr[-500:]!r}")
        size = os.path.getsize(trace)
        parsed = read(trace)
        end = parsed.ends[0]
        replay = Replay(parsed, lambda vm, data: None)
        try:
            engine = ReverseEngine(replay.domains.machines[0], end.icount)
            forward, latencies = _forward_then_step_back(engine)
        finally:
            replay.close()
    print(f"linux record    boot + typed input to poweroff, {end.icount / 1e6:.0f} M insns, "
          f"{end.events} events, {len(parsed.inputs)} inputs: --record ratio "
          f"{recorded / plain:.2f} to a plain run ({recorded:.1f} s vs {plain:.1f} s), trace "
          f"{size / 2**20:.1f} MiB; replay+verify {replayed:.1f} s: ratio "
          f"{replayed / recorded:.2f} to recording")
    print(f"linux reverse   reverse-stepi at the end of that replay: {max(latencies):.2f} s worst "
          f"of 5 (mean {sum(latencies) / 5:.2f} s; forward with snapshots {forward:.1f} s, "
          f"{len(engine.store.snapshots)} snapshots)")


NET_PINGS = 5
NET_CHUNK = 20_000_000              # instructions of VM 0 between looks at the consoles
NET_SUMMARY = re.compile(rb"round-trip min/avg/max = ([\d.]+)/([\d.]+)/([\d.]+) ms")


def bench_linux_net() -> None:
    from dbgvm.boot import prepare_boot
    from dbgvm.core.loader import Module
    from dbgvm.domains import DomainConfig, Domains

    files = _linux_files("linux net       ")
    if files is None:
        return
    outputs = (bytearray(), bytearray())
    boot = prepare_boot(str(files.kernel), LINUX_APPEND,
                        (Module(str(files.initrd), Path(files.initrd).read_bytes(), ""),),
                        LINUX_RAM_MB, False)
    domains = Domains(boot.image, 2, DomainConfig(LINUX_RAM_MB, board=boot.board,
                                                  rtc_start=LINUX_RTC_BASE),
                      lambda vm, data: outputs[vm].extend(data))

    def run_until(vm: int, pattern: re.Pattern[bytes], start: int) -> re.Match[bytes]:
        ran = 0
        while (found := pattern.search(outputs[vm], start)) is None:
            stop = domains.run(NET_CHUNK)
            ran += NET_CHUNK
            if stop.reason is not StopReason.MAX_INSNS or ran > LINUX_LIMIT:
                tail = outputs[vm][-1500:].decode("utf-8", "replace")
                raise SystemExit(f"dbgvm: {pattern.pattern!r} not seen on vm{vm} "
                                 f"({stop.reason.value}); its console ends with:\n{tail}")
        return found

    try:
        start = time.perf_counter()
        for vm in (0, 1):
            run_until(vm, PROMPT, 0)
        booted = time.perf_counter() - start
        mark = len(outputs[0])
        domains.console_input(0, f"ping -c {NET_PINGS} 10.0.2.16\n".encode())
        start, cpu = time.perf_counter(), time.process_time()
        summary = run_until(0, NET_SUMMARY, mark)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        domains.close()
    low, avg, high = (float(ms) for ms in summary.groups())
    print(f"linux net       two VMs to their prompts in {booted:.1f} s; ping -c {NET_PINGS} "
          f"VM 0 -> VM 1: round trip {low:.3f}/{avg:.3f}/{high:.3f} ms min/avg/max virtual, "
          f"{wall / NET_PINGS:.2f} s wall a ping ({wall:.1f} s in all, {cpu:.1f} s of it on "
          f"the CPU)")


LINUX_BLK_MB = 32
LINUX_BLK_READS = (("page cache", ""), ("O_DIRECT", " iflag=direct"))
UPTIME = re.compile(r"^(\d+\.\d+) \d+\.\d+\r?$", re.MULTILINE)


class LinuxConsole:
    """A Linux VM in this process with a disk: commands typed on ttyS0, each timed in wall
    seconds (from typing it to the next prompt) and by the guest's clock."""

    def __init__(self, files, disk: str) -> None:
        from dbgvm.boot import prepare_boot
        from dbgvm.core.loader import Module
        from dbgvm.domains import DomainConfig, Domains

        self.output = bytearray()
        initrd = Path(files.initrd).read_bytes()
        boot = prepare_boot(str(files.kernel), LINUX_APPEND,
                            (Module(str(files.initrd), initrd, ""),), LINUX_RAM_MB, False)
        self.domains = Domains(boot.image, 1, DomainConfig(LINUX_RAM_MB, disk, board=boot.board,
                                                           rtc_start=LINUX_RTC_BASE),
                               lambda vm, data: self.output.extend(data))

    def wait(self, start: int) -> None:
        """Run until the prompt shows after offset ``start`` of the console."""
        ran = 0
        while PROMPT.search(self.output, start) is None:
            if ran >= LINUX_LIMIT:
                raise SystemExit("dbgvm: no busybox prompt; the console ends with:\n"
                                 + self.output[-1500:].decode("utf-8", "replace"))
            stop = self.domains.run(20_000_000)
            ran += 20_000_000
            if stop.reason.value != "max-insns":
                raise SystemExit(f"dbgvm: Linux stopped: {stop.message}")

    def timed(self, line: str) -> tuple[float, float, str]:
        """Wall seconds, guest seconds (/proc/uptime read by the guest around it) and the
        output of ``line``. The guest's clock, not the VMM's: after the prompt the guest
        idles, and an idle guest's virtual time jumps to its next timer."""
        start = len(self.output)
        begin = time.perf_counter()
        self.domains.console_input(0, f"cat /proc/uptime; {line}; cat /proc/uptime\n".encode())
        self.wait(start)
        wall = time.perf_counter() - begin
        output = self.output[start:].decode("utf-8", "replace")
        uptimes = [float(up) for up in UPTIME.findall(output)]
        if len(uptimes) != 2:
            raise SystemExit(f"no /proc/uptime before and after {line!r}:\n{output}")
        return wall, uptimes[1] - uptimes[0], output


def host_read_whole(path: str) -> float:
    fd = os.open(path, os.O_RDONLY)
    start = time.perf_counter()
    while os.read(fd, 1 << 20):
        pass
    elapsed = time.perf_counter() - start
    os.close(fd)
    return elapsed


def bench_linux_blk(repeat: int) -> None:
    files = _linux_files("linux blk read  ")
    if files is None:
        return
    with tempfile.NamedTemporaryFile(suffix=".img") as image:
        image.write(os.urandom(LINUX_BLK_MB << 20))
        image.flush()
        host = LINUX_BLK_MB / min(host_read_whole(image.name) for _ in range(repeat))
        vm = LinuxConsole(files, image.name)
        try:
            vm.wait(0)
            print(f"linux blk read  {files.release}, dd bs=1M of a {LINUX_BLK_MB} MiB "
                  f"/dev/halblk0 (best of {repeat}); the host reads the file at "
                  f"{host:.0f} MB/s")
            for name, flags in LINUX_BLK_READS:
                runs = [vm.timed(f"dd if=/dev/halblk0 of=/dev/null bs=1M{flags}")
                        for _ in range(repeat)]
                failed = [out for *_, out in runs if f"{LINUX_BLK_MB}+0 records in" not in out]
                if failed:
                    raise SystemExit(f"dd in the guest failed:\n{failed[0]}")
                wall, guest = min(run[:2] for run in runs)
                print(f"  {name:<10} {LINUX_BLK_MB / wall:6.1f} MB/s wall ({wall:.2f} s), "
                      f"{LINUX_BLK_MB / guest:6.1f} MB/s guest clock ({guest:.3f} s): "
                      f"ratio to the host {LINUX_BLK_MB / wall / host:.4f}", flush=True)
        finally:
            vm.domains.close()


BENCHMARKS = ("speed", "traps", "fills", "cr3", "breakpoints", "hal-block", "hal-calls",
              "record", "reverse", "gdb", "linux", "linux-record", "linux-net",
              "linux-blk")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best is kept)")
    parser.add_argument("--linux-repeat", type=int, default=1,
                        help="dbgvm Linux boots per configuration (best is kept; each takes "
                        "about a minute)")
    parser.add_argument("--only", metavar="NAMES",
                        help=f"comma-separated benchmarks to run ({', '.join(BENCHMARKS)})")
    args = parser.parse_args()
    only = set(BENCHMARKS)
    if args.only:
        only = {name.strip() for name in args.only.split(",") if name.strip()}
        unknown = only - set(BENCHMARKS)
        if unknown:
            parser.error(f"unknown benchmark {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(BENCHMARKS)})")
    runs = {
        "speed": lambda: bench_speed(args.repeat),
        "traps": lambda: bench_traps(args.repeat),
        "fills": lambda: bench_shadow_fills(args.repeat),
        "cr3": lambda: bench_cr3_switch(args.repeat),
        "breakpoints": lambda: bench_breakpoints(args.repeat),
        "hal-block": lambda: bench_hal_block(args.repeat),
        "hal-calls": lambda: bench_hal_calls(args.repeat),
        "record": lambda: bench_record_replay(args.repeat),
        "reverse": bench_reverse_stepi,
        "gdb": bench_gdb_stepi,
        "linux": lambda: bench_linux(args.repeat, args.linux_repeat),
        "linux-record": lambda: bench_linux_record(args.linux_repeat),
        "linux-net": bench_linux_net,
        "linux-blk": lambda: bench_linux_blk(args.repeat),
    }
    for name in BENCHMARKS:
        if name in only:
            runs[name]()

if __name__ == "__main__":
    main()
