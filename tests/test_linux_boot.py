"""Debian's unmodified i386 kernel, deprivileged, to a busybox shell on ttyS0.

One boot with QEMU's plain command line (`console=ttyS0 panic=-1`, nothing else) is shared by
the tests of this module, in order: they type commands into the serial console as a user would
and read what comes back; the last one powers the guest off.
"""
from __future__ import annotations

import re

import pytest

from linux_fixtures import LinuxVM

from dbgvm.core.events import EventKind
from dbgvm.core.faults import StopReason
from dbgvm.domains import SLICE_SHARED


@pytest.fixture(scope="module")
def vm(linux_kernel):
    machine = LinuxVM(linux_kernel, "console=ttyS0 panic=-1")
    traps: dict[str, int] = {}

    def count(event):
        traps[event.fields["insn"].split()[0]] = traps.get(event.fields["insn"].split()[0],
                                                           0) + 1
    machine.machine.events.subscribe({EventKind.TRAP}, count)
    machine.traps = traps
    machine.boot()
    yield machine
    machine.close()


def test_the_boot_line_shows_the_command_line_with_reservetop(vm):
    assert vm.banner.endswith("command line: console=ttyS0 panic=-1 reservetop=4M")
    assert "Kernel command line: console=ttyS0 panic=-1 reservetop=4M" in vm.console


def test_the_kernel_found_the_board(vm):
    log = vm.console
    assert "Reserving virtual address space above 0xffc00000" in log
    assert re.search(r"tsc: Detected 100\.\d+ MHz processor", log)
    assert "ttyS0 at I/O 0x3f8 (irq = 4, base_baud = 115200) is a 16550A" in log
    assert "rtc_cmos rtc_cmos: setting system clock to 2026-01-01T00:00:" in log
    assert "ACPI: PM: (supports S0 S5)" in log
    assert "Run /init as init process" in log
    # nothing went wrong on the way
    for bad in ("BUG:", "WARNING:", "Oops", "Kernel panic", "Marking TSC unstable", "initcall",
                "returned with disabled interrupts"):
        assert bad not in log, bad


def test_uname_shows_linux_6_1(vm):
    assert vm.command("uname -r").strip().startswith("6.1.0-")
    assert vm.command("uname -m").strip() == "i686"


def test_shell_arithmetic(vm):
    assert vm.command("echo $((6*7)) $((1<<20))").strip() == "42 1048576"


def test_proc_interrupts_shows_the_timer_and_ttys0(vm):
    out = vm.command("cat /proc/interrupts")
    rows = {line.split()[-1]: int(line.split()[1]) for line in out.splitlines()
            if re.match(r"\s*\d+:", line)}
    assert rows["timer"] > 100 and rows["ttyS0"] > 0


def test_long_output_and_pipes(vm):
    out = vm.command("dmesg")
    assert len(out) > 10_000 and "Linux version 6.1.0" in out and out.count("\n") > 200
    head = vm.command("cat /proc/cpuinfo | head -n 3").splitlines()
    assert head == ["processor\t: 0", "vendor_id\t: dbgvmVirtCPU", "cpu family\t: 6"]
    assert vm.command("seq 1 2000 | wc -l").strip() == "2000"
    assert vm.command("yes dbgvm | head -c 100000 | wc -c").strip() == "100000"


def test_pushf_shows_the_virtual_if_so_no_irq_state_warnings(vm):
    # the kernel checks the IRQ state with PUSHF after every initcall
    assert "returned with disabled interrupts" not in vm.command("dmesg")


def test_sensitive_instructions_were_emulated(vm):
    # the kernel ran deprivileged: its CLI/STI and CR3 writes trapped into the monitor
    assert vm.traps.get("cli", 0) > 1000 and vm.traps.get("sti", 0) > 1000
    assert vm.traps.get("mov", 0) > 100


def test_poweroff_ends_the_run_with_status_0(vm):
    stop = vm.power_off()
    assert stop.reason is StopReason.POWEROFF
    assert stop.message == "guest powered off" and stop.exit_status == 0
    assert "reboot: Power down" in vm.console


def test_a_boot_in_the_time_slices_of_several_vms_reaches_the_prompt(linux_kernel):
    """With the 1 ms slices VMs share (domains.py), a timer interrupt once came right before a
    spurious #DB: the VMM then "repaired" the arithmetic flags of an instruction that had not
    started (a #DB is reported between instructions), pushed that garbage as EFLAGS, and the
    kernel's IRET from its #DB handler double-faulted right after "Run /init"."""
    vm = LinuxVM(linux_kernel, "console=ttyS0 cryptomgr.notests")
    try:
        vm.domains._slice = SLICE_SHARED        # what --vms 2 uses, on one VM: reproducible
        vm.boot()
        assert vm.stop is None, vm.stop
    finally:
        vm.close()
