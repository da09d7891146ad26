from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from guest_build import build  # noqa: E402

from dbgvm.core.assembly import build_machine  # noqa: E402
from dbgvm.core.events import Event, EventKind  # noqa: E402
from dbgvm.core.loader import load  # noqa: E402
from dbgvm.core.machine import Machine, Stop  # noqa: E402

pytest_plugins = ["linux_fixtures"]


@dataclass
class GuestRun:
    machine: Machine
    stop: Stop
    events: list[Event]

    @property
    def console(self) -> str:
        return self.machine.console_output.decode("latin-1")

    def symbol(self, name: str) -> int:
        return self.machine.symbols[name]

    def u32(self, name: str, index: int = 0) -> int:
        return int.from_bytes(self.machine.read_physical(self.symbol(name) + 4 * index, 4),
                              "little")

    def of(self, kind: EventKind) -> list[Event]:
        return [e for e in self.events if e.kind is kind]


def run_guest(name: str, max_insns: int = 20_000_000, **load_args) -> GuestRun:  # noqa: D103
    machine = build_machine(ram_mb=load_args.pop("ram_mb", 64))
    machine.load(load(build(name), machine.ram_size, **load_args))
    events: list[Event] = []
    machine.events.subscribe(set(EventKind), events.append)
    stop = machine.run(max_insns)
    return GuestRun(machine, stop, events)


@pytest.fixture
def guest():
    return run_guest


QEMU = shutil.which("qemu-system-i386")


def run_qemu(kernel: Path, *extra: str, timeout: float = 60) -> tuple[bytes, int]:
    """Console output and exit status of the kernel under QEMU (debugcon + isa-debug-exit)."""
    proc = subprocess.run([QEMU, "-kernel", str(kernel), "-m", "64", "-debugcon", "stdio",
                           "-device", "isa-debug-exit,iobase=0xf4,iosize=1", "-display", "none",
                           "-no-reboot", "-serial", "none", "-monitor", "none", *extra],
                          capture_output=True, timeout=timeout)
    return proc.stdout, proc.returncode


@pytest.fixture
def qemu():
    if QEMU is None:
        pytest.skip("qemu-system-i386 is not installed (apt-get install qemu-system-x86)")
    return run_qemu


def _record_traces_module():
    path = Path(__file__).resolve().parent.parent / "scripts" / "record_traces.py"
    spec = importlib.util.spec_from_file_location("record_traces", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


record_traces = _record_traces_module()


@pytest.fixture(scope="session")
def recorded_traces(tmp_path_factory) -> dict[str, Path]:
    """The sample runs of scripts/record_traces.py (shell, disk, two VMs pinging), recorded
    once per session with this checkout: nothing recorded is kept in the repository."""
    return record_traces.record(tmp_path_factory.mktemp("traces"))
