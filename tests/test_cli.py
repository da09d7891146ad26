"""The `dbgvm run` command: exit statuses, one-line errors, traces, and bad kernel files."""
from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest
from guest_build import build


def dbgvm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dbgvm", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_console_script_is_installed():
    proc = subprocess.run(["dbgvm", "run", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--max-insns" in proc.stdout


def test_debug_exit_status_and_console(tmp_path):
    proc = dbgvm("run", str(build("basics")), "--batch")
    assert proc.returncode == 33
    assert proc.stdout.startswith("hello from basics\n")
    assert proc.stderr == ""


def _symbol(name: str, guest: str = "stops") -> int:
    from dbgvm.core.loader import load
    return load(build(guest), 64 << 20).symbols[name]


@pytest.mark.parametrize("mode, status, reason, needle, symbol", [
    ("h", 0, "halted", "HLT with the virtual IF clear", "halt_insn"),
    ("t", 0, "triple-fault", "guest reset: triple fault", "triple_insn"),
    ("u", 1, "unsupported", "16-bit IRET", "iret16_insn"),
    ("m", 1, "bad-memory", "outside guest RAM", None),
    ("g", 1, "unsupported", "task_gate", "gate_insn"),
    ("p", 1, "bad-memory", "map 0x300000 to physical 0x7f000000, outside guest RAM",
     "paged_insn"),
])
def test_stops_give_one_line_with_address_and_instruction(mode, status, reason, needle, symbol):
    proc = dbgvm("run", str(build("stops")), "--batch", "--append", f"mode={mode}")
    assert proc.returncode == status
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"dbgvm: {reason}: ")
    assert needle in lines[0]
    if symbol:
        assert f"{_symbol(symbol):#010x}" in lines[0]
    if mode == "m":
        assert "0x7f000000" in lines[0] and "mov dword ptr [0x7f000000], 1" in lines[0]


def test_trace_out_writes_json_lines(tmp_path):
    out = tmp_path / "trace.jsonl"
    proc = dbgvm("run", str(build("basics")), "--batch", "--trace-out", str(out),
                 "--trace", "vif,irq,stop")
    assert proc.returncode == 33
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert {e["kind"] for e in events} == {"vif", "irq", "stop"}
    for event in events:
        assert isinstance(event["icount"], int) and isinstance(event["eip"], int)
    assert [e["icount"] for e in events] == sorted(e["icount"] for e in events)
    assert events[-1]["kind"] == "stop" and events[-1]["reason"] == "debug-exit"
    # --trace prints the same events readably on stderr
    assert len(proc.stderr.splitlines()) == len(events)


def test_unknown_trace_kind_is_refused():
    proc = dbgvm("run", str(build("basics")), "--trace", "vif,bogus")
    assert proc.returncode == 2
    assert "unknown event kind 'bogus'" in proc.stderr


def test_max_insns_stops_the_guest():
    proc = dbgvm("run", str(build("basics")), "--batch", "--max-insns", "100")
    assert proc.returncode == 0
    assert "max-insns" in proc.stderr and "100 instructions" in proc.stderr


def _elf32(tmp_path, paddr: int, memsz: int, klass: int = 1, machine: int = 3):
    """A minimal ELF with one PT_LOAD segment at ``paddr``."""
    ehdr = struct.pack("<4sBBBB8xHHIIIIIHHHHHH", b"\x7fELF", klass, 1, 1, 0, 2, machine, 1,
                       paddr, 52, 0, 0, 52, 32, 1, 40, 0, 0)
    phdr = struct.pack("<8I", 1, 84, paddr, paddr, 4, memsz, 7, 0x1000)
    path = tmp_path / "k.elf"
    path.write_bytes(ehdr + phdr + b"\xf4\xf4\xf4\xf4")
    return path


def _raw(tmp_path, data: bytes):
    path = tmp_path / "k.bin"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda t: _raw(t, b"MZ not an elf"), "not an ELF file"),
    (lambda t: _elf32(t, 0x100000, 4, klass=2), "not a 32-bit ELF"),
    (lambda t: _elf32(t, 0x100000, 4, machine=62), "not an i386 ELF"),
    (lambda t: _elf32(t, 0x8000000, 4), "outside guest RAM"),
    (lambda t: _elf32(t, 0xFFC01000, 4), "monitor hole"),
    (lambda t: t / "missing.elf", "cannot read"),
])
def test_bad_kernel_files_exit_2_with_one_line(tmp_path, make, message):
    path = make(tmp_path)
    proc = dbgvm("run", str(path), "--batch")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0] and str(path) in lines[0]


def test_plain_elf_without_multiboot_runs(tmp_path):
    proc = dbgvm("run", str(_elf32(tmp_path, 0x100000, 4)), "--batch")
    # hlt with VIF clear at the entry point: ends, status 0, the message names the address
    assert proc.returncode == 0
    assert "HLT with the virtual IF clear at eip 0x00100000" in proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["--disk-writable"], "--disk-writable needs --disk FILE"),
    (["--vms", "0"], "--vms must be 1..16"),
    (["--vms", "17"], "--vms must be 1..16"),
    (["--disk", "/nonexistent/disk.img"], "/nonexistent/disk.img: cannot open"),
    (["--pcap", "/nonexistent/dir/x.pcap"], "/nonexistent/dir/x.pcap"),
])
def test_bad_device_options_are_one_line_usage_errors(args, needle):
    proc = dbgvm("run", str(build("basics")), "--batch", *args)
    assert proc.returncode == 2
    assert needle in proc.stderr and proc.stderr.count("\n") == 1
    assert proc.stdout == ""


def test_disk_writable_needs_a_single_vm(tmp_path):
    image = tmp_path / "d.img"
    image.write_bytes(bytes(1024))
    proc = dbgvm("run", str(build("basics")), "--batch", "--disk", str(image),
                 "--disk-writable", "--vms", "2")
    assert proc.returncode == 2 and "single VM" in proc.stderr


def test_several_vms_prefix_console_lines_and_trace_records(tmp_path):
    trace = tmp_path / "t.jsonl"
    proc = dbgvm("run", str(build("basics")), "--batch", "--vms", "2", "--trace-out",
                 str(trace), "--trace", "stop")
    assert proc.returncode == 33                      # VM 0's debug exit ends the run
    assert proc.stdout.startswith("[vm0] hello from basics\n")
    stops = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [s["vm"] for s in stops if s["kind"] == "stop"][-1] == 0


def test_batch_script_drives_the_bundled_guest(tmp_path):
    script = tmp_path / "cmds"
    script.write_text("# type into the guest, run it to its end\nsend echo from-the-script\n"
                      "send poweroff\ncontinue\n")
    proc = dbgvm("run", "--batch", "-x", str(script), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "$ from-the-script\n" in proc.stdout
    assert "poweroff: guest powered off" in proc.stdout


def test_batch_script_error_is_one_line_with_a_caret_and_status_1(tmp_path):
    script = tmp_path / "cmds"
    script.write_text("info\nbreak +\ninfo\n")
    proc = dbgvm("run", str(build("basics")), "--batch", "-x", str(script))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    error = next(i for i, line in enumerate(lines) if "error" in line)
    assert lines[error].startswith(f"{script}:2: ")
    assert lines[error + 1].strip() == "^"
    assert proc.stdout.count("vm 0 of 1") == 1          # the third command did not run


# -- output errors are one line, never a traceback ------------------------------------------

@pytest.mark.skipif(not __import__("os").path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("option, status", [
    ("--trace-out", 1),          # fails while the guest runs (or when the run closes it)
    ("--record", 1),
    ("--pcap", 2),               # its header fails before the guest starts
])
def test_unwritable_outputs_give_one_line_naming_the_file(option, status):
    proc = dbgvm("run", str(build("basics")), "--batch", option, "/dev/full")
    assert "Traceback" not in proc.stderr
    assert "monitor-error" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines == [f"dbgvm: {option}: cannot write /dev/full: No space left on device"]
    assert proc.returncode == status


def test_ctrl_c_ends_a_recording_that_replays_verified(tmp_path):
    import signal
    import time
    trace = tmp_path / "run.trace"
    # stdin stays open: the bundled guest runs, then waits at its prompt for input
    proc = subprocess.Popen([sys.executable, "-m", "dbgvm", "run", "--batch", "--record",
                             str(trace)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not trace.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err
    assert err.strip() == "dbgvm: interrupted (Ctrl-C)"
    replay = dbgvm("replay", "--batch", str(trace))
    assert replay.returncode == 0, replay.stderr
    assert "replay identical to the recording" in replay.stderr


# -- QEMU habits on the command line --------------------------------------------------------

@pytest.mark.parametrize("args, line", [
    (["-S"], "dbgvm: -S waits for gdb to start the guest: add -s or --gdb PORT"),
    (["-m", "0"], "dbgvm: -m: guest RAM must be 2..3072 MiB, not 0"),
    (["-m", "4096"], "dbgvm: -m: guest RAM must be 2..3072 MiB, not 4096"),
    (["--disk", "{tmp}"], "dbgvm: --disk: {tmp} is a directory, not a disk image"),
    (["-x", "{tmp}/missing"], "dbgvm: -x: cannot read {tmp}/missing: No such file or directory"),
])
def test_qemu_habits_on_the_command_line_are_one_line(tmp_path, args, line):
    args = [a.format(tmp=tmp_path) for a in args]
    proc = dbgvm("run", str(build("basics")), "--batch", *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith(line.format(tmp=tmp_path)), proc.stderr


def test_replay_with_a_missing_script_is_one_line(tmp_path):
    proc = dbgvm("replay", str(tmp_path / "t"), "-x", str(tmp_path / "missing"))
    assert proc.returncode == 2
    assert proc.stderr == f"dbgvm: -x: cannot read {tmp_path}/missing: No such file or " \
        "directory\n"


def test_version():
    from importlib import metadata
    proc = dbgvm("--version")
    assert proc.returncode == 0
    assert proc.stdout == f"dbgvm {metadata.version('dbgvm')}\n"


def test_a_powered_off_guest_stays_ended(tmp_path):
    """`continue` after the power-off must not run the guest on."""
    script = tmp_path / "cmds"
    script.write_text("send poweroff\ncontinue\ninfo\ncontinue\n")
    proc = dbgvm("run", "--batch", "-x", str(script), timeout=60)
    assert "poweroff: guest powered off" in proc.stdout
    assert "vm 0 of 1: ended (poweroff)" in proc.stdout
    assert f"{script}:4: error: the guest has ended (poweroff)" in proc.stdout
    assert "debug-exit" not in proc.stdout
    assert proc.returncode == 1                 # the last command failed


def test_the_terminal_is_the_guest_console_beside_gdb():
    """Under --gdb, what is typed at the terminal reaches the guest (as
    QEMU's serial console beside its gdbstub), and nothing typed is left for the shell."""
    import os
    import pty
    import select
    import time

    from gdb_harness import free_port, wait_listening
    from stub_harness import Client
    master, slave = pty.openpty()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dbgvm", "run", "--gdb",
                             f"127.0.0.1:{port}"], stdin=slave, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        wait_listening(port, proc)
        out = b""
        deadline = time.monotonic() + 60
        while b"$ " not in out and time.monotonic() < deadline:       # the shell's prompt
            if select.select([proc.stdout], [], [], 0.5)[0]:
                out += os.read(proc.stdout.fileno(), 4096)
        os.write(master, b"echo typed-at-the-terminal\n")
        while b"typed-at-the-terminal\n" not in out and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 0.5)[0]:
                out += os.read(proc.stdout.fileno(), 4096)
        assert b"$ typed-at-the-terminal\n" in out, out        # what the guest's echo printed
        os.write(master, b"rm -rf typed-but-no-enter")
        time.sleep(0.5)
        with Client(port) as gdb:
            gdb.ask(b"?")
            gdb.send_packet(b"vKill")
            gdb.reply(10)
        proc.wait(30)
        # the partial line went nowhere: the next line the terminal gives is just the Enter
        os.write(master, b"\n")
        assert select.select([slave], [], [], 5)[0]
        assert os.read(slave, 4096) == b"\n"
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
        os.close(slave)
