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
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from unicorn import UC_ARCH_X86, UC_MODE_32, Uc, UcError  # noqa: E402
from unicorn.x86_const import UC_X86_REG_EIP, UC_X86_REG_ESP  # noqa: E402

from guest_build import build  # noqa: E402

from dbgvm.core.loader import load  # noqa: E402
from dbgvm.core.machine import QUANTUM, Machine  # noqa: E402


CLISTI_ITERATIONS = 50000  # as in tests/guests/bench_clisti.S


def run_dbgvm(name: str) -> tuple[Machine, float]:
    machine = Machine()
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
        machine = Machine()
        machine.load(image)
        if with_bps:
            for addr in spots:
                machine.debug.add_breakpoint(addr)
        start = time.perf_counter()
        machine.run()
        elapsed = time.perf_counter() - start
        if with_bps:
            armed = len(machine.armed_breakpoints)
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


def bench_reverse_stepi() -> None:
    """(A machine without outside inputs replays itself: the engine needs no trace here.)"""
    from dbgvm.record.reverse import ReverseEngine
    fresh = Machine()
    fresh.load(load(build("bench_compute"), fresh.ram_size))
    engine = ReverseEngine(fresh, RECORD_INSNS)
    start = time.perf_counter()
    engine.run()
    forward = time.perf_counter() - start
    latencies = []
    for _ in range(5):
        start = time.perf_counter()
        engine.step_back()
        latencies.append(time.perf_counter() - start)
    print(f"reverse-stepi   {max(latencies) * 1e3:6.1f} ms worst of 5 (mean "
          f"{sum(latencies) / 5 * 1e3:.1f} ms) at icount {fresh.icount} of a "
          f"{RECORD_INSNS}-instruction run (forward with snapshots: {forward:.3f} s, "
          f"{len(engine.store.snapshots)} snapshots; target <= 200 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best is kept)")
    args = parser.parse_args()
    bench_speed(args.repeat)
    bench_traps(args.repeat)
    bench_shadow_fills(args.repeat)
    bench_cr3_switch(args.repeat)
    bench_breakpoints(args.repeat)
    bench_hal_block(args.repeat)
    bench_hal_calls(args.repeat)
    bench_record_replay(args.repeat)
    bench_reverse_stepi()
    bench_gdb_stepi()


if __name__ == "__main__":
    main()
