"""Each test guest gives the same console output and exit status under dbgvm as under QEMU
(`qemu-system-i386 -kernel K -debugcon stdio -device isa-debug-exit,iobase=0xf4,iosize=1`)."""
from __future__ import annotations

import subprocess
import sys

import pytest
from guest_build import build


def run_dbgvm(kernel, *extra: str) -> tuple[bytes, int]:
    proc = subprocess.run([sys.executable, "-m", "dbgvm", "run", str(kernel), "--batch",
                           "--max-insns", "50000000", *extra], capture_output=True, timeout=120)
    return proc.stdout, proc.returncode


def _module(tmp_path):
    path = tmp_path / "module.bin"
    path.write_bytes(b"ABCDEFGH-module")
    return str(path)


# guest -> (QEMU arguments, dbgvm arguments), given a temporary directory
CASES = {
    "basics": lambda tmp: ((), ()),
    "ring3": lambda tmp: ((), ()),
    "insns": lambda tmp: ((), ()),
    "paging": lambda tmp: ((), ()),
    "spaces": lambda tmp: ((), ()),
    "vif": lambda tmp: ((), ()),
    "cflost": lambda tmp: ((), ()),
    "desctables": lambda tmp: (("-append", "mode=flat"), ("--append", "mode=flat")),
    "desctables-paging": lambda tmp: (("-append", "mode=paging"), ("--append", "mode=paging")),
    "mbinfo": lambda tmp: (("-append", "hello world", "-initrd", f"{_module(tmp)} arg1"),
                           ("--append", "hello world", "--initrd", f"{_module(tmp)} arg1")),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_as_qemu(name, qemu, tmp_path):
    kernel = build(name.split("-")[0])
    qemu_args, our_args = CASES[name](tmp_path)
    expected_out, expected_status = qemu(kernel, *qemu_args)
    out, status = run_dbgvm(kernel, *our_args)
    assert expected_status != 0, "QEMU did not reach the guest's debug exit"
    assert out.decode() == expected_out.decode()
    assert status == expected_status
