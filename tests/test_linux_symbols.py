"""Kernel symbols without a debug package: the kernel's own kallsyms tables, read from the
vmlinux inside Debian's bzImage, checked against what the running kernel says in
/proc/kallsyms, and used by the monitor (break NAME, the stop line, disas NAME).

One boot, shared by the module's tests in order: the monitor stops at start_kernel and then
at do_sys_openat2 (busybox's first open), the boot goes on to the shell prompt, and the
shell reads /proc/kallsyms as root. The crypto self-tests are skipped (cryptomgr.notests):
they are 3.7 G of the boot's 4.1 G instructions and have nothing to do with symbols.
"""
from __future__ import annotations

import hashlib
import re
import struct
import time

import pytest
from linux_fixtures import LinuxVM

from dbgvm.core.events import EventKind
from dbgvm.linux import kallsyms
from dbgvm.linux.boot import load_linux
from dbgvm.linux.bzimage import parse_setup_header, unpack
from dbgvm.repl.commands import CommandInterpreter

NAMED = ("start_kernel", "schedule", "do_sys_openat2", "sysrq_handle_crash")
CONTINUE_LIMIT = 2_000_000_000    # a breakpoint never hit fails the test instead of hanging


# -- the reader alone, on tables built here ----------------------------------------------
def kallsyms_tables(symbols: list[tuple[int, str, str]], base: int, seqs: bool) -> bytes:
    """kallsyms tables as scripts/kallsyms.c lays them out (each label 4-aligned), with
    ``kallsyms_seqs_of_names`` when ``seqs``; tokens: each character for itself, plus a
    few two-character tokens in unused slots so that names are compressed."""
    text = [f"{kind}{name}" for _, kind, name in symbols]
    used = sorted({c for t in text for c in t})
    tokens = [chr(c).encode() if chr(c) in used else b"" for c in range(256)]
    spare = [c for c in range(256) if not tokens[c]]
    pairs = ["ch", "ed", "_s", "Tsc", "ule"]
    for pair, slot in zip(pairs, spare):
        tokens[slot] = pair.encode()
    for slot in spare[len(pairs):]:
        tokens[slot] = b"\xff"      # not used by any name, but present (never empty)

    def encode(name: str) -> bytes:
        out, i = bytearray(), 0
        while i < len(name):
            for slot in range(256):
                token = tokens[slot].decode("latin-1")
                if len(token) > 1 and name.startswith(token, i):
                    out.append(slot)
                    i += len(token)
                    break
            else:
                out.append(ord(name[i]))
                i += 1
        return bytes(out)

    def pad(blob: bytearray) -> None:
        blob.extend(b"\0" * (-len(blob) % 4))

    blob = bytearray(b"\xaa" * 12)                          # something before the tables
    blob += b"".join(struct.pack("<i", addr - base) for addr, _, _ in symbols)
    blob += struct.pack("<II", base, len(symbols))
    names, markers = bytearray(), []
    for i, t in enumerate(text):
        if i % 256 == 0:
            markers.append(len(names))
        encoded = encode(t)
        length = len(encoded)
        names += bytes([length]) if length < 0x80 else bytes([0x80 | length & 0x7F,
                                                               length >> 7])
        names += encoded
    blob += names
    pad(blob)
    blob += b"".join(struct.pack("<I", m) for m in markers)
    if seqs:
        blob += b"".join(i.to_bytes(3, "big") for i in range(len(symbols)))
        pad(blob)
    table_at = len(blob)
    index = []
    for token in tokens:
        index.append(len(blob) - table_at)
        blob += token + b"\0"
    pad(blob)
    blob += struct.pack("<256H", *index)
    return bytes(blob)


@pytest.mark.parametrize("seqs", [False, True], ids=["6.1", "6.1.y-with-seqs_of_names"])
def test_the_reader_finds_tables_in_both_layouts(seqs):
    base = 0xC1000000
    symbols = [(base + 0x10 * i, "tT"[i % 2], f"sym_{i}_sched") for i in range(700)]
    symbols.append((base + 0x9000, "T", "schedule"))
    symbols.append((base + 0x9100, "t", "x" * 200))        # a 2-byte length
    found = kallsyms._find_in(kallsyms_tables(symbols, base, seqs), 0xC1800000)
    assert found is not None
    assert [(s.address, s.type, s.name) for s in found] == symbols


# -- the real kernel ---------------------------------------------------------------------
def test_the_debian_kernel_s_symbols_are_recovered_quickly_and_cached(linux_kernel, tmp_path,
                                                                      monkeypatch):
    raw = linux_kernel.kernel.read_bytes()
    vmlinux = unpack(raw, parse_setup_header(raw, "k"), "k")[1]
    start = time.perf_counter()
    symbols = kallsyms.read_kallsyms(vmlinux)
    elapsed = time.perf_counter() - start
    assert elapsed < 2, elapsed
    by_name = kallsyms.symbol_map(symbols)
    assert len(symbols) > 40_000 and all(name in by_name for name in NAMED)
    assert symbols[0].address == 0xC1000000 and symbols[0].type in "tT"
    # the cache: written on first use, then read back without unpacking anything
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert kallsyms.kernel_symbols(raw, lambda: vmlinux) == symbols
    assert len(list((tmp_path / "dbgvm/linux/symbols").glob("*.txt"))) == 1
    assert kallsyms.kernel_symbols(raw, lambda: pytest.fail("not from the cache")) == symbols
    # and both boot paths give the BootImage the same table
    for decompressor in (False, True):
        image = load_linux(linux_kernel.kernel, 128 << 20, "console=ttyS0",
                           boot_decompressor=decompressor).image
        assert image.symbols == by_name
    # a stripped vmlinux (this one: no .symtab) is read the same way
    stripped = tmp_path / "vmlinux"
    stripped.write_bytes(vmlinux)
    assert load_linux(stripped, 128 << 20).image.symbols == by_name


@pytest.fixture(scope="module")
def guest(linux_kernel):
    vm = LinuxVM(linux_kernel, "console=ttyS0 panic=-1 cryptomgr.notests")
    domains = vm.domains

    def run(max_insns, interrupted):
        return domains.run(CONTINUE_LIMIT if max_insns is None else max_insns,
                           interrupted=interrupted)
    monitor = CommandInterpreter(run=run, machines=domains.machines,
                                 console_input=domains.console_input)
    vm.monitor = monitor
    yield vm
    vm.close()


def test_break_on_start_kernel_stops_at_its_entry(guest):
    mon = guest.monitor
    address = guest.machine.symbols["start_kernel"]
    assert mon.run("break start_kernel") == f"breakpoint 1 at {address:#010x} <start_kernel>\n"
    out = mon.run("continue")
    assert out.startswith(f"breakpoint 1 at {address:#010x} <start_kernel>\n"
                          f"=> {address:#010x} <start_kernel>:  ")
    assert guest.machine.registers().eip == address
    mon.run("delete 1")


def test_break_on_do_sys_openat2_stops_when_init_opens_a_file(guest):
    mon = guest.monitor
    address = guest.machine.symbols["do_sys_openat2"]
    mon.run("break do_sys_openat2")
    out = mon.run("continue")
    assert out.startswith(f"breakpoint 2 at {address:#010x} <do_sys_openat2>\n")
    regs = mon.run("regs")
    assert f"eip {address:#010x} <do_sys_openat2>" in regs
    assert "Run /init as init process" in guest.console       # a user program asked
    # where the call came from is named too: the return address on the stack
    esp = guest.machine.registers().esp
    ret = struct.unpack("<I", guest.machine.debug.read_virtual(esp, 4))[0]
    assert re.search(rf"{ret:#010x} <[\w.]+\+0x[0-9a-f]+>",
                     mon.run(f"disas {ret:#x} 1")), ret
    mon.run("delete 2")


def test_disas_schedule_disassembles_schedule(guest):
    address = guest.machine.symbols["schedule"]
    lines = guest.monitor.run("disas schedule 4").splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(f"   {address:#010x} <schedule>:  ")
    assert all(" <schedule+0x" in line for line in lines[1:])


def test_the_running_kernel_s_proc_kallsyms_agrees(guest, linux_kernel):
    guest.boot()
    guest.command("echo 0 > /proc/sys/kernel/kptr_restrict")      # real addresses (root)
    # The kernel's part of /proc/kallsyms, every line (address, type, name as the kernel
    # prints them), is what was recovered: compared by digest, since printing 1.4 MB on the
    # emulated serial port (or busybox's grep -w over it) would take minutes. The symbols of
    # the modules the initramfs loaded ("name\t[ext4]") follow the kernel's own.
    raw = linux_kernel.kernel.read_bytes()
    recovered = kallsyms.kernel_symbols(
        raw, lambda: unpack(raw, parse_setup_header(raw, "k"), "k")[1])
    lines = [f"{s.address:08x} {s.type} {s.name}\n" for s in recovered]
    digest = hashlib.md5("".join(lines).encode()).hexdigest()
    kernel_part = f"head -n {len(lines)} /proc/kallsyms"
    assert guest.command(f"{kernel_part} | md5sum").split()[0] == digest, \
        guest.command("wc -l < /proc/kallsyms; head -n 3 /proc/kallsyms")
    after = guest.command(f"tail -n +{len(lines) + 1} /proc/kallsyms | head -n 1")
    assert re.fullmatch(r"[0-9a-f]{8} \w \w+\t\[\w+\]\s*", after), after   # a module's
    # so the kernel lists the named functions where the monitor's symbols put them
    symbols = guest.machine.symbols
    for name in NAMED:
        assert any(line.startswith(f"{symbols[name]:08x} ") and line.endswith(f" {name}\n")
                   for line in lines), name


def test_catch_syscall_execve_stops_when_busybox_runs_a_command(guest):
    """System calls as events: the shell's execve of a command is caught at its entry, named
    from the i386 table, with its arguments (EBX: the path, in the caller's memory)."""
    guest.boot()
    mon = guest.monitor
    events = []
    unsubscribe = guest.machine.events.subscribe({EventKind.SYSCALL}, events.append)
    try:
        assert mon.run("catch syscall execve") == "event breakpoint 3: catch syscall execve\n"
        guest.domains.console_input(0, b"/bin/uname -r\n")
        out = mon.run("continue")
    finally:
        unsubscribe()
    mon.run("uncatch")
    entry = [e for e in events if e.fields["op"] == "entry"][-1]
    assert entry.fields["name"] == "execve" and entry.fields["nr"] == 11
    assert entry.fields["via"] in ("int 0x80", "sysenter")
    path = guest.machine.debug.read_virtual(entry.fields["args"][0], 12)
    assert path == b"/bin/uname\0\0"[:12] or path.startswith(b"/bin/uname\0"), path
    assert out.startswith("event breakpoint 3: syscall ") and " execve(0x" in out
    # the stop is in the kernel, right after the gate: virtual CPL 0
    assert guest.machine.vcpu.cpl == 0
    # other calls of the shell returned with results: e.g. write of the echoed characters
    assert any(e.fields["op"] == "exit" and isinstance(e.fields["result"], int)
               for e in events)
