"""The bundled guest kernel (dbgvm/guest, docs/guest.md): it builds and caches; it boots under
QEMU through the no-HAL fallback (debugcon + isa-debug-exit) and runs every shell command there
from a `script=` command line; and, once the host HAL is in the CLI, end to end through
`dbgvm run --batch` with stdin piped (console, disk, initrd archives, two VMs pinging).

Expected values come from the shell's documented output formats (docs/guest.md) and from the
HAL spec (docs/hal.md: MACs 52:54:00:12:34:0N, addresses 10.0.2.15 + N), not from the code.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from dbgvm.guest import GuestBuildError, bundled_kernel
from dbgvm.guest import build as guest_build

PROMPT = "$ "
ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------- archives

def make_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("docs")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_cpio(path: Path, files: dict[str, bytes]) -> Path:
    """A cpio archive in the "newc" format, written by hand (no cpio tool needed)."""
    out = bytearray()

    def entry(name: str, mode: int, data: bytes, ino: int) -> None:
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out.extend(b"070701" + b"".join(b"%08X" % v for v in fields) + encoded)
        out.extend(bytes(-len(out) % 4))
        out.extend(data)
        out.extend(bytes(-len(out) % 4))

    entry("docs", 0o040755, b"", 1)
    for ino, (name, data) in enumerate(files.items(), start=2):
        entry(name, 0o100644, data, ino)
    entry("TRAILER!!!", 0, b"", 0)
    path.write_bytes(bytes(out))
    return path


ARCHIVE_FILES = {"hello.txt": b"Hello from the archive.\n", "docs/notes.md": b"line one\nline two\n",
                 "empty": b""}


def expected_ls(files: dict[str, bytes]) -> list[str]:
    return [f"{name:<16} {len(data)}" for name, data in files.items()]


# ---------------------------------------------------------------------------- the build

def test_builds_a_multiboot_elf_and_caches_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    kernel = bundled_kernel()
    assert kernel.is_file()
    assert kernel.parent.parent == tmp_path / "dbgvm" / "guest"
    assert kernel.name == "kernel.elf"
    data = kernel.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 1 and struct.unpack_from("<H", data, 18)[0] == 3
    # Multiboot v1 header: magic, flags, checksum, 4-aligned in the first 8 KiB of the file
    for off in range(0, 8192, 4):
        magic, flags, check = struct.unpack_from("<3I", data, off)
        if magic == 0x1BADB002:
            assert (magic + flags + check) & 0xFFFFFFFF == 0
            break
    else:
        pytest.fail("no Multiboot header in the first 8 KiB")
    # loaded at 1 MiB, nothing at or above the monitor's 0xFFC00000
    phoff, = struct.unpack_from("<I", data, 28)
    phentsize, phnum = struct.unpack_from("<HH", data, 42)
    loads = [struct.unpack_from("<8I", data, phoff + i * phentsize) for i in range(phnum)]
    loads = [p for p in loads if p[0] == 1]
    assert min(p[3] for p in loads) == 0x100000
    assert max(p[3] + p[5] for p in loads) < 0xFFC00000
    mtime = kernel.stat().st_mtime_ns
    assert bundled_kernel() == kernel and kernel.stat().st_mtime_ns == mtime   # cached
    assert [p.name for p in kernel.parent.parent.iterdir()] == [kernel.parent.name]  # no debris


def test_cache_key_follows_sources_and_flags(tmp_path, monkeypatch):
    key = guest_build.cache_key()
    monkeypatch.setattr(guest_build, "CFLAGS", guest_build.CFLAGS + ("-DEXTRA",))
    assert guest_build.cache_key() != key
    monkeypatch.undo()
    src = tmp_path / "src"
    shutil.copytree(guest_build.SOURCE_DIR, src)
    monkeypatch.setattr(guest_build, "SOURCE_DIR", src)
    assert guest_build.cache_key() == key
    (src / "shell.c").write_text((src / "shell.c").read_text() + "\n/* changed */\n")
    assert guest_build.cache_key() != key


def test_missing_tool_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(guest_build, "CC", "dbgvm-no-such-gcc")
    with pytest.raises(GuestBuildError) as info:
        bundled_kernel()
    message = str(info.value)
    assert "dbgvm-no-such-gcc" in message and "\n" not in message


def test_compiler_error_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    src = tmp_path / "src"
    shutil.copytree(guest_build.SOURCE_DIR, src)
    (src / "fs.c").write_text((src / "fs.c").read_text() + "\nthis is not C;\n")
    monkeypatch.setattr(guest_build, "SOURCE_DIR", src)
    with pytest.raises(GuestBuildError) as info:
        bundled_kernel()
    message = str(info.value)
    assert "fs.c" in message and "error" in message and "\n" not in message
    assert not list((tmp_path / "cache").rglob("kernel.elf"))


def test_sources_ship_with_the_package():
    import tomllib
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["dbgvm.guest"]
    shipped = {p for pattern in patterns for p in guest_build.SOURCE_DIR.parent.glob(pattern)}
    assert set(guest_build.sources()) <= shipped
    assert {"kernel.c", "entry.S", "link.ld", "shell.c"} <= {p.name for p in shipped}


# ---------------------------------------------------------------------------- under QEMU

def qemu_shell(qemu, script: str, *extra: str) -> tuple[str, int]:
    out, status = qemu(bundled_kernel(), "-append", f"script={script}", *extra, timeout=60)
    return out.decode("latin-1"), status


def command_output(console: str, command: str) -> list[str]:
    """Lines printed by COMMAND (the script echoes each command after the prompt)."""
    marker = PROMPT + command + "\n"
    assert marker in console, f"{command!r} never ran:\n{console}"
    rest = console.split(marker, 1)[1]
    return rest.split(PROMPT, 1)[0].splitlines()


def test_qemu_boots_to_the_prompt_and_powers_off_at_eof(qemu):
    out, status = qemu(bundled_kernel(), timeout=60)
    console = out.decode("latin-1")
    assert "no HAL" in console.splitlines()[0]
    assert console.endswith(PROMPT + "\n")      # EOF at the prompt: newline, then poweroff
    assert status == (0 << 1) | 1               # POWEROFF 0 through isa-debug-exit


def test_qemu_every_shell_command(qemu):
    console, status = qemu_shell(qemu, "help;echo  hello   world ;echo;ls;cat motd;cat nope;"
                                 "disk info;disk read 0;disk write 0 x;ping 10.0.2.16;uptime;"
                                 "frobnicate now;disk;ping 1.2.3")
    assert status == 1
    help_lines = command_output(console, "help")
    for name in ("help", "echo", "ls", "cat", "disk info", "disk read", "disk write", "ping",
                 "uptime", "poweroff"):
        assert any(line.strip().startswith(name) for line in help_lines), name
    assert command_output(console, "echo  hello   world ") == ["hello world"]
    assert command_output(console, "echo") == [""]
    ls = command_output(console, "ls")
    assert [line.split()[0] for line in ls] == ["README", "motd"]
    motd = command_output(console, "cat motd")
    assert len(motd) == 1 and int(ls[1].split()[1]) == len(motd[0]) + 1
    assert command_output(console, "cat nope") == ["cat: nope: no such file"]
    for cmd in ("disk info", "disk read 0", "disk write 0 x"):
        assert command_output(console, cmd) == ["disk: no disk"]
    assert command_output(console, "ping 10.0.2.16") == ["ping: no network"]
    assert re.fullmatch(r"up \d+\.\d\d s", command_output(console, "uptime")[0])
    assert command_output(console, "frobnicate now") == [
        "frobnicate: unknown command (try 'help')"]
    assert command_output(console, "disk") == [
        "usage: disk info | disk read N | disk write N TEXT"]
    assert command_output(console, "ping 1.2.3")[0].startswith("usage: ping IP")


@pytest.mark.parametrize("kind", ["tar", "cpio"])
def test_qemu_files_from_an_initrd_archive(qemu, tmp_path, kind):
    archive = (make_tar if kind == "tar" else make_cpio)(tmp_path / f"files.{kind}",
                                                         ARCHIVE_FILES)
    console, status = qemu_shell(qemu, "ls;cat hello.txt;cat docs/notes.md;cat empty;cat README",
                                 "-initrd", str(archive))
    assert f"files: 3 ({kind} initrd)" in console
    assert command_output(console, "ls") == expected_ls(ARCHIVE_FILES)
    assert command_output(console, "cat hello.txt") == ["Hello from the archive."]
    assert command_output(console, "cat docs/notes.md") == ["line one", "line two"]
    assert command_output(console, "cat empty") == []
    assert command_output(console, "cat README") == ["cat: README: no such file"]


def test_qemu_a_module_that_is_no_archive_gives_the_built_in_files(qemu, tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not an archive" * 100)
    console, _ = qemu_shell(qemu, "ls", "-initrd", str(junk))
    assert [line.split()[0] for line in command_output(console, "ls")] == ["README", "motd"]


# ---------------------------------------------------------------------------- dbgvm end to end

DEVICE_FREE_SCRIPT = "help;echo a  b;ls;cat motd;cat README;bogus;echo done"


def shell_part(console: str) -> str:
    return console[console.index(PROMPT):]


def test_dbgvm_runs_the_shell_as_qemu_does(qemu):
    """The same kernel, the same script: the shell's output is identical under dbgvm (with or
    without the host HAL) and under QEMU (no HAL)."""
    qemu_console, _ = qemu_shell(qemu, DEVICE_FREE_SCRIPT)
    proc = subprocess.run([sys.executable, "-m", "dbgvm", "run", str(bundled_kernel()), "--batch",
                           "--append", f"script={DEVICE_FREE_SCRIPT}"], capture_output=True,
                          timeout=120, cwd=ROOT, stdin=subprocess.DEVNULL)
    console = proc.stdout.decode("latin-1")
    assert proc.returncode in (0, 1), proc.stderr     # POWEROFF 0: HAL, or port 0xF4
    assert shell_part(console) == shell_part(qemu_console)
    assert command_output(console, "echo done") == ["done"]

def _cli_help() -> str:
    proc = subprocess.run([sys.executable, "-m", "dbgvm", "run", "--help"], capture_output=True,
                          text=True, cwd=ROOT)
    return proc.stdout


HOST_READY = all(opt in _cli_help() for opt in ("--disk", "--vms", "--pcap", "--disk-writable"))
needs_host = pytest.mark.skipif(not HOST_READY, reason="the host HAL and its CLI options "
                                "(--disk, --vms, --pcap) are not in dbgvm yet")


def dbgvm_run(*args: str, stdin: str = "", timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dbgvm", "run", "--batch", *args],
                          input=stdin.encode(), capture_output=True, timeout=timeout, cwd=ROOT)


def after_prompts(stdout: bytes) -> list[list[str]]:
    """Output of each command, in order (stdin is not echoed: each chunk follows a prompt)."""
    text = stdout.decode("latin-1")
    return [chunk.splitlines() for chunk in text.split(PROMPT)[1:]]


@needs_host
def test_dbgvm_echo_and_poweroff():
    proc = dbgvm_run(stdin="echo hi\npoweroff\n")
    assert proc.returncode == 0, proc.stderr
    chunks = after_prompts(proc.stdout)
    assert chunks[0] == ["hi"]
    assert len(chunks) == 2 and chunks[1] == []
    assert "HAL ABI 1, irq 5" in proc.stdout.decode()


@needs_host
def test_dbgvm_eof_at_the_prompt_powers_off_with_status_0():
    proc = dbgvm_run(stdin="uptime\n")
    assert proc.returncode == 0, proc.stderr
    chunks = after_prompts(proc.stdout)
    assert re.fullmatch(r"up \d+\.\d\d s", chunks[0][0])
    assert proc.stdout.decode().endswith(PROMPT + "\n")


@needs_host
def test_dbgvm_shell_commands_without_disk_or_net():
    proc = dbgvm_run(stdin="help\nls\ncat motd\nnosuch\ndisk info\nping 10.0.2.16\n")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert "disk: none" in out and "net: " in out
    chunks = after_prompts(proc.stdout)
    assert chunks[0][0] == "commands:"
    assert [line.split()[0] for line in chunks[1]] == ["README", "motd"]
    assert chunks[2] == ["Welcome to the dbgvm guest. Type 'help' for commands."]
    assert chunks[3] == ["nosuch: unknown command (try 'help')"]
    assert chunks[4] == ["disk: no disk"]


def _disk(tmp_path: Path) -> tuple[Path, bytes]:
    image = tmp_path / "disk.img"
    content = bytes(range(256)) * 2 + b"second sector".ljust(512, b".") + bytes(512 * 6)
    image.write_bytes(content)
    return image, content


@needs_host
def test_dbgvm_disk_info_and_read(tmp_path):
    image, content = _disk(tmp_path)
    proc = dbgvm_run("--disk", str(image), stdin="disk info\ndisk read 1\ndisk read 8\n")
    assert proc.returncode == 0, proc.stderr
    chunks = after_prompts(proc.stdout)
    assert chunks[0] == ["disk: 8 sectors of 512 bytes (4 KiB), copy-on-write"]
    rows = chunks[1]
    assert len(rows) == 32
    sector = content[512:1024]
    for i, row in enumerate(rows):
        data = sector[16 * i:16 * i + 16]
        hexes = " ".join(f"{b:02x}" for b in data[:8]) + "  " + " ".join(
            f"{b:02x}" for b in data[8:])
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in data)
        assert row == f"{16 * i:04x}  {hexes}  |{text}|"
    assert chunks[2] == ["disk: sector 8 out of range (the disk has 8 sectors)"]


@needs_host
@pytest.mark.parametrize("writable", [False, True])
def test_dbgvm_disk_write(tmp_path, writable):
    image, content = _disk(tmp_path)
    flags = ["--disk-writable"] if writable else []
    proc = dbgvm_run("--disk", str(image), *flags,
                     stdin="disk write 2 hello  disk\ndisk read 2\n")
    assert proc.returncode == 0, proc.stderr
    chunks = after_prompts(proc.stdout)
    assert chunks[0] == ["disk: wrote 11 bytes to sector 2"]
    assert chunks[1][0] == ("0000  68 65 6c 6c 6f 20 20 64  69 73 6b 00 00 00 00 00  "
                            "|hello  disk.....|")
    expected = bytearray(content)
    expected[1024:1536] = b"hello  disk".ljust(512, b"\0")
    assert image.read_bytes() == (bytes(expected) if writable else content)


@needs_host
@pytest.mark.parametrize("kind", ["tar", "cpio"])
def test_dbgvm_files_from_initrd(tmp_path, kind):
    archive = (make_tar if kind == "tar" else make_cpio)(tmp_path / f"f.{kind}", ARCHIVE_FILES)
    proc = dbgvm_run("--initrd", str(archive), stdin="ls\ncat docs/notes.md\n")
    assert proc.returncode == 0, proc.stderr
    chunks = after_prompts(proc.stdout)
    assert chunks[0] == expected_ls(ARCHIVE_FILES)
    assert chunks[1] == ["line one", "line two"]


@needs_host
def test_dbgvm_two_vms_ping_each_other(tmp_path):
    pcap = tmp_path / "net.pcap"
    stdin = "@1 ping 10.0.2.15\nping 10.0.2.16\nping 10.0.2.99\nping 10.0.2.15\n"
    proc = dbgvm_run("--vms", "2", "--pcap", str(pcap), stdin=stdin, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert "52:54:00:12:34:01 10.0.2.15/24" in out and "52:54:00:12:34:02 10.0.2.16/24" in out
    reply = r"64 bytes from {ip}: icmp_seq={seq} ttl=64 time=\d+\.\d{{3}} ms"
    for ip in ("10.0.2.15", "10.0.2.16"):
        for seq in (1, 2, 3):
            assert re.search(reply.format(ip=re.escape(ip), seq=seq), out), (ip, seq, out)
    assert out.count("3 transmitted, 3 received, 0% packet loss") >= 2
    assert "ping: 10.0.2.99: no ARP reply (host unreachable)" in out
    frames = _pcap_frames(pcap.read_bytes())
    arp = [f for f in frames if f[12:14] == b"\x08\x06"]
    icmp = [f for f in frames if f[12:14] == b"\x08\x00" and f[23] == 1]
    assert any(f[0:6] == b"\xff" * 6 and f[20:22] == b"\x00\x01" for f in arp)  # requests
    assert any(f[20:22] == b"\x00\x02" for f in arp)                             # replies
    types = [f[34] for f in icmp]
    assert types.count(8) >= 6 and types.count(0) >= 6       # 2 x 3 echo requests, replies
    macs = {f[6:12] for f in frames}
    assert macs <= {bytes.fromhex("525400123401"), bytes.fromhex("525400123402")}


def _pcap_frames(data: bytes) -> list[bytes]:
    magic, = struct.unpack_from("<I", data)
    assert magic == 0xA1B2C3D4 and struct.unpack_from("<I", data, 20)[0] == 1   # Ethernet
    frames, off = [], 24
    while off < len(data):
        _, _, incl, _ = struct.unpack_from("<4I", data, off)
        frames.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return frames


# ---------------------------------------------------------------------------- against a spec HAL
# A minimal host written from docs/hal.md alone (PROBE, SUBMIT, POST_RX, IRQ 5), registered on
# the core's hypercall bus: it checks the guest's drivers independently of dbgvm/hal.

class SpecHal:
    MAC = bytes.fromhex("525400123401")
    IP = bytes([10, 0, 2, 15])

    def __init__(self, disk: bytearray | None = None) -> None:
        from dbgvm.core.assembly import build_machine
        from dbgvm.core.loader import load
        self.machine = build_machine(ram_mb=64)
        self.machine.load(load(bundled_kernel(), self.machine.ram_size))
        self.machine.hypercalls.register(self.call)
        self.out = bytearray()
        self.posted: dict[int, list[int]] = {1: [], 3: []}
        self.seq = {1: 0, 3: 0}
        self.disk, self.sent, self.status = disk, [], None

    def call(self, args):
        from dbgvm.core.hypercalls import HypercallResult
        m = self.machine
        if args.eax == 0:
            return HypercallResult(0, 0x4C414844, 1, 5)
        addr = args.ebx
        channel, op, length, _, _ = struct.unpack("<HHIIi", m.read_physical(addr, 16))
        if args.eax == 2:
            self.posted[channel].append(addr)
            m.write_physical(addr + 12, struct.pack("<i", 1))
            return HypercallResult(0)
        payload = m.read_physical(addr + 16, length)
        status = 0
        if channel == 0:
            self.status = struct.unpack("<I", payload[:4])[0]
            m.power_off(self.status, "poweroff")
        elif channel == 1:
            self.out += payload
        elif channel == 2 and self.disk is None:
            status = -3
        elif channel == 2 and op == 1:
            m.write_physical(addr + 16, struct.pack("<III", len(self.disk) // 512, 512, 1))
        elif channel == 2 and op in (2, 3):
            sector, count = struct.unpack("<II", payload[:8])
            if op == 2:
                m.write_physical(addr + 24, bytes(self.disk[sector * 512:(sector + count) * 512]))
            else:
                self.disk[sector * 512:(sector + count) * 512] = payload[8:8 + count * 512]
        elif channel == 3 and op == 1:
            m.write_physical(addr + 16, self.MAC + b"\0\0" + self.IP + bytes([255, 255, 255, 0]))
        elif channel == 3 and op == 2:
            self.sent.append(bytes(payload))
        m.write_physical(addr + 12, struct.pack("<i", status))
        return HypercallResult(status)

    def deliver(self, channel: int, op: int, data: bytes) -> None:
        addr = self.posted[channel].pop(0)
        self.seq[channel] += 1
        self.machine.write_physical(addr + 16, data)
        self.machine.write_physical(addr, struct.pack("<HHIIi", channel, op, len(data),
                                                      self.seq[channel], 0))
        self.machine.raise_irq(5)

    def run_until_prompt(self) -> str:
        start = len(self.out)
        for _ in range(200):
            stop = self.machine.run(100_000)
            if stop.reason.value != "max-insns" or self.out.endswith(PROMPT.encode()):
                break
        return self.out[start:].decode("latin-1")


def _checksum(data: bytes) -> int:
    data += bytes(len(data) % 2)
    total = sum(struct.unpack(f">{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_spec_hal_console_disk_and_poweroff():
    disk = bytearray(b"sector zero".ljust(512, b"\0") + bytes(512 * 3))
    hal = SpecHal(disk)
    boot = hal.run_until_prompt()
    assert boot.splitlines()[:3] == ["dbgvm guest: HAL ABI 1, irq 5, 65408 KiB RAM",
                                     "disk: 4 sectors, writable",
                                     "net: 52:54:00:12:34:01 10.0.2.15/24"]
    hal.deliver(1, 2, b"echo  split ")              # a line in two INPUT packets
    hal.machine.run(50_000)
    hal.deliver(1, 2, b"line\r\ndisk write 3 abc\n")
    assert hal.run_until_prompt() == ("split line\n" + PROMPT
                                      + "disk: wrote 3 bytes to sector 3\n" + PROMPT)
    assert disk[1536:1540] == b"abc\0"
    hal.deliver(1, 2, b"disk read 0\n")
    rows = hal.run_until_prompt().splitlines()
    assert rows[0] == "0000  73 65 63 74 6f 72 20 7a  65 72 6f 00 00 00 00 00  |sector zero.....|"
    hal.deliver(1, 3, b"")                          # EOF at the prompt: POWEROFF 0
    assert hal.run_until_prompt() == "\n"
    assert hal.status == 0


def test_spec_hal_answers_arp_and_echo_requests():
    hal = SpecHal()
    hal.run_until_prompt()
    peer, peer_ip = bytes.fromhex("525400123409"), bytes([10, 0, 2, 30])
    arp = (b"\xff" * 6 + peer + b"\x08\x06" + b"\x00\x01\x08\x00\x06\x04\x00\x01" + peer
           + peer_ip + bytes(6) + SpecHal.IP)
    hal.deliver(3, 3, arp)
    hal.machine.run(50_000)
    reply = hal.sent[-1]
    assert reply[:14] == peer + SpecHal.MAC + b"\x08\x06"
    assert reply[14:42] == (b"\x00\x01\x08\x00\x06\x04\x00\x02" + SpecHal.MAC + SpecHal.IP
                            + peer + peer_ip)
    ip = bytearray(b"\x45\x00\x00\x24\x00\x01\x00\x00\x40\x01\x00\x00" + peer_ip + SpecHal.IP)
    ip[10:12] = struct.pack(">H", _checksum(bytes(ip)))
    icmp = bytearray(b"\x08\x00\x00\x00\x12\x34\x00\x07abcdefgh")
    icmp[2:4] = struct.pack(">H", _checksum(bytes(icmp)))
    hal.deliver(3, 3, SpecHal.MAC + peer + b"\x08\x00" + bytes(ip) + bytes(icmp))
    hal.machine.run(50_000)
    echo = hal.sent[-1]
    assert echo[:14] == peer + SpecHal.MAC + b"\x08\x00"
    assert echo[26:30] == SpecHal.IP and echo[30:34] == peer_ip and _checksum(echo[14:34]) == 0
    assert echo[34:50] == b"\x00\x00" + echo[36:38] + b"\x12\x34\x00\x07abcdefgh"
    assert _checksum(echo[34:50]) == 0
