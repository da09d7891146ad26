"""A kernel crash, recorded and followed backwards: the user types `echo c > /proc/sysrq-trigger`
in the busybox shell of a recorded run, dbgvm stops that run where the kernel panics, and gdb
(given no file) replays the recording to the panic and goes back to the instruction in
sysrq_handle_crash that called panic().

Expected values come from the kernel (its console text, Linux 6.1's drivers/tty/sysrq.c:
sysrq_handle_crash calls panic("sysrq triggered crash\\n")) and from gdb's own disassembly,
never from dbgvm's output alone. One recorded boot (~25 s) and one replay of it under gdb.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gdb_harness import Gdb, free_port, wait_listening

REPO = Path(__file__).resolve().parent.parent
APPEND = "console=ttyS0 cryptomgr.notests"
PANIC_LINE = re.compile(r'^dbgvm: guest-panic: kernel panic "sysrq triggered crash" called from '
                        r"sysrq_handle_crash\+0x[0-9a-f]+$", re.M)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}     # this checkout's dbgvm


@pytest.fixture(scope="module")
def crash_trace(linux_kernel, tmp_path_factory):
    """`dbgvm run --batch --record` of a boot whose shell is told to crash the kernel."""
    trace = tmp_path_factory.mktemp("crash") / "crash.trace"
    run = subprocess.run(
        [sys.executable, "-m", "dbgvm", "run", str(linux_kernel.kernel), "--initrd",
         str(linux_kernel.initrd), "--append", APPEND, "--batch", "--record", str(trace)],
        input=b"echo c > /proc/sysrq-trigger\n", capture_output=True, env=_env(), cwd=REPO,
        timeout=600)
    return trace, run


def test_a_kernel_panic_ends_the_run_with_one_line(crash_trace):
    trace, run = crash_trace
    console = run.stdout.decode("utf-8", "replace")
    errors = run.stderr.decode("utf-8", "replace")
    assert "sysrq: Trigger a crash" in console, console[-2000:]   # the kernel's own words
    assert PANIC_LINE.search(errors), errors
    assert run.returncode == 1                                     # QEMU's exit-failure
    # stopped before panic() printed anything: the kernel's panic banner never appeared
    assert "Kernel panic - not syncing" not in console
    assert trace.stat().st_size > 0


def test_gdb_replays_to_the_panic_and_goes_back_to_the_caller(crash_trace):
    trace, _ = crash_trace
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dbgvm", "replay", str(trace), "--gdb",
                             f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=_env(),
                            cwd=REPO, text=True)
    gdb = None
    try:
        wait_listening(port, proc, timeout=120)
        gdb = Gdb(None, port, connect_timeout=60)
        responses = gdb.mi.write("-exec-continue", timeout_sec=1, raise_error_on_timeout=False)
        responses = gdb._collect(responses, {"stopped"}, 600)
        said = "".join(r["payload"] for r in responses if r.get("type") == "target")
        stop = next(r["payload"] for r in responses if r.get("message") == "stopped")
        assert stop["frame"]["func"] == "panic", stop
        # gdb says "No more reverse-execution history"; dbgvm says why the recording ended
        assert re.search(r'the recording ended with guest-panic: kernel panic "sysrq triggered '
                         r'crash" called from sysrq_handle_crash', said), said
        # one instruction back: the call in sysrq_handle_crash, as gdb itself decodes it
        start = time.monotonic()
        back = gdb.run("-exec-step-instruction --reverse", timeout=120)
        latency = time.monotonic() - start
        assert back["frame"]["func"] == "sysrq_handle_crash", back
        insn = gdb.console("x/i $pc")
        assert re.search(r"call\s+0x[0-9a-f]+ <panic>", insn), insn
        call_site = gdb.value("$pc")
        # and from the panic again, a breakpoint there and reverse-continue find the same place
        assert gdb.run("-exec-continue", timeout=120)["frame"]["func"] == "panic"
        gdb.console(f"break *{call_site:#x}")
        hit = gdb.run("-exec-continue --reverse", timeout=300)
        assert hit["reason"] == "breakpoint-hit", hit
        assert gdb.value("$pc") == call_site
        print(f"reverse-stepi at the end of a {trace.stat().st_size >> 20} MiB Linux "
              f"recording: {latency:.2f} s")
    finally:
        if gdb is not None:
            gdb.close()
        proc.kill()
        proc.wait()
