"""Escape attempts: a guest trying to reach the monitor hole (0xFFC00000 and up) or the host.

Each case is one run of tests/guests/escapes.S (the case picked by ``mode=X``; the guest source
says, case by case, what it tries and what the Intel SDM, under dbgvm's documented model of
docs/design.md, says the guest must see). Every case must

- end as the architecture says: the guest's own handler reports the fault (vector, error code,
  CR2 and the saved CS:EIP, printed by the guest itself), or, for a mapping of memory that is
  not guest RAM, the run ends with a clean bad-memory stop before the access happens;
- never end with a monitor error, never raise into the host, never reach the guest's
  "ESCAPED" path;
- leave the monitor hole intact (``assert_hole_intact``): the monitor's unused hole ranges keep
  a marker written before the run, the hole's own page table is unchanged, the value the guest
  tries to store appears nowhere in the hole, no installed segment reaches the hole, and the
  real page tables map nothing but guest RAM to the guest.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest
from unicorn.x86_const import UC_X86_REG_CR3

from dbgvm.core.assembly import build_machine
from dbgvm.core.descriptors import VMM_HOLE, Descriptor
from dbgvm.core.events import Event, EventKind
from dbgvm.core.faults import StopReason
from dbgvm.core.hypercalls import HypercallArgs, HypercallResult
from dbgvm.core.loader import load
from dbgvm.core.machine import Machine, Stop
from guest_build import build

MAGIC = 0xE5CA9E00                      # what every escape attempt tries to store
CR2_SENTINEL = 0xC2C2C2C2               # the guest sets CR2 to this before its attempt
KCODE, UCODE = 0x08, 0x1B
SPARE, LDTSEL = 0x38, 0x30
GP, SS, UD = 13, 12, 6
FAULTED = 0x30                          # the guest's fault handler exits with this code
RAM_MB = 16

# The hole as machine.py lays it out: real GDT/LDT copies (0x00000-0x3FFFF), the trampoline
# and its stack (0x40000-0x41FFF), the hole's page table (0x62000), the shadow pool
# (0x100000-). Nothing else of the hole is used: those ranges get a marker.
HOLE_SIZE = 4 << 20
REAL_TABLES = (0x00000, 0x40000)
UNUSED = ((0x42000, 0x62000), (0x63000, 0x100000))
HOLE_PT = (0x62000, 0x63000)
MARKER = bytes(range(256)) * 16         # one page of a pattern no monitor code writes


@dataclass
class EscapeRun:
    machine: Machine
    stop: Stop
    events: list[Event]
    hole_pt_before: bytes
    hypercalls: list[HypercallArgs]

    @property
    def console(self) -> str:
        return self.machine.console_output.decode("latin-1")

    def symbol(self, name: str) -> int:
        return self.machine.symbols[name]

    def of(self, kind: EventKind) -> list[Event]:
        return [e for e in self.events if e.kind is kind]


def fill_marker(hole: memoryview) -> None:
    for start, end in UNUSED:
        for page in range(start, end, 4096):
            hole[page:page + 4096] = MARKER


def assert_hole_intact(machine: Machine, hole_pt_before: bytes, *, ram_size: int) -> None:
    """Everything a guest could have done to the monitor hole, checked after a run."""
    hole = bytes(machine.hole)
    for start, end in UNUSED:
        for page in range(start, end, 4096):
            assert hole[page:page + 4096] == MARKER, f"hole page {page:#x} was written"
    # the hole's page table, but for the accessed and dirty bits the real CPU sets
    now = [e & ~0x60 for e in struct.unpack_from("<1024I", hole, HOLE_PT[0])]
    assert now == [e & ~0x60 for e in struct.unpack("<1024I", hole_pt_before)], \
        "the hole's page table changed"
    assert struct.pack("<I", MAGIC) not in hole, "the guest's value reached the hole"
    # every installed code/data segment ends below the hole (segment truncation)
    segment = 1 << 47 | 1 << 44                         # present, code or data
    entries = memoryview(hole[slice(*REAL_TABLES)]).cast("Q")
    for index in [i for i, raw in enumerate(entries) if raw & segment == segment]:
        offset, desc = REAL_TABLES[0] + 8 * index, Descriptor(entries[index])
        if desc.is_data and desc.expand_down:
            continue                                   # valid offsets lie above the limit
        assert desc.base + desc.limit < VMM_HOLE, \
            f"real table entry {offset:#x} reaches the hole: {desc.base:#x}+{desc.limit:#x}"
    # the real page tables in use: the hole's entry is supervisor-only, every other present
    # entry maps guest RAM
    root = machine.uc.reg_read(UC_X86_REG_CR3) & ~0xFFF
    assert VMM_HOLE <= root < VMM_HOLE + HOLE_SIZE
    pd = struct.unpack_from("<1024I", hole, root - VMM_HOLE)
    assert pd[1023] & ~0xFFF == VMM_HOLE + HOLE_PT[0] and not pd[1023] & 4
    for index, pde in enumerate(pd[:1023]):
        if not pde & 1:
            continue
        assert not pde & 0x80, f"shadow PDE {index} is a large page"
        table = pde & ~0xFFF
        assert VMM_HOLE + 0x100000 <= table < VMM_HOLE + HOLE_SIZE, \
            f"shadow PDE {index} points at {table:#x}, outside the shadow pool"
        for pindex, pte in enumerate(struct.unpack_from("<1024I", hole, table - VMM_HOLE)):
            if pte & 1:
                assert pte & ~0xFFF < ram_size, \
                    f"shadow PTE {index}:{pindex} maps {pte & ~0xFFF:#x}, outside guest RAM"


def run_escape(mode: str, max_insns: int = 1_000_000) -> EscapeRun:
    machine = build_machine(ram_mb=RAM_MB)
    fill_marker(machine.hole)
    hole_pt_before = bytes(machine.hole[HOLE_PT[0]:HOLE_PT[1]])
    calls: list[HypercallArgs] = []

    def hypercall(args: HypercallArgs) -> HypercallResult:
        calls.append(args)
        return HypercallResult(eax=0)
    machine.hypercalls.register(hypercall)
    machine.load(load(build("escapes"), machine.ram_size, cmdline=f"mode={mode}"))
    events: list[Event] = []
    machine.events.subscribe(set(EventKind), events.append)
    stop = machine.run(max_insns)
    run = EscapeRun(machine, stop, events, hole_pt_before, calls)
    assert stop.reason is not StopReason.VMM_ERROR, stop.message
    assert "ESCAPED" not in run.console, run.console
    assert_hole_intact(machine, hole_pt_before, ram_size=machine.ram_size)
    assert magic_outside_code(run) == [], "the guest's store landed in guest RAM"
    return run


def fault_line(vector: int, error: int, eip: int, cs: int, cr2: int = CR2_SENTINEL) -> str:
    return f"fault vec={vector:08x} err={error:08x} cr2={cr2:08x} eip={eip:08x} cs={cs:08x}"


def assert_guest_fault(r: EscapeRun, vector: int, error: int, insn: str, cs: int, *,
                       loaded_first: bool = False) -> None:
    expected = [fault_line(vector, error, r.symbol(insn), cs)]
    if loaded_first:
        expected.insert(0, "segment loaded")
    assert r.console.splitlines() == expected, r.stop.message
    assert r.stop.reason is StopReason.DEBUG_EXIT and r.stop.exit_status == FAULTED << 1 | 1


# mode: (vector, error code, label of the faulting instruction, CS in the frame, loaded first)
GUEST_FAULTS = {
    # a data segment whose base+limit reaches the hole, loaded, then written in the hole
    "a": (GP, 0, "a_insn", KCODE, True),
    # a code segment reaching the hole: far JMP beyond its truncated limit
    "b": (GP, 0, "b_insn", KCODE, False),
    # a data descriptor with its base in the hole: refused at the load
    "c": (GP, SPARE, "c_insn", KCODE, False),
    # PDE 1023 set by the guest, then a store to 0xFFC00010
    "d": (GP, 0, "d_insn", KCODE, False),
    # a 4 MiB PSE page over the hole
    "e": (GP, 0, "e_insn", KCODE, False),
    # LLDT of an LDT descriptor with base in the hole / reaching the hole
    "l": (GP, LDTSEL, "l_insn", KCODE, False),
    "L": (GP, LDTSEL, "L_insn", KCODE, False),
    # LTR of a TSS reaching the hole / based in the hole
    "s": (GP, SPARE, "s_insn", KCODE, False),
    "S": (GP, SPARE, "S_insn", KCODE, False),
    # IRET from virtual ring 3 to CS 0x08 (RPL 0) and to CS 0x0B (DPL 0, RPL 3)
    "r": (GP, KCODE, "r_insn", UCODE, False),
    "R": (GP, KCODE, "R_insn", UCODE, False),
    # VMCALL from virtual ring 3 with a hypercall handler registered
    "v": (UD, 0, "v_insn", UCODE, False),
    # a 4 GiB-limit segment whose base+limit wraps past 4 GiB
    "w": (GP, 0, "w_insn", KCODE, True),
    # an expand-down segment whose valid offsets cover the hole
    "x": (GP, 0, "x_insn", KCODE, True),
    # virtual ring 3, paging on: a load from the trampoline page, a store to the hole
    "h": (GP, 0, "h_insn", UCODE, False),
    "H": (GP, 0, "H_insn", UCODE, False),
    # LGDT based in the hole (the monitor's real GDT), then a segment load
    "G": (GP, 0, "G_insn", KCODE, False),
}


@pytest.mark.parametrize("mode", sorted(GUEST_FAULTS))
def test_escape_attempt_faults_in_the_guest(mode):
    vector, error, insn, cs, loaded_first = GUEST_FAULTS[mode]
    r = run_escape(mode)
    assert_guest_fault(r, vector, error, insn, cs, loaded_first=loaded_first)
    assert r.hypercalls == []


def test_refused_descriptors_say_why():
    """design.md 6: a refused descriptor's load faults with #GP(selector) and a `desc` event."""
    for mode, table, index, words in (("c", "gdt", SPARE >> 3, "monitor hole"),
                                      ("l", "gdt", LDTSEL >> 3, "monitor hole"),
                                      ("L", "gdt", LDTSEL >> 3, "reaches the monitor hole"),
                                      ("s", "gdt", SPARE >> 3, "reaches the monitor hole"),
                                      ("S", "gdt", SPARE >> 3, "reaches the monitor hole")):
        faults = [e.fields for e in run_escape(mode).of(EventKind.DESC)
                  if e.fields["op"] == "fault"]
        assert [(f["table"], f["index"]) for f in faults] == [(table, index)], mode
        assert words in faults[0]["reason"], (mode, faults)


def magic_outside_code(r: EscapeRun) -> list[int]:
    """Where guest RAM holds MAGIC other than as an immediate of the guest's own code (where
    a store that got through, to whatever physical page, would have put it)."""
    ram = r.machine.read_physical(0, r.machine.ram_size)
    code = range(r.symbol("_start"), r.symbol("fault_common"))
    found, at = [], ram.find(struct.pack("<I", MAGIC))
    while at != -1:
        if at not in code:
            found.append(at)
        at = ram.find(struct.pack("<I", MAGIC), at + 1)
    return found


def test_store_through_pde_1023_reaches_neither_hole_nor_ram():
    # PDE 1023 maps the guest's own page table (physical 0..4 MiB): a store that got through
    # would land at physical 0x10
    r = run_escape("d")
    assert r.machine.read_physical(0x10, 4) == bytes(4)


def test_vmcall_from_ring3_never_reaches_the_hypercall_handler():
    r = run_escape("v")
    assert r.hypercalls == []
    assert [e.fields for e in r.of(EventKind.TRAP) if e.fields["vector"] == UD] == [
        {"vector": UD, "insn": "vmcall", "action": "reflect"}]


# mode: (label of the access, linear address, physical address in the stop message)
BAD_MEMORY = {
    # a PTE mapping 0x400000 to physical 0xFFC00000 (the monitor's memory): a store, a load
    "f": ("f_insn", 0x400010, 0xFFC00000),
    "F": ("F_insn", 0x400000, 0xFFC00000),
    # a PTE mapping 0x400000 just past the end of guest RAM
    "g": ("g_insn", 0x400010, RAM_MB << 20),
    # a 4 MiB page at 0x800000 with physical base 0xFFC00000
    "P": ("P_insn", 0x800010, 0xFFC00000),
    # PDE 1 pointing at the monitor's page table of the hole: a walk there reads open bus
    "t": ("t_insn", 0x400010, 0xFFFFF000),
}


@pytest.mark.parametrize("mode", sorted(BAD_MEMORY))
def test_mapping_memory_outside_guest_ram_stops_the_run(mode):
    insn, linear, physical = BAD_MEMORY[mode]
    r = run_escape(mode)
    assert r.stop.reason is StopReason.BAD_MEMORY, r.stop.message
    assert r.stop.eip == r.symbol(insn)
    assert f"map {linear:#x} to physical {physical:#x}, outside guest RAM" in r.stop.message
    assert r.console == ""


def test_cr3_in_the_hole_stops_at_the_first_fetch():
    r = run_escape("3")
    after = r.symbol("cr3_insn") + 3           # mov cr0, eax is 3 bytes; the next fetch
    assert r.stop.reason is StopReason.BAD_MEMORY, r.stop.message
    assert r.stop.eip == after
    assert f"map {after:#x} to physical 0xfffff000, outside guest RAM" in r.stop.message


def test_idt_based_in_the_hole_is_a_triple_fault():
    # no gate can be read (the IDT lies beyond the truncated segments): INT 0x40 raises #GP,
    # whose gate cannot be read either (#DF), nor #DF's: a reset
    r = run_escape("D")
    assert r.stop.reason is StopReason.TRIPLE_FAULT, r.stop.message
    assert r.stop.eip == r.symbol("D_insn")
    assert r.console == ""


# Cases whose attempt is refused but whose fault differs from the SDM's; the exact fault is
# checked in test_escape_faults_as_the_sdm_says below. Here: contained, and a fault reached the
# guest's handler.
CONTAINED = ("i", "I", "k", "K")


@pytest.mark.parametrize("mode", CONTAINED)
def test_escape_attempt_is_contained(mode):
    r = run_escape(mode)
    assert r.stop.reason is StopReason.DEBUG_EXIT and r.stop.exit_status == FAULTED << 1 | 1
    assert r.console.startswith("fault vec=")
    if mode == "k":       # nothing of the PUSH was written below the hole either
        page = r.symbol("user_stack_page")
        assert r.machine.read_physical(page + 0xFFC, 4) == b"\x5a" * 4


# -- Known bugs: these fail with the core of commit f123bf7 (see the guest's comments) ---------
def run_unchecked(mode: str) -> EscapeRun:
    """run_escape without its "ESCAPED" check, so that the exact fault is what fails."""
    machine = build_machine(ram_mb=RAM_MB)
    machine.load(load(build("escapes"), machine.ram_size, cmdline=f"mode={mode}"))
    stop = machine.run(1_000_000)
    assert stop.reason is not StopReason.VMM_ERROR, stop.message
    return EscapeRun(machine, stop, [], b"", [])


SDM_FAULTS = {
    # INT n through a gate whose offset lies beyond the (truncated) code segment limit: #GP(0)
    # at the INT itself, nothing pushed. dbgvm pushes the frame, enters the handler address and
    # reflects the fetch there: the guest sees #GP(0) with saved CS:EIP = 0x08:0xFFC40000.
    "i": (GP, 0, "i_insn", KCODE),
    "I": (GP, 0, "I_insn", UCODE),
    # a PUSH beyond the truncated SS limit: #SS(0). dbgvm reflects every access in the hole as
    # #GP(0), the stack's too.
    "k": (SS, 0, "k_insn", UCODE),
    "K": (SS, 0, "K_insn", UCODE),
    # IN/OUT at CPL 3 > IOPL 0 without an I/O bitmap: #GP(0). dbgvm performs them: ring-3 code
    # writes the console, ends the VM through port 0xF4 with its own status, reads the PIC.
    "o": (GP, 0, "o_insn", UCODE),
    "O": (GP, 0, "O_insn", UCODE),
    "n": (GP, 0, "n_insn", UCODE),
}


@pytest.mark.parametrize("mode", sorted(SDM_FAULTS))
def test_escape_faults_as_the_sdm_says(mode):
    vector, error, insn, cs = SDM_FAULTS[mode]
    assert_guest_fault(run_unchecked(mode), vector, error, insn, cs)
