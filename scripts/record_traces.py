#!/usr/bin/env python3
"""Record the sample runs the test suite replays: the bundled guest's shell with console input,
its disk with a write, and two VMs pinging each other.

    python scripts/record_traces.py DIR      # writes DIR/shell.trace, disk.trace, ping.trace

The suite records them afresh in every session (tests/conftest.py, the `recorded_traces`
fixture: well under a second once the guest is built), so no recording is kept in the
repository; this script makes the same files for a look at them (`zcat DIR/shell.trace`) or a
replay by hand (`dbgvm replay DIR/shell.trace`)."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

RUNS = {
    "shell.trace": ([], b"help\nls\ncat motd\necho hi\nuptime\npoweroff\n"),
    "disk.trace": (["--disk", "{disk}"], b"disk info\ndisk write 3 hello trace\ndisk read 3\n"
                   b"poweroff\n"),
    "ping.trace": (["--vms", "2"], b"@1 ping 10.0.2.15\nping 10.0.2.16\n"),
}


def record(out_dir: Path) -> dict[str, Path]:
    """Record every run of RUNS into out_dir; the paths of the traces, by name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    traces = {}
    with tempfile.TemporaryDirectory() as tmp:
        disk = Path(tmp) / "disk.img"
        disk.write_bytes(b"".join(f"sector {i}\n".encode().ljust(512, b".")
                                  for i in range(16)))
        for name, (options, stdin) in RUNS.items():
            args = [a.format(disk=disk) for a in options]
            trace = out_dir / name
            proc = subprocess.run([sys.executable, "-m", "dbgvm", "run", "--batch", *args,
                                   "--record", str(trace)], input=stdin,
                                  capture_output=True, cwd=ROOT, timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"{name}: dbgvm exited {proc.returncode}: "
                                   f"{proc.stderr.decode()}")
            traces[name] = trace
    return traces


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {sys.argv[0]} DIR")
    for name, trace in record(Path(sys.argv[1])).items():
        print(f"{trace}: {trace.stat().st_size} bytes")


if __name__ == "__main__":
    main()
