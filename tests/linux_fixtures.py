"""The real Debian kernel and busybox initramfs, fetched once per test session, and a Linux VM
driven through its serial console.

CI has the network and apt, so `dbgvm linux fetch` runs there (quickly when cached). Where
the fetch cannot work (no apt, no i386, no root for the first fetch) the tests that need the
real kernel fail with the reason: booting Linux is a feature, not an option.
"""
from __future__ import annotations

import os
import re
import select
import subprocess
import time
from pathlib import Path

import pytest

from dbgvm.boot import prepare_boot
from dbgvm.core.loader import Module
from dbgvm.core.machine import Machine, Stop
from dbgvm.domains import DomainConfig, Domains
from dbgvm.linux.fetch import FetchError, LinuxFiles, fetch

RTC_BASE = 1_767_225_600          # 2026-01-01T00:00:00Z: runs repeat exactly
PROMPT = re.compile(rb"\n/ # ")
CHUNK = 20_000_000                # instructions between looks at the console
BOOT_LIMIT = 12_000_000_000       # the crypto self-tests alone are ~3 G instructions


class ConsolePipe:
    """The console of a `dbgvm run --batch` subprocess: its stdout read as it comes (without
    blocking past ``deadline``, a monotonic time), its stdin typed into."""

    def __init__(self, proc: subprocess.Popen, deadline: float) -> None:
        self.proc, self.deadline = proc, deadline
        self.output = bytearray()
        os.set_blocking(proc.stdout.fileno(), False)

    def wait_for(self, pattern: re.Pattern[bytes], start: int) -> re.Match[bytes]:
        """The first match of ``pattern`` in the output after ``start``."""
        while True:
            found = pattern.search(self.output, start)
            if found is not None:
                return found
            if not self._more():
                tail = self.output[-3000:].decode("utf-8", "replace")
                raise AssertionError(f"{pattern.pattern!r} not seen (exit status "
                                     f"{self.proc.poll()}); console ends with:\n{tail}")

    def _more(self) -> bool:
        """Read what has come (waiting up to 5 s); False at the end of the output or the
        deadline."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            return False
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], min(left, 5))
        if ready:
            try:
                data = os.read(fd, 1 << 16)        # the raw pipe: b"" only at its end
            except BlockingIOError:
                return True
            if not data:
                return False
            self.output += data
        return True

    def finish(self) -> int:
        """Read to the end; the exit status."""
        while self._more():
            pass
        return self.proc.wait(timeout=max(1, self.deadline - time.monotonic()))


@pytest.fixture(scope="session")
def linux_kernel() -> LinuxFiles:
    try:
        return fetch(lambda text: None)
    except FetchError as exc:
        pytest.fail(f"no Debian i386 kernel: dbgvm linux fetch: {exc}")


class LinuxVM:
    """One Linux guest in process: console output collected, commands typed on ttyS0."""

    def __init__(self, files: LinuxFiles, append: str, *, initrd: bytes | None = None,
                 ram_mb: int = 128, boot_decompressor: bool = False) -> None:
        data = initrd if initrd is not None else Path(files.initrd).read_bytes()
        boot = prepare_boot(str(files.kernel), append, (Module(str(files.initrd), data, ""),),
                            ram_mb, boot_decompressor)
        self.banner = boot.banner
        self.output = bytearray()
        self.domains = Domains(boot.image, 1, DomainConfig(ram_mb, board=boot.board,
                                                           rtc_start=RTC_BASE,
                                                           syscall_names=boot.syscall_names),
                               lambda vm, data: self.output.extend(data))
        self.machine: Machine = self.domains.machines[0]
        self.stop: Stop | None = None

    @property
    def console(self) -> str:
        return self.output.decode("utf-8", "replace")

    def run_until(self, pattern: re.Pattern[bytes], start: int = 0,
                  limit: int = BOOT_LIMIT) -> re.Match[bytes]:
        """Run until the console output after offset ``start`` matches ``pattern``."""
        ran = 0
        while True:
            found = pattern.search(self.output, start)
            if found is not None:
                return found
            if self.stop is not None or ran >= limit:
                tail = self.output[-2000:].decode("utf-8", "replace")
                raise AssertionError(f"{pattern.pattern!r} not seen after {ran} instructions "
                                     f"(stop: {self.stop}); console ends with:\n{tail}")
            stop = self.domains.run(CHUNK)
            ran += CHUNK
            if stop.reason.value != "max-insns":
                self.stop = stop

    def boot(self) -> None:
        self.run_until(PROMPT)

    def command(self, line: str, limit: int = 2_000_000_000) -> str:
        """Type ``line`` and return what it printed (up to the next prompt)."""
        start = len(self.output)
        self.domains.console_input(0, line.encode() + b"\n")
        echo = self.run_until(re.compile(re.escape(line.encode()) + rb"\r?\n"), start, limit)
        prompt = self.run_until(PROMPT, echo.end() - 1, limit)
        # the output up to the prompt's own line break (the last line ends in "\r" there)
        text = self.output[echo.end():prompt.start()].decode("utf-8", "replace")
        return text.replace("\r\n", "\n").removesuffix("\r")

    def power_off(self, limit: int = 2_000_000_000) -> Stop:
        self.domains.console_input(0, b"poweroff\n")
        ran = 0
        while self.stop is None and ran < limit:
            stop = self.domains.run(CHUNK)
            ran += CHUNK
            if stop.reason.value != "max-insns":
                self.stop = stop
        assert self.stop is not None, "poweroff did not end the run"
        return self.stop

    def close(self) -> None:
        self.domains.close()
