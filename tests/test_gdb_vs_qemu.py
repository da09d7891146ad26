"""The same gdb session against dbgvm's stub and QEMU's (`qemu-system-i386 -s -S`) prints the
same: stops, registers as the guest sees them (cs, ss, eflags), stepped addresses, and
watchpoint old/new values."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from gdb_harness import free_port, start_dbgvm, start_qemu
from guest_build import build

pytestmark = pytest.mark.skipif(
    shutil.which("gdb") is None or shutil.which("qemu-system-i386") is None,
    reason="needs gdb and qemu-system-i386 (apt-get install gdb qemu-system-x86)")

REGS = "eip eflags cs ss ds es fs gs eax ecx edx ebx esp ebp esi edi"

SESSION = f"""
break de_insn
continue
info registers {REGS}
stepi
info registers eip eflags cs ss esp
x/4xw $esp
stepi
stepi
stepi
info registers eip
delete
watch *(int*)&ticks
continue
info registers {REGS}
continue
info registers eip eflags
delete
hbreak timer_handler
continue
info registers {REGS}
nexti
nexti
info registers eip
"""

# lines that name the stub or the process, not the guest
VARIES = re.compile(r"^(Remote debugging using|\[Inferior|Kill the program|warning: |"
                    r"0x[0-9a-f]+ in \?\? \(\)$)")


def transcript(start, kernel) -> list[str]:
    port = free_port()
    proc = start(kernel, port)
    try:
        script = f"set pagination off\nset confirm off\ntarget remote 127.0.0.1:{port}\n" + \
            SESSION + "kill\n"
        result = subprocess.run(["gdb", "--nx", "-q", "-batch", "-ex", "set confirm off"] +
                                [arg for line in script.strip().splitlines()
                                 for arg in ("-ex", line)] + [str(kernel)],
                                capture_output=True, text=True, timeout=120)
    finally:
        proc.kill()
        proc.wait()
    lines = [line for line in result.stdout.splitlines() if not VARIES.match(line)]
    # where each stub starts differs (QEMU: the BIOS reset vector; dbgvm: the kernel entry)
    return lines[next(i for i, line in enumerate(lines) if line.startswith("Breakpoint 1 at")):]


def test_same_session_as_qemu():
    kernel = build("basics")
    ours = transcript(start_dbgvm, kernel)
    theirs = transcript(start_qemu, kernel)
    assert any("Hardware watchpoint" in line for line in theirs), theirs
    assert any(line.startswith("Old value = 0") for line in theirs)
    assert ours == theirs
