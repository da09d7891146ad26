"""Whole Linux runs: the vDSO's SYSENTER path with a six-argument system call, a recorded run
that replays verified, two runs of the same boot giving the same event stream, and a boot
through the kernel's own XZ decompressor.

Expected values come from the i386 Linux ABI (system call numbers and registers, the
auxiliary vector, the vDSO's __kernel_vsyscall), from the files themselves (busybox's bytes,
the kernel package's release) and from the kernel's source (what the decompressor prints),
never from dbgvm.

Linux boots to the prompt three times here: in process (the vDSO test), under `dbgvm run
--record` (then the replay executes that boot again), and through the decompressor; the
event-stream test runs two 150 M-instruction prefixes of a boot side by side. About 4 minutes
on two shared cores.
"""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from unicorn.x86_const import (UC_X86_REG_EAX, UC_X86_REG_EBP, UC_X86_REG_EBX,
                               UC_X86_REG_ECX, UC_X86_REG_EDI, UC_X86_REG_EDX,
                               UC_X86_REG_ESI)

from guest_build import build_linux_program
from linux_fixtures import ConsolePipe, LinuxVM

from dbgvm.core.events import EventKind
from dbgvm.core.faults import StopReason
from dbgvm.linux.initramfs import Entry, write_cpio

REPO = Path(__file__).resolve().parent.parent
APPEND = "console=ttyS0 cryptomgr.notests"
RTC = "2026-01-01T00:00:00"
PROMPT = b"/ # "

# i386 system call numbers (arch/x86/entry/syscalls/syscall_32.tbl)
SYS_WRITE, SYS_OPEN, SYS_PREAD64, SYS_MMAP2, SYS_EXIT_GROUP = 4, 5, 180, 192, 252
VDSO6_CALLS = [SYS_OPEN, SYS_MMAP2, SYS_PREAD64, SYS_WRITE, SYS_EXIT_GROUP]
VDSO6_LINE = re.compile(r"vdso6: sysinfo=0x([0-9a-f]{8}) mmap2=0x([0-9a-f]{8}) "
                        r"bytes=([0-9a-f]{16}) match\n")


def _initrd_with(base: bytes, entries: list[Entry]) -> bytes:
    """``base`` (the fetched gzip'd archive) followed by an uncompressed newc archive of
    ``entries``: Linux unpacks concatenated archives. An uncompressed member must start at a
    multiple of 4 after the compressed one (init/initramfs.c: this_header & 3); zero bytes in
    between are skipped."""
    return base + bytes(-len(base) % 4) + write_cpio(entries)


@pytest.fixture(scope="module")
def vdso6() -> Path:
    return build_linux_program("vdso6")


@pytest.fixture(scope="module")
def vdso6_initrd(linux_kernel, vdso6, tmp_path_factory) -> Path:
    data = _initrd_with(Path(linux_kernel.initrd).read_bytes(),
                        [Entry("vdso6", stat.S_IFREG | 0o755, vdso6.read_bytes())])
    path = tmp_path_factory.mktemp("initrd") / "initrd-vdso6.img"
    path.write_bytes(data)
    return path


def _text_range(elf: Path) -> tuple[int, int]:
    """The executable PT_LOAD segment's [start, end) (ELF32 program headers)."""
    data = elf.read_bytes()
    phoff = int.from_bytes(data[28:32], "little")
    phentsize = int.from_bytes(data[42:44], "little")
    for index in range(int.from_bytes(data[44:46], "little")):
        ph = data[phoff + index * phentsize:phoff + (index + 1) * phentsize]
        p_type, _, vaddr, _, _, memsz, flags = (int.from_bytes(ph[i:i + 4], "little")
                                                 for i in range(0, 28, 4))
        if p_type == 1 and flags & 1:
            return vaddr, vaddr + memsz
    raise AssertionError(f"{elf}: no executable segment")


def _expected_bytes(linux_kernel) -> str:
    """What the guest's /bin/busybox holds at file offset 4096 (the archive's busybox is the
    fetched one)."""
    return Path(linux_kernel.busybox).read_bytes()[4096:4104].hex()


# --- 1. the vDSO's SYSENTER path, six arguments -----------------------------------------------

def test_vdso_sysenter_path_with_six_arguments(linux_kernel, vdso6, vdso6_initrd):
    vm = LinuxVM(linux_kernel, APPEND, initrd=vdso6_initrd.read_bytes())
    try:
        vm.boot()
        machine = vm.machine
        regs = machine.regs
        seen: list[dict] = []

        def on_trap(event):
            if event.fields["vector"] != -1 or event.fields["insn"] != "sysenter":
                return
            ebp = regs.read(UC_X86_REG_EBP)
            try:
                # __kernel_vsyscall pushed ECX, EDX, EBP, then moved ESP to EBP: the
                # caller's return address is at EBP+12, the 6th argument (old EBP) at EBP
                saved_ebp, _, _, ret = (int.from_bytes(machine.read_linear(ebp + i, 4),
                                                       "little") for i in range(0, 16, 4))
            except Exception as exc:  # noqa: BLE001 - reported through the assertion below
                saved_ebp = ret = repr(exc)
            seen.append({"eip": event.eip, "eax": regs.read(UC_X86_REG_EAX),
                         "ebx": regs.read(UC_X86_REG_EBX), "ecx": regs.read(UC_X86_REG_ECX),
                         "edx": regs.read(UC_X86_REG_EDX), "esi": regs.read(UC_X86_REG_ESI),
                         "edi": regs.read(UC_X86_REG_EDI), "arg6": saved_ebp, "ret": ret})

        unsubscribe = machine.events.subscribe({EventKind.TRAP}, on_trap)
        out = vm.command("/vdso6; echo status=$?")
        unsubscribe()
    finally:
        vm.close()

    lines = out.replace("\r", "").splitlines()
    assert len(lines) == 2 and lines[1] == "status=0", out
    found = VDSO6_LINE.fullmatch(lines[0] + "\n")
    assert found, out
    sysinfo, mapped, first = int(found[1], 16), int(found[2], 16), found[3]
    assert first == _expected_bytes(linux_kernel)      # the 6th argument reached the kernel
    assert mapped & 0xFFF == 0 and sysinfo >= 0xB0000000   # the vDSO sits high, near the stack

    start, end = _text_range(vdso6)
    ours = [call for call in seen if isinstance(call["ret"], int) and start <= call["ret"] < end]
    assert [call["eax"] for call in ours] == VDSO6_CALLS, ours
    for call in ours:      # SYSENTER inside __kernel_vsyscall, a few bytes after its entry
        assert 0 < call["eip"] - sysinfo < 32, (hex(call["eip"]), hex(sysinfo))
    opened, mmap2, pread = ours[0], ours[1], ours[2]
    assert (mmap2["ebx"], mmap2["ecx"], mmap2["edx"], mmap2["esi"], mmap2["arg6"]) == \
        (0, 4096, 1, 2, 1)              # NULL, 4096, PROT_READ, MAP_PRIVATE, fd, page 1
    assert mmap2["edi"] == pread["ebx"] and 0 <= mmap2["edi"] < 64   # the fd open returned
    assert (pread["edx"], pread["esi"], pread["edi"]) == (64, 4096, 0)
    assert opened["ecx"] == 0                                       # O_RDONLY
    assert ours[3]["ebx"] == 1 and ours[4]["ebx"] == 0              # stdout; status 0


# --- 2. a recorded Linux run replays verified -------------------------------------------------

class Console(ConsolePipe):
    """A `dbgvm run --batch` subprocess's console at the busybox prompt."""

    def read_until(self, pattern: bytes, start: int) -> int:
        """Offset just past the first ``pattern`` after ``start``."""
        return self.wait_for(re.compile(re.escape(pattern)), start).end()

    def command(self, line: str) -> str:
        """Type ``line`` at the prompt; what it printed up to the next prompt."""
        start = len(self.output)
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        echoed = self.read_until(line.encode() + b"\r\n", start)
        end = self.read_until(b"\n" + PROMPT, echoed - 1)
        return self.output[echoed:end - len(PROMPT)].decode().replace("\r\n", "\n")


def _dbgvm(*args: str) -> list[str]:
    return [sys.executable, "-m", "dbgvm", *args]


def _env() -> dict[str, str]:
    # this checkout's dbgvm, whatever is installed
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_recorded_linux_run_replays_verified(linux_kernel, vdso6_initrd, tmp_path):
    trace = tmp_path / "linux.trace"
    stderr = tmp_path / "stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(_dbgvm("run", str(linux_kernel.kernel), "--initrd",
                                       str(vdso6_initrd), "--append", APPEND, "-m", "128",
                                       "--batch", "--rtc-base", RTC, "--record", str(trace)),
                                cwd=REPO, env=_env(), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err)
        try:
            console = Console(proc, time.monotonic() + 900)
            console.read_until(b"\n" + PROMPT, 0)
            release = console.command("uname -r")
            vdso = console.command("/vdso6")
            console.proc.stdin.write(b"poweroff\n")
            console.proc.stdin.flush()
            status = console.finish()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert status == 0, stderr.read_text()
    assert b"reboot: Power down" in console.output
    assert release == linux_kernel.release + "\n"
    found = VDSO6_LINE.fullmatch(vdso)
    assert found and found[3] == _expected_bytes(linux_kernel), vdso

    replay = subprocess.run(_dbgvm("replay", str(trace), "--batch"), cwd=REPO, env=_env(),
                            stdin=subprocess.DEVNULL, capture_output=True, timeout=900)
    said = (replay.stdout + replay.stderr).decode("utf-8", "replace")
    assert replay.returncode == 0, said[-3000:]
    assert "replay identical to the recording" in said, said[-3000:]
    assert found[0].replace("\n", "\r\n").encode() in replay.stdout   # the console again


# --- 3. the same guest twice gives the same event stream --------------------------------------

EVENT_RUN_INSNS = 150_000_000


def test_the_same_boot_twice_gives_the_same_event_stream(linux_kernel, tmp_path):
    outs = [tmp_path / f"events{n}.jsonl" for n in (1, 2)]
    procs = [subprocess.Popen(_dbgvm("run", str(linux_kernel.kernel), "--initrd",
                                     str(linux_kernel.initrd), "--append", APPEND, "-m", "128",
                                     "--batch", "--rtc-base", RTC, "--max-insns",
                                     str(EVENT_RUN_INSNS), "--trace-out", str(out)),
                              cwd=REPO, env=_env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for out in outs]          # side by side: host timing must not matter
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode("utf-8", "replace")
    first, second = (out.read_bytes() for out in outs)
    assert first == second
    lines = first.splitlines()
    assert len(lines) > 100_000
    kinds = {json.loads(line)["kind"] for line in lines}
    assert {"trap", "irq", "io", "pt"} <= kinds, kinds
    last = json.loads(lines[-1])
    assert last["kind"] == "stop" and last["icount"] == EVENT_RUN_INSNS, last


# --- 4. the kernel's own decompressor -------------------------------------------------------

@pytest.mark.slow        # ~2.3 G instructions of XZ decompression before the boot proper
def test_boot_through_the_kernels_own_decompressor(linux_kernel):
    # arch/x86/boot/compressed writes to a serial port only when the command line names one
    # for it (early_serial_console.c: earlyprintk=serial or ttyS0, or console=uart8250,io,..;
    # console=ttyS0 alone leaves it silent). Debian builds without X86_VERBOSE_BOOTUP, so
    # debug_putstr() ("Decompressing Linux... Parsing ELF... done.") is compiled out: what it
    # prints is warn()'s, in kaslr.c choose_random_location(), for the nokaslr dbgvm adds.
    append = "console=ttyS0 earlyprintk=serial cryptomgr.notests"
    vm = LinuxVM(linux_kernel, append, boot_decompressor=True)
    try:
        vm.boot()
        release = vm.command("uname -r")
        stop = vm.power_off()
    finally:
        vm.close()
    assert " nokaslr" in vm.banner
    log = vm.console.replace("\r\n", "\n")
    # misc.c warn(): "\n\n", the message, "\n\n"; then the kernel proper's first line
    assert log.startswith("\n\nKASLR disabled: 'nokaslr' on cmdline.\n\n"), log[:500]
    assert log.index("KASLR disabled") < log.index("Linux version 6.1.0") < \
        log.index("Kernel command line: ")
    assert re.search(r"Kernel command line: " + append + r" .*\bnokaslr\b", log)
    assert release.strip() == linux_kernel.release
    assert stop.reason is StopReason.POWEROFF and stop.exit_status == 0
