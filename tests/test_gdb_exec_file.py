"""gdb needs no file argument: the stub serves the guest's executable (qXfer:exec-file:read
and the vFile: host-I/O packets), and for a Linux bzImage an ELF of the kernel's kallsyms.

Packet level first (the session alone), then the real gdb with no file against the bundled
guest (symbols and source lines of this checkout) and against Debian's kernel (one boot:
``break schedule``, ``continue``, ``x/i $pc`` and ``bt`` name ``schedule``).
"""
from __future__ import annotations

import binascii
import io
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from gdb_harness import Gdb, free_port, wait_listening
from guest_build import build
from stub_harness import Client

from dbgvm.cli import served_symbols
from dbgvm.core.assembly import build_machine
from dbgvm.core.loader import load
from dbgvm.gdbstub import hostio, rsp
from dbgvm.gdbstub.session import Session
from dbgvm.linux import kallsyms
from dbgvm.linux.kallsyms import KernelSymbol
from dbgvm.linux.symbol_elf import symbol_elf

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "dbgvm" / "guest" / "src"
needs_gdb = pytest.mark.skipif(shutil.which("gdb") is None,
                               reason="gdb is not installed (apt-get install gdb)")


# -- packet level --------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path):
    """A session serving a file whose bytes include every byte value (escapes included)."""
    data = bytes(range(256)) * 200 + b"$#}*" * 3000
    path = tmp_path / "guest.elf"
    path.write_bytes(data)
    machine = build_machine()
    machine.load(load(build("basics"), machine.ram_size))
    served = hostio.ServedFile(path)
    yield Session(machine, exec_file=served), str(path.resolve()), data
    served.close()


def ask(session: Session, payload: bytes) -> bytes:
    """The reply as gdb receives it: through the framing, escapes and all."""
    reply = session.handle(payload)
    assert reply is not None
    framed = rsp.encode(reply)
    assert len(framed) <= rsp.MAX_PACKET + 4
    frames = rsp.Decoder().feed(framed)
    assert [f.kind for f in frames] == [rsp.Kind.PACKET]
    return frames[0].payload


def open_packet(path: str, flags: int = 0, mode: int = 0) -> bytes:
    return b"vFile:open:" + binascii.hexlify(path.encode()) + f",{flags:x},{mode:x}".encode()


def test_exec_file_is_advertised_only_when_a_file_is_served(served):
    session, path, _ = served
    features = ask(session, b"qSupported:multiprocess+;xmlRegisters=i386").split(b";")
    assert b"qXfer:exec-file:read+" in features
    assert not any(f.startswith(b"vFile") for f in features)      # gdb probes vFile
    bare = Session(session.m)
    assert b"qXfer:exec-file" not in ask(bare, b"qSupported")
    assert ask(bare, b"qXfer:exec-file:read::0,1000") == b""
    assert ask(bare, open_packet(path)) == b""


def test_qxfer_exec_file_names_the_served_path(served):
    session, path, _ = served
    assert ask(session, b"qXfer:exec-file:read::0,1000") == b"l" + path.encode()
    assert ask(session, b"qXfer:exec-file:read:2a:0,1000") == b"l" + path.encode()  # a pid
    assert ask(session, b"qXfer:exec-file:read::0,4") == b"m" + path.encode()[:4]
    assert ask(session, b"qXfer:exec-file:read::4,1000") == b"l" + path.encode()[4:]
    for bad in (b"qXfer:exec-file:read:zz:0,10", b"qXfer:exec-file:read::0",
                b"qXfer:exec-file:read::-1,10", b"qXfer:exec-file:read::0,100000000"):
        assert ask(session, bad) == b"E01", bad
    assert ask(session, b"qXfer:exec-file:write::0,10") == b""
    # the target description is still there
    assert ask(session, b"qXfer:features:read:target.xml:0,10").startswith(b"m<?xml")


def test_open_pread_fstat_close_round_trip(served):
    session, path, data = served
    assert ask(session, b"vFile:setfs:0") == b"F0"
    reply = ask(session, open_packet(path))
    assert reply.startswith(b"F") and b"," not in reply
    fd = int(reply[1:], 16)
    read, offset = bytearray(), 0
    while True:
        reply = ask(session, f"vFile:pread:{fd:x},{0x3fff:x},{offset:x}".encode())
        count, _, chunk = reply[1:].partition(b";")
        assert int(count, 16) == len(chunk)
        if not chunk:
            break
        read += chunk
        offset += len(chunk)
    assert bytes(read) == data
    assert ask(session, f"vFile:pread:{fd:x},10,{len(data) + 5:x}".encode()) == b"F0;"
    reply = ask(session, f"vFile:fstat:{fd:x}".encode())
    assert reply.startswith(b"F40;")
    fields = struct.unpack(">7I3Q3I", reply[4:])
    assert len(reply[4:]) == 64
    assert fields[2] & 0o170000 == 0o100000                     # S_IFREG
    assert fields[7] == len(data)
    assert ask(session, f"vFile:close:{fd:x}".encode()) == b"F0"
    assert ask(session, f"vFile:close:{fd:x}".encode()) == b"F-1,9"          # EBADF
    assert ask(session, f"vFile:pread:{fd:x},10,0".encode()) == b"F-1,9"
    assert ask(session, f"vFile:fstat:{fd:x}".encode()) == b"F-1,9"


def test_no_other_file_can_be_opened(served, tmp_path):
    session, path, _ = served
    (tmp_path / "secret").write_text("host file")
    for other in ("just probing", "/etc/passwd", str(tmp_path / "secret"), path + "x",
                  path[:-1], path.replace("/guest.elf", "/./guest.elf"),
                  path.replace("/guest.elf", "/sub/../guest.elf"), "/" + path, "",
                  path + "\0"):
        assert ask(session, open_packet(other)) == b"F-1,2", other              # ENOENT
    for flags in (1, 2, 0x8, 0x200, 0x201, 0x402):                   # writing, creating
        assert ask(session, open_packet(path, flags, 0o644)) == b"F-1,d", flags  # EACCES
    fds = [ask(session, open_packet(path)) for _ in range(hostio.MAX_OPEN)]
    assert len(set(fds)) == hostio.MAX_OPEN
    assert ask(session, open_packet(path)) == b"F-1,18"                       # EMFILE


def test_malformed_vfile_arguments_are_einval(served):
    session, path, _ = served
    fd = int(ask(session, open_packet(path))[1:], 16)
    for bad in (b"vFile:open:zz,0,0", b"vFile:open:" + binascii.hexlify(path.encode()),
                b"vFile:open:abc,0,0", b"vFile:pread:3,10", b"vFile:pread:3,,0",
                f"vFile:pread:{fd:x},-1,0".encode(), f"vFile:pread:{fd:x},10,0x0".encode(),
                f"vFile:pread:{fd:x},10,100000000".encode(), b"vFile:fstat:", b"vFile:close:x",
                b"vFile:setfs:", b"vFile:fstat:3,4"):
        assert ask(session, bad) == b"F-1,16", bad                               # EINVAL
    # operations we do not have: the empty reply (gdb: packet not supported)
    for other in (b"vFile:pwrite:3,0:x", b"vFile:unlink:2f", b"vFile:readlink:2f", b"vFile:"):
        assert ask(session, other) == b"", other


def test_the_file_opened_at_start_is_served_even_if_the_path_changes(tmp_path):
    path = tmp_path / "k.elf"
    path.write_bytes(b"original")
    served = hostio.ServedFile(path)
    path.unlink()
    (tmp_path / "other").write_bytes(b"replaced")
    path.symlink_to(tmp_path / "other")
    assert served.read(0, 100) == b"original"
    served.close()
    with pytest.raises(OSError):
        hostio.ServedFile(tmp_path)                   # a directory is never served


# -- the symbol ELF ------------------------------------------------------------------------
SYMBOLS = [KernelSymbol(0xC1000000, "T", "_stext"), KernelSymbol(0xC1000000, "T", "startup_32"),
           KernelSymbol(0xC1000100, "t", "helper"), KernelSymbol(0xC1000180, "W", "weak_fn"),
           KernelSymbol(0xC1000200, "T", "schedule"), KernelSymbol(0xC1000300, "T", "_etext"),
           KernelSymbol(0xC1002000, "D", "some_data"),
           KernelSymbol(0xC1010000, "T", "_sinittext"),
           KernelSymbol(0xC1010000, "T", "start_kernel"),
           KernelSymbol(0xC1010400, "T", "_einittext")]


def test_the_symbol_elf_is_a_valid_elf_with_sized_functions():
    elf = ELFFile(io.BytesIO(symbol_elf(SYMBOLS, 0xC1000000)))
    assert (elf.elfclass, elf["e_machine"], elf["e_type"]) == (32, "EM_386", "ET_EXEC")
    text, init = elf.get_section_by_name(".text"), elf.get_section_by_name(".init.text")
    assert text["sh_type"] == init["sh_type"] == "SHT_NOBITS"
    assert (text["sh_addr"], text["sh_size"]) == (0xC1000000, 0x300)
    assert (init["sh_addr"], init["sh_size"]) == (0xC1010000, 0x400)
    symtab = elf.get_section_by_name(".symtab")
    syms = {s.name: s for s in symtab.iter_symbols() if s.name}
    assert syms["schedule"]["st_value"] == 0xC1000200 and syms["schedule"]["st_size"] == 0x100
    assert syms["schedule"]["st_info"]["type"] == "STT_FUNC"
    assert syms["schedule"]["st_info"]["bind"] == "STB_GLOBAL"
    assert syms["helper"]["st_info"]["bind"] == "STB_LOCAL"
    assert syms["weak_fn"]["st_info"]["bind"] == "STB_WEAK"
    assert syms["_etext"]["st_size"] == 0 and syms["start_kernel"]["st_size"] == 0x400
    assert syms["some_data"]["st_shndx"] == "SHN_ABS"
    locals_ = [s["st_info"]["bind"] == "STB_LOCAL" for s in symtab.iter_symbols()][1:]
    assert locals_ == sorted(locals_, reverse=True)               # locals first
    assert symtab["sh_info"] == 1 + sum(locals_)


@needs_gdb
def test_gdb_reads_the_symbol_elf(tmp_path):
    path = tmp_path / "symbols.elf"
    path.write_bytes(symbol_elf(SYMBOLS))
    out = subprocess.run(["gdb", "-nx", "-batch", "-ex", "info symbol 0xc1000204", "-ex",
                          "info symbol 0xc1000301", "-ex", "info symbol start_kernel+8",
                          str(path)], capture_output=True, text=True, timeout=60).stdout
    assert out.splitlines() == ["schedule + 4 in section .text",
                                "No symbol matches 0xc1000301.",
                                "start_kernel + 8 in section .init.text"]


def test_what_is_served(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    elf = build("basics")
    assert served_symbols(str(elf), None).path == str(elf.resolve())
    mine = tmp_path / "vmlinux-dbg"
    mine.write_bytes(symbol_elf(SYMBOLS))
    assert served_symbols(str(elf), str(mine)).path == str(mine)
    (tmp_path / "text").write_text("not an ELF")
    with pytest.raises(ValueError, match="not an ELF"):
        served_symbols(str(elf), str(tmp_path / "text"))
    with pytest.raises(OSError):
        served_symbols(str(elf), str(tmp_path / "missing"))
    assert served_symbols(None, None) is None


def test_cli_symbols_option(tmp_path):
    elf = build("basics")
    mine = tmp_path / "vmlinux-dbg"
    mine.write_bytes(symbol_elf(SYMBOLS))
    run = [sys.executable, "-m", "dbgvm", "run", str(elf), "--batch"]
    proc = subprocess.run([*run, "--symbols", str(mine)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "--symbols" in proc.stderr and "--gdb" in proc.stderr
    proc = subprocess.run([*run, "-S", "--gdb", "127.0.0.1:1", "--symbols",
                           str(tmp_path / "missing")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert f"dbgvm: --symbols: {tmp_path / 'missing'}: No such file" in proc.stderr
    port = free_port()
    stub = subprocess.Popen([*run, "-S", "--gdb", f"127.0.0.1:{port}", "--symbols", str(mine)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(port, stub)
        assert stub.stderr.readline().startswith("dbgvm: waiting for gdb")
        assert stub.stderr.readline() == \
            f"dbgvm: attach with: gdb -ex 'target remote 127.0.0.1:{port}'\n"
        assert stub.stderr.readline() == \
            f"dbgvm: gdb gets its symbols from the stub: {mine}\n"
        with Client(port) as c:
            assert c.ask(b"qXfer:exec-file:read::0,1000", 10) == b"l" + str(mine).encode()
            c.send_packet(b"vKill")
            c.reply(10)
    finally:
        stub.kill()
        stub.wait()


# -- the real gdb, no file: the bundled guest ---------------------------------------------
@needs_gdb
def test_gdb_without_a_file_gets_the_bundled_guest_s_symbols_and_sources(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}   # a build of these sources
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dbgvm", "run", "--batch", "-S", "--gdb",
                             f"127.0.0.1:{port}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    gdb = None
    try:
        wait_listening(port, proc, timeout=180)      # the guest is built first
        assert proc.stderr.readline().startswith("dbgvm: waiting for gdb")
        attach = proc.stderr.readline()
        source_map = f"set substitute-path /dbgvm-guest-src {SOURCES}"
        assert attach == f"dbgvm: attach with: gdb -ex '{source_map}' -ex " \
                         f"'target remote 127.0.0.1:{port}'\n"
        gdb = Gdb(None, port, setup=(source_map,))
        assert "Reading symbols from target:" in gdb.connected, gdb.connected
        assert gdb.console("info symbol $pc").startswith("_start in section .text")
        assert "<_start>" in gdb.console("x/i $pc")
        line = gdb.console("info line *$pc")
        assert line.startswith('Line 15 of "entry.S" starts at address'), line
        assert gdb.console("list 15,15").split("\t", 1)[1].strip() == "cli"
        gdb.console("break kprintf")
        stop = gdb.run("-exec-continue")
        assert stop["frame"]["func"] == "kprintf"
        assert stop["frame"]["fullname"] == str(SOURCES / "kernel.c")
        number = int(stop["frame"]["line"])
        listed = gdb.console(f"list {number},{number}")
        text = (SOURCES / "kernel.c").read_text().splitlines()[number - 1]
        assert listed == f"{number}\t{text}\n"
    finally:
        if gdb is not None:
            gdb.close()
        proc.kill()
        proc.wait()


# -- the real gdb, no file: Debian's Linux kernel ------------------------------------------
@pytest.fixture(scope="module")
def linux_stub(linux_kernel, tmp_path_factory):
    """`dbgvm run BZIMAGE --gdb PORT -S` (one boot for the module), its console in a file."""
    port = free_port()
    console = tmp_path_factory.mktemp("linux") / "console.txt"
    with open(console, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dbgvm", "run", str(linux_kernel.kernel),
                                 "--initrd", str(linux_kernel.initrd), "--append",
                                 "console=ttyS0 panic=-1 cryptomgr.notests", "--rtc-base",
                                 "1767225600", "--batch", "-S", "--gdb", f"127.0.0.1:{port}"],
                                stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                text=True, cwd=ROOT)
    try:
        wait_listening(port, proc, timeout=120)
        yield proc, port, console
    finally:
        proc.kill()
        proc.wait()


@needs_gdb
def test_gdb_without_a_file_breaks_on_schedule_in_linux(linux_stub, linux_kernel):
    proc, port, console = linux_stub
    raw = linux_kernel.kernel.read_bytes()
    symbols = kallsyms.symbol_map(kallsyms.kernel_symbols(raw, lambda: pytest.fail("cached")))
    lines = [proc.stderr.readline() for _ in range(4)]
    assert lines[2] == f"dbgvm: attach with: gdb -ex 'target remote 127.0.0.1:{port}'\n"
    served = lines[3].removeprefix("dbgvm: gdb gets its symbols from the stub: ").strip()
    # the kernel's symbols as an ELF in the cache (gdb cannot read the bzImage itself)
    assert Path(served) != linux_kernel.kernel and served.endswith(".symbols-1.elf")
    assert Path(served).read_bytes()[:4] == b"\x7fELF"
    start = time.monotonic()
    gdb = Gdb(None, port)
    try:
        assert f"Reading symbols from target:{served}" in gdb.connected, gdb.connected
        loaded = time.monotonic() - start
        assert loaded < 30, loaded
        assert gdb.value("$pc") == 0x1000000             # startup_32, paging still off
        assert "schedule" in gdb.console("info address schedule")
        gdb.console("break schedule")
        stop = gdb.run("-exec-continue", timeout=300)
        assert stop["reason"] == "breakpoint-hit", stop
        assert stop["frame"]["func"] == "schedule"
        assert symbols["schedule"] <= int(stop["frame"]["addr"], 16) < symbols["schedule"] + 64
        assert "<schedule" in gdb.console("x/i $pc")
        backtrace = gdb.console("bt 3")
        assert backtrace.startswith("#0  0x") and " in schedule ()" in backtrace.splitlines()[0]
        assert "schedule_preempt_disabled" in backtrace, backtrace
        assert "Linux version 6.1" in console.read_text(errors="replace")
    finally:
        gdb.close()


# -- any vFile / exec-file packet ----------------------------------------------------------
vfile_names = st.sampled_from([b"vFile:open:", b"vFile:pread:", b"vFile:fstat:", b"vFile:close:",
                               b"vFile:setfs:", b"vFile:", b"qXfer:exec-file:read:"])


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=vfile_names, args=st.binary(max_size=60))
def test_any_host_io_packet_is_answered_and_reads_only_the_served_file(served, name, args):
    session, path, data = served
    reply = session.handle(name + args)
    assert reply is not None
    if name == b"vFile:pread:" and reply.startswith(b"F") and b";" in reply:
        count, _, chunk = reply[1:].partition(b";")
        assert int(count, 16) == len(chunk) and chunk in data
    elif name.startswith(b"vFile"):
        assert reply == b"" or reply.startswith(b"F"), reply
    else:
        assert reply in (b"E01", b"") or reply[1:] in path.encode(), reply
