"""Real gdb (Debian's gdb 13) against the dbgvm stub, driven through gdb/MI with pygdbmi."""
from __future__ import annotations

import shutil
import time

import pytest
from gdb_harness import Gdb, free_port, start_dbgvm
from guest_build import build

from dbgvm.core.loader import load

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None,
                                reason="gdb is not installed (apt-get install gdb)")


def symbols(name: str) -> dict[str, int]:
    return load(build(name), 64 << 20).symbols


@pytest.fixture
def session(request):
    """(gdb, dbgvm process, symbols) for the guest named by the test's parameter."""
    name = getattr(request, "param", "basics")
    kernel = build(name)
    port = free_port()
    proc = start_dbgvm(kernel, port)
    gdb = Gdb(kernel, port)
    yield gdb, proc, symbols(name)
    gdb.close()
    proc.kill()
    proc.wait()


def test_break_on_symbol_then_registers_as_the_guest_sees_them(session):
    gdb, _, sym = session
    assert gdb.value("$eip") == sym["_start"]
    gdb.console("break de_insn")
    stop = gdb.run("-exec-continue")
    assert stop["reason"] == "breakpoint-hit"
    assert int(stop["frame"]["addr"], 16) == sym["de_insn"]
    # virtual CS/SS (RPL 0 as the kernel loaded them), EFLAGS as the guest sees them
    assert gdb.value("$cs") == 0x08 and gdb.value("$ss") == 0x10
    assert gdb.value("$eflags") & 0x200 == 0          # VIF still clear here
    text = gdb.console("info registers cr0 cr3 cpl vif gdtr_base gdtr_limit idtr_limit tr")
    assert "cr0" in text and "vif" in text
    assert gdb.value("$cr0") == 0x11 and gdb.value("$cpl") == 0
    assert gdb.value("$gdtr_base") == sym["gdt"]
    assert gdb.value("$idtr_limit") == 256 * 8 - 1
    assert gdb.value("$tr") == 0x28
    assert gdb.value("$eax") == 7 and gdb.value("$ecx") == 0


def test_stepi_and_nexti(session):
    gdb, _, sym = session
    stop = gdb.run("-exec-step-instruction")
    assert int(stop["frame"]["addr"], 16) == sym["_start"] + 5     # mov $stack_top, %esp
    gdb.console("break de_handler")
    gdb.run("-exec-continue")
    stop = gdb.run("-exec-next-instruction")                      # mov $de_msg, %esi
    assert int(stop["frame"]["addr"], 16) == sym["de_handler"] + 5
    assert gdb.value("$esi") == sym["de_msg"]
    # Over "call print_string" gdb cannot tell a call from a jump in these label-only asm
    # functions and stops at the callee's first instruction, as it does with QEMU's stub
    # (test_same_session_as_qemu compares the two).
    stop = gdb.run("-exec-next-instruction")
    assert int(stop["frame"]["addr"], 16) == sym["print_string"]


def test_stepping_a_faulting_instruction_enters_its_handler(session):
    gdb, _, sym = session
    gdb.console("break de_insn")
    gdb.run("-exec-continue")
    stop = gdb.run("-exec-step-instruction")
    assert int(stop["frame"]["addr"], 16) == sym["de_handler"]


def test_watch_rwatch_awatch_report_old_and_new_values(session):
    gdb, _, sym = session
    gdb.console("watch *(int*)&ticks")
    stop = gdb.run("-exec-continue")
    assert stop["reason"] == "watchpoint-trigger"
    assert stop["value"] == {"old": "0", "new": "1"}
    gdb.console("delete")
    gdb.console("rwatch *(int*)&ticks")
    stop = gdb.run("-exec-continue")                     # cmpl $3, ticks in the wait loop
    assert stop["reason"] == "read-watchpoint-trigger"
    gdb.console("delete")
    gdb.console("awatch *(int*)&ticks")
    stop = gdb.run("-exec-continue")
    assert stop["reason"] == "access-watchpoint-trigger"


def test_hbreak(session):
    gdb, _, sym = session
    gdb.console("hbreak timer_handler")
    stop = gdb.run("-exec-continue")
    assert stop["reason"] == "breakpoint-hit"
    assert int(stop["frame"]["addr"], 16) == sym["timer_handler"]
    assert gdb.value("$eflags") & 0x200 == 0          # entered through an interrupt gate


def test_write_registers_and_memory(session):
    gdb, _, sym = session
    gdb.console("break de_insn")
    gdb.run("-exec-continue")
    gdb.console("set $ecx = 7")                       # the DIV no longer faults
    gdb.console("set {int}&ticks = 41")
    assert gdb.value("*(int*)&ticks") == 41
    assert gdb.value("$ecx") == 7
    gdb.console("set $eflags = $eflags | 0x200")      # writes the virtual IF
    assert gdb.value("$vif") == 1
    gdb.console("set $eflags = $eflags & ~0x200")
    stop = gdb.run("-exec-step-instruction")
    assert int(stop["frame"]["addr"], 16) == sym["de_insn"] + 2   # no #DE this time
    assert gdb.value("$eax") == 1                     # 7 / 7


@pytest.mark.parametrize("session", ["spin"], indirect=True)
def test_ctrl_c_stops_a_running_guest(session):
    gdb, _, sym = session
    gdb.mi.write("-exec-continue", timeout_sec=5, raise_error_on_timeout=False)
    time.sleep(0.5)
    stop = gdb.interrupt()
    assert stop.get("signal-name") == "SIGINT"
    assert gdb.value("*(int*)&counter") > 1000


def test_detach_then_a_new_gdb_attaches_to_the_paused_vm(session):
    gdb, proc, sym = session
    gdb.console("break de_insn")
    gdb.run("-exec-continue")
    gdb.console("detach")
    gdb.close()
    port = int(proc.args[proc.args.index("--gdb") + 1].split(":")[1])
    again = Gdb(build("basics"), port)
    try:
        assert again.value("$eip") == sym["de_insn"]
        again.console("kill")
        assert proc.wait(timeout=20) == 0
    finally:
        again.close()


def test_kill_ends_the_run(session):
    gdb, proc, _ = session
    gdb.console("kill")
    assert proc.wait(timeout=20) == 0
    assert b"killed by gdb" in proc.stderr.read()


def test_guest_exit_is_reported_as_process_exit(session):
    gdb, proc, _ = session
    stop = gdb.run("-exec-continue")
    assert stop["reason"] == "exited"
    assert int(stop["exit-code"], 8) == 33


def test_after_the_guest_exit_dbgvm_exits_with_its_status_as_qemu(session):
    """Once gdb was told the guest exited it disconnects; the stub must not linger serving
    a VM that has ended (a new gdb got "The target is not running"): the process exits with
    the guest's status, as QEMU does."""
    gdb, proc, _ = session
    stop = gdb.run("-exec-continue")
    assert stop["reason"] == "exited"
    assert proc.wait(timeout=20) == 33
    said = proc.stderr.read().decode()
    assert "debug-exit" in said and "status 33" in said, said


def test_monitor_commands_through_gdb(session):
    gdb, _, sym = session
    assert "catch [vif|trap|irq|pt|desc|hal|syscall [ARG]]" in gdb.console("monitor help")
    assert "event breakpoint 1" in gdb.console("monitor catch vif")
    stop = gdb.run("-exec-continue")
    assert stop.get("signal-name") == "SIGTRAP"
    # stopped right after the STI that set the virtual IF
    assert gdb.value("$eip") == sym["wait"]
    assert gdb.value("$vif") == 1
    info = gdb.console("monitor info")
    assert "cause=sti" in info and "vif 1" in info
    assert "wrote 3 bytes" in gdb.console("monitor setp 0x5000 1 2 0xff")
    assert "00005000: 01 02 ff" in gdb.console("monitor xp 0x5000 3")
    assert gdb.value("*(unsigned char*)0x5002") == 0xFF       # paging off: virtual = physical
    assert gdb.console("monitor frobnicate").startswith("error: unknown command")


def test_monitor_commands_that_would_move_the_guest_behind_gdbs_back_are_refused(session):
    """gdb caches the registers: `monitor step` moved EIP and gdb went on showing the old one
    (until `maint flush register-cache`). Such commands are refused with one line naming
    gdb's own command; what gdb shows stays what the VM is. `monitor quit` says what to do."""
    gdb, proc, sym = session
    gdb.console("break de_insn")
    gdb.run("-exec-continue")
    assert gdb.value("$eip") == sym["de_insn"]
    for command, instead in (("step", "'stepi'"), ("continue", "'continue'"),
                             ("set eip = wait", "'set $REG = VALUE'")):
        said = gdb.console(f"monitor {command}")
        assert said.startswith(f"error: '{command.split()[0]}' would change the guest "
                               "behind gdb's back"), said
        assert f"use gdb's {instead}" in said
        assert gdb.value("$eip") == sym["de_insn"]
        assert "eip 0x%08x" % sym["de_insn"] in gdb.console("monitor info")   # the truth
    said = gdb.console("monitor quit")
    assert said.startswith("error: 'quit' does not end a gdb session: use gdb's 'kill'"), said
    assert proc.poll() is None and gdb.value("$eip") == sym["de_insn"]
    gdb.run("-exec-step-instruction")               # gdb's own step works and is seen
    assert "eip 0x%08x" % gdb.value("$eip") in gdb.console("monitor info")


def test_a_second_debugger_is_refused_while_one_is_attached(session):
    import socket

    from dbgvm.gdbstub import rsp
    gdb, proc, _ = session
    port = int(proc.args[proc.args.index("--gdb") + 1].split(":")[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as other:
        other.sendall(rsp.encode(b"qSupported"))
        data = b""
        while b"#" not in data:
            chunk = other.recv(4096)
            if not chunk:
                break
            data += chunk
    assert b"another debugger is already attached" in data
    assert gdb.value("$eip")                   # the first session is unaffected


def test_gdb_addresses_default_to_loopback():
    from dbgvm.gdbstub.server import parse_address
    assert parse_address("1234") == ("127.0.0.1", 1234)
    assert parse_address(":1234") == ("127.0.0.1", 1234)
    assert parse_address("0.0.0.0:99") == ("0.0.0.0", 99)
    for bad in ("abc", "70000", "host:"):
        with pytest.raises(ValueError):
            parse_address(bad)
