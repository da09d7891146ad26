#!/usr/bin/env python3
"""Re-record the gdb sessions in tests/transcripts (run this on purpose, after a change that
alters what gdb asks; tests/test_gdb_sessions.py replays them and checks each reply by its
meaning).

Each scenario is a gdb command script run with the real gdb against `dbgvm run -S --gdb`
with --gdb-transcript; the file name starts with the guest's name. Only the requests are
kept: the replies were dbgvm's own, and no test compares with them.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from gdb_harness import free_port, start_dbgvm  # noqa: E402
from guest_build import build  # noqa: E402

SCENARIOS = {
    "basics-break": ("basics", """
        break de_insn
        continue
        info registers
        info registers cr0 cr2 cr3 cr4 cpl vif gdtr_base gdtr_limit idtr_base tr
        x/8xb $eip
        stepi
        set $eax = 0x1234
        set {int}&ticks = 7
        p/x *(int*)&ticks
        hbreak timer_handler
        continue
        delete
        continue
    """),
    "basics-watch": ("basics", """
        watch *(int*)&ticks
        continue
        continue
        delete
        rwatch *(int*)&ticks
        continue
        delete
        awatch *(int*)&ticks
        continue
        kill
    """),
    "paging-user": ("paging", """
        break user_read
        continue
        info registers eip cs ss eflags cpl cr3
        x/2xw $esp
        stepi
        info registers eip cpl
        kill
    """),
}


def record(name: str, guest: str, commands: str) -> None:
    kernel = build(guest)
    port = free_port()
    out = ROOT / "tests" / "transcripts" / f"{name}.jsonl"
    proc = start_dbgvm(kernel, port, "--gdb-transcript", str(out))
    with tempfile.NamedTemporaryFile("w", suffix=".gdb", delete=False) as script:
        script.write("set pagination off\nset confirm off\n"
                     f"target remote 127.0.0.1:{port}\n")
        script.write("\n".join(line.strip() for line in commands.strip().splitlines()) + "\n")
    subprocess.run(["gdb", "--nx", "-q", "-batch", "-x", script.name, str(kernel)],
                   capture_output=True, timeout=120, check=False)
    proc.kill()
    proc.wait()
    requests = [line for line in out.read_text().splitlines()
                if json.loads(line)["dir"] == "in"]
    out.write_text("\n".join(requests) + "\n")
    print(f"{out.relative_to(ROOT)}: {len(requests)} requests")


def main() -> None:
    for name, (guest, commands) in SCENARIOS.items():
        record(name, guest, commands)


if __name__ == "__main__":
    main()
