#!/usr/bin/env python3
"""Re-record the runs in tests/traces on purpose (after a change that alters what guests see):
the bundled guest's shell with console input, its disk with a write, and two VMs pinging each
other. The suite replays them (tests/test_replay.py) and fails at the first divergent event."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT / "tests" / "traces"

RUNS = {
    "shell.trace": ([], b"help\nls\ncat motd\necho hi\nuptime\npoweroff\n"),
    "disk.trace": (["--disk", "{disk}"], b"disk info\ndisk write 3 hello trace\ndisk read 3\n"
                   b"poweroff\n"),
    "ping.trace": (["--vms", "2"], b"@1 ping 10.0.2.15\nping 10.0.2.16\n"),
}


def main() -> None:
    TRACES.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        disk = Path(tmp) / "disk.img"
        disk.write_bytes(b"".join(f"sector {i}\n".encode().ljust(512, b".")
                                  for i in range(16)))
        for name, (options, stdin) in RUNS.items():
            args = [a.format(disk=disk) for a in options]
            proc = subprocess.run([sys.executable, "-m", "dbgvm", "run", "--batch", *args,
                                   "--record", str(TRACES / name)], input=stdin,
                                  capture_output=True, cwd=ROOT, timeout=300)
            if proc.returncode != 0:
                raise SystemExit(f"{name}: dbgvm exited {proc.returncode}: "
                                 f"{proc.stderr.decode()}")
            print(f"{name}: {(TRACES / name).stat().st_size} bytes")


if __name__ == "__main__":
    main()
