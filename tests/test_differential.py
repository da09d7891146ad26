"""Each test guest gives the same console output and exit status under dbgvm as under QEMU."""
from __future__ import annotations

import subprocess
import sys

import pytest
from guest_build import build

DIFFERENTIAL_GUESTS = ["basics", "ring3", "insns", "mbinfo"]


def run_dbgvm(kernel, *extra: str) -> tuple[bytes, int]:
    proc = subprocess.run([sys.executable, "-m", "dbgvm", "run", str(kernel), "--batch",
                           "--max-insns", "50000000", *extra], capture_output=True, timeout=120)
    return proc.stdout, proc.returncode


@pytest.mark.parametrize("name", DIFFERENTIAL_GUESTS)
def test_same_as_qemu(name, qemu):
    kernel = build(name)
    extra = ("-append", "hello world") if name == "mbinfo" else ()
    ours_extra = ("--append", "hello world") if name == "mbinfo" else ()
    expected_out, expected_status = qemu(kernel, *extra)
    out, status = run_dbgvm(kernel, *ours_extra)
    assert expected_out, "QEMU printed nothing: the guest is broken"
    assert out.decode() == expected_out.decode()
    assert status == expected_status
