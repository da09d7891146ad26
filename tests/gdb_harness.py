"""Driving the real gdb against a dbgvm (or QEMU) gdb stub through pygdbmi, as IDEs do."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from pygdbmi.gdbcontroller import GdbController


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dbgvm(kernel: Path, port: int, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "dbgvm", "run", str(kernel), "--batch", "-S",
                             "--gdb", f"127.0.0.1:{port}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_listening(port, proc)
    return proc


def start_qemu(kernel: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(["qemu-system-i386", "-kernel", str(kernel), "-m", "64",
                             "-display", "none", "-no-reboot", "-serial", "none",
                             "-monitor", "none", "-debugcon", "file:/dev/null",
                             "-device", "isa-debug-exit,iobase=0xf4,iosize=1",
                             "-gdb", f"tcp:127.0.0.1:{port}", "-S"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_listening(port, proc)
    return proc


def _listening(port: int) -> bool:
    """Is something listening on 127.0.0.1:port? (Read from /proc: connecting to probe would
    count as a debugger session, and QEMU resumes the guest when a debugger hangs up.)"""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
                return True
    return False


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"stub exited early: {proc.stderr.read().decode()}")
        if _listening(port):
            return
        time.sleep(0.05)
    raise RuntimeError("stub did not start listening")


class Gdb:
    """A gdb/MI session. ``console`` runs a CLI command and returns what gdb printed."""

    def __init__(self, kernel: Path | None, port: int, *, setup: tuple[str, ...] = (),
                 connect_timeout: float = 20) -> None:
        """``kernel`` None: gdb gets no file and loads the one the stub serves."""
        self.mi = GdbController(command=["gdb", "--nx", "--quiet", "--interpreter=mi3",
                                         *([str(kernel)] if kernel is not None else [])],
                                time_to_check_for_additional_output_sec=0.05)
        self.console("set pagination off")
        self.console("set confirm off")
        self.console("set mi-async on")       # so that -exec-interrupt works while running
        for command in setup:
            self.console(command)
        self.connected = self.console(f"target remote 127.0.0.1:{port}",
                                      timeout=connect_timeout)

    def _collect(self, responses: list[dict], until: set[str], timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while not any(r.get("message") in until and r.get("type") in ("result", "notify")
                      for r in responses):
            if time.monotonic() > deadline:
                raise TimeoutError(f"gdb did not answer: {responses}")
            responses += self.mi.get_gdb_response(timeout_sec=0.5, raise_error_on_timeout=False)
        return responses

    def console(self, command: str, timeout: float = 20) -> str:
        escaped = command.replace("\\", "\\\\").replace('"', '\\"')
        responses = self.mi.write(f'-interpreter-exec console "{escaped}"', timeout_sec=timeout,
                                  raise_error_on_timeout=False)
        responses = self._collect(responses, {"done", "error"}, timeout)
        errors = [r for r in responses if r.get("message") == "error"]
        if errors:
            raise RuntimeError(errors[0]["payload"].get("msg"))
        # console output, and target output (what `monitor` commands print)
        return "".join(r["payload"] for r in responses if r.get("type") in ("console", "target")
                       and isinstance(r.get("payload"), str))

    def run(self, command: str, timeout: float = 30) -> dict:
        """An execution command (continue, stepi...): returns the *stopped record."""
        responses = self.mi.write(command, timeout_sec=timeout, raise_error_on_timeout=False)
        responses = self._collect(responses, {"stopped"}, timeout)
        return next(r["payload"] for r in responses if r.get("message") == "stopped")

    def interrupt(self) -> dict:
        responses = self.mi.write("-exec-interrupt", timeout_sec=5, raise_error_on_timeout=False)
        responses = self._collect(responses, {"stopped"}, 10)
        return next(r["payload"] for r in responses if r.get("message") == "stopped")

    def value(self, expression: str) -> int:
        text = self.console(f"p/x {expression}")
        match = re.search(r"= (0x[0-9a-f]+)", text)
        if not match:
            raise ValueError(f"no value in {text!r}")
        return int(match.group(1), 16)

    def close(self) -> None:
        try:
            self.mi.exit()
        except Exception:  # noqa: BLE001 - already gone
            pass


def gdb_available() -> bool:
    return os.path.exists("/usr/bin/gdb") or bool(
        subprocess.run(["which", "gdb"], capture_output=True).stdout)
