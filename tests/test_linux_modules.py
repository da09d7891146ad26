"""dbgvm's Linux guest drivers: built reproducibly against Debian's headers, carried by the
initramfs with the kernel's ext4 modules, and hal_console giving Linux a console (hvc0) on
the HAL alone."""
from __future__ import annotations

import gzip
import re
import subprocess
from pathlib import Path

import pytest

from linux_fixtures import LinuxVM

from dbgvm.core.events import Event, EventKind
from dbgvm.core.faults import StopReason
from dbgvm.linux import modules as modules_mod
from dbgvm.linux.kernel_modules import KERNEL_MODULES
from dbgvm.linux.modules import ModuleBuildError, build_modules, compile_modules, \
    driver_sources


def cpio_members(image: bytes) -> dict[str, bytes]:
    """name -> data of a gzip'd newc archive (read independently of initramfs.py)."""
    data, members, pos = gzip.decompress(image), {}, 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        size, name_size = fields[6], fields[11]
        name = data[pos + 110:pos + 110 + name_size - 1].decode()
        start = (pos + 110 + name_size + 3) & ~3
        if name == "TRAILER!!!":
            return members
        members[name] = data[start:start + size]
        pos = (start + size + 3) & ~3


def driver_names() -> list[str]:
    return sorted(name[:-2] for name in driver_sources() if name.endswith(".c"))


# -- the build ------------------------------------------------------------------------------

def test_every_driver_builds_reproducibly_from_any_path(linux_kernel, tmp_path):
    sources = driver_sources()
    first = compile_modules(sources, linux_kernel.headers, (tmp_path / "a").resolve())
    (tmp_path / "elsewhere" / "deeper").mkdir(parents=True)
    second = compile_modules(sources, linux_kernel.headers, tmp_path / "elsewhere" / "deeper")
    assert sorted(first) == driver_names() and "hal_console" in first
    for name, data in first.items():
        assert data[:4] == b"\x7fELF" and data[4] == 1              # an i386 ELF
        assert data == second[name], f"{name}.ko differs between two build directories"
        assert str(tmp_path).encode() not in data
        assert str(linux_kernel.headers.root).encode() not in data
        assert b"vermagic=" + linux_kernel.release.encode() + b" SMP" in data


def test_second_build_comes_from_the_cache(linux_kernel, tmp_path, monkeypatch):
    built = build_modules(linux_kernel.headers, tmp_path)
    assert sorted(built.modules) == driver_names()

    run = subprocess.run

    def no_make(command, *args, **kwargs):
        if command[0] == "make":
            pytest.fail("the drivers were built again")
        return run(command, *args, **kwargs)
    monkeypatch.setattr(modules_mod.subprocess, "run", no_make)
    again = build_modules(linux_kernel.headers, tmp_path)
    assert again.directory == built.directory and again.modules == built.modules


def test_a_compile_error_is_one_line_naming_the_place(linux_kernel, tmp_path):
    sources = driver_sources() | {"broken.c": b"int broken = ;\n"}
    with pytest.raises(ModuleBuildError) as caught:
        compile_modules(sources, linux_kernel.headers, tmp_path)
    message = str(caught.value)
    assert "\n" not in message and "broken.c:1" in message and "error" in message
    assert "expected expression" in caught.value.output


def test_initramfs_carries_the_modules_in_load_order(linux_kernel):
    members = cpio_members(linux_kernel.initrd.read_bytes())
    order = members["lib/modules/load-order"].decode().split()
    kernel = [Path(path).stem for path in KERNEL_MODULES]
    assert order[:len(kernel)] == kernel and "ext4" in kernel
    assert order[len(kernel)] == "hal_console" and sorted(order[len(kernel):]) == \
        driver_names()
    built = build_modules(linux_kernel.headers, linux_kernel.initrd.parent)
    for name in order:
        assert members[f"lib/modules/{name}.ko"][:4] == b"\x7fELF"
    assert members["lib/modules/hal_console.ko"] == built.modules["hal_console"]
    assert b"/etc/dbgvm.d/" in members["init"]


# -- hal_console: Linux on hvc0 -------------------------------------------------------------

class HalConsoleLog:
    """The HAL events of the VM: what the guest wrote and what it was given, by packet."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def console(self, call: str, op: str) -> list[Event]:
        return [e for e in self.events if e.fields.get("call") == call and
                e.fields.get("channel") == "console" and e.fields.get("op") == op and
                e.fields.get("status") == "OK"]


@pytest.fixture(scope="module")
def hvc(linux_kernel):
    vm = LinuxVM(linux_kernel, "console=hvc0 cryptomgr.notests")
    log = HalConsoleLog()
    vm.machine.events.subscribe({EventKind.HAL}, log)
    vm.boot()
    yield vm, log
    vm.close()


def test_console_hvc0_gives_a_shell_on_the_hal_console_only(hvc):
    vm, log = hvc
    assert vm.command("cat /sys/class/tty/console/active").strip() == "hvc0"
    assert vm.command("echo typed-$((6*7))").strip() == "typed-42"
    loaded = vm.command("cut -d' ' -f1 /proc/modules").split()
    assert {"hal_console", "ext4", "jbd2", "mbcache", "crc16", "crc32c_generic"} <= \
        set(loaded)
    # every byte of the console output, the replayed kernel log included, came in HAL
    # console WRITE packets: the UART carried nothing
    writes = log.console("submit", "WRITE")
    assert sum(e.fields["len"] for e in writes) == len(vm.output)
    assert b"Linux version 6.1" in vm.output and b"hvc0" in vm.output
    # the typed commands arrived as HAL console INPUT, each packet an interrupt
    typed = log.console("rx", "INPUT")
    assert sum(e.fields["len"] for e in typed) == sum(
        len(line) + 1 for line in ("cat /sys/class/tty/console/active",
                                   "echo typed-$((6*7))", "cut -d' ' -f1 /proc/modules"))
    stats = vm.domains.domains[0].hal.stats
    assert stats.received["console"] == len(typed) and stats.packets["console"] == len(writes)
    # nothing refused but hal_blk's probe of a block device this VM was not given (no --disk)
    assert set(stats.refused) <= {"NOCHAN"} and "block" not in stats.packets
    # the events decode the text the guest wrote
    assert any("typed-42" in str(e.fields.get("info")) for e in writes)
    assert re.search(r"console \d+", vm.domains.hal_stats(0))


def test_poweroff_from_the_hvc0_shell_ends_the_run(hvc):
    vm, _ = hvc
    stop = vm.power_off()
    assert stop.reason is StopReason.POWEROFF
