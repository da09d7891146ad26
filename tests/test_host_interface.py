"""The core's device-facing interface: host writes that keep translated code and shadows
coherent, the hypercall bus, and runs bounded in virtual time (lockstep VMs)."""
from __future__ import annotations

import struct

from dbgvm.core.assembly import build_machine
from dbgvm.core.faults import StopReason
from dbgvm.core.hypercalls import HypercallArgs, HypercallResult
from dbgvm.core.loader import BootImage, Chunk
from dbgvm.core.machine import Machine
from dbgvm.core.vcpu import CR0_PE, CR0_PG

CODE = 0x100000


def _machine(code: bytes, at: int = CODE) -> Machine:
    machine = build_machine(ram_mb=4)
    machine.load(BootImage((Chunk(at, code, len(code)),), at, False, 0, 0, {}))
    return machine


MOV_EAX_1_SPIN = b"\xb8\x01\x00\x00\x00\xeb\xfe"     # mov eax,1 ; jmp $


def _rerun_from(machine: Machine, eip: int) -> int:
    machine.write_register("eip", eip)
    machine.run(20)
    return machine.registers().eax


PAGE_TABLE = 0x11000


def _paged_spinner() -> Machine:
    """MOV_EAX_1_SPIN at physical 0x200000, run under guest paging at linear 0x400000."""
    machine = _machine(MOV_EAX_1_SPIN, at=0x200000)
    pd = 0x10000
    machine.write_physical(pd + 4 * 1, struct.pack("<I", PAGE_TABLE | 7))
    machine.write_physical(PAGE_TABLE, struct.pack("<I", 0x200000 | 7))
    machine.write_cr(3, pd)
    machine.write_cr(0, CR0_PE | CR0_PG)
    assert _rerun_from(machine, 0x400000) == 1
    return machine


def test_host_write_drops_translated_code_without_paging():
    machine = _machine(MOV_EAX_1_SPIN)
    assert _rerun_from(machine, CODE) == 1
    machine.write_physical(CODE + 1, b"\x02")
    assert _rerun_from(machine, CODE) == 2


def test_host_write_drops_translated_code_at_another_linear_address_under_paging():
    # linear 0x400000 -> physical 0x200000 (not identity): the invalidation must find the
    # code by its physical address
    machine = _paged_spinner()
    machine.write_physical(0x200001, b"\x05")
    assert _rerun_from(machine, 0x400000) == 5


def test_host_write_to_a_guest_page_table_zaps_the_shadow():
    machine = _paged_spinner()
    # the host (say, a disk read landing on the page table) maps 0x400000 to other code
    machine.write_physical(0x300000, b"\xb8\x07\x00\x00\x00\xeb\xfe")
    machine.write_physical(PAGE_TABLE, struct.pack("<I", 0x300000 | 7))
    assert _rerun_from(machine, 0x400000) == 7


def test_vmcall_reaches_the_registered_handler_at_cpl0_and_skips_it():
    # mov eax,0x11 ; mov ebx,0x22 ; vmcall ; mov esi,eax ; hlt
    code = b"\xb8\x11\x00\x00\x00\xbb\x22\x00\x00\x00\x0f\x01\xc1\x89\xc6\xf4"
    machine = _machine(code)
    calls = []

    def handler(args: HypercallArgs) -> HypercallResult:
        calls.append(args)
        return HypercallResult(eax=0x33, edx=0x44)
    machine.hypercalls.register(handler)
    stop = machine.run(100)
    assert stop.reason is StopReason.HALTED
    assert [(c.eax, c.ebx) for c in calls] == [(0x11, 0x22)]
    regs = machine.registers()
    assert (regs.esi, regs.edx, regs.ebx) == (0x33, 0x44, 0x22)
    assert stop.icount == 5


def test_vmcall_without_a_handler_is_the_guests_invalid_opcode():
    machine = _machine(b"\x0f\x01\xc1\xf4")
    stop = machine.run(100)
    # no IDT: the #UD cannot be delivered, so the run ends with a triple fault
    assert stop.reason is StopReason.TRIPLE_FAULT


def test_runs_bounded_in_virtual_time_advance_idle_machines_exactly_to_the_bound():
    # PIT ch0 mode 2 at reload 0xFFFF, unmask IRQ0, sti, hlt in a loop (no IDT needed: the
    # machine idles and never reaches an interrupt before the bound)
    code = (b"\xb0\x34\xe6\x43\xb0\xff\xe6\x40\xe6\x40"
            b"\xb0\xfe\xe6\x21\xfb\xf4\xeb\xfd")
    machine = _machine(code)
    stop = machine.run(until_time=1000)
    assert stop.reason is StopReason.TIME_SLICE
    assert machine.clock.now() == 1000
    assert machine.icount < 20          # it ran its few instructions, then idled
    stop = machine.run(until_time=2500)
    assert stop.reason is StopReason.TIME_SLICE and machine.clock.now() == 2500
