"""The deprivileging core against the architecture (Intel SDM vol. 3): frames, error codes,
virtual IF, events and stops. Expected values come from the SDM's rules and the guest's own
symbols, never from a previous run."""
from __future__ import annotations

import struct



from dbgvm.core.events import EventKind
from dbgvm.core.faults import StopReason
from dbgvm.core.loader import BootImage, Chunk

KCODE, KDATA, UCODE, UDATA = 0x08, 0x10, 0x1B, 0x23
IF = 1 << 9


def test_basics_console_and_exit(guest):
    run = guest("basics")
    assert run.stop.reason is StopReason.DEBUG_EXIT
    assert run.stop.exit_status == (0x10 << 1) | 1
    de_eip, gp_eip = run.symbol("de_insn"), run.symbol("gp_insn")
    assert run.console.splitlines() == [
        "hello from basics", "00001235", f"#DE at {de_eip:08x}", "after #DE",
        f"#GP err {0x33 & ~7:08x} {gp_eip:08x}", "after #GP", "three timer ticks"]


def test_trap_gate_keeps_vif_and_interrupt_gate_clears_it(guest):
    run = guest("basics")
    vif = run.of(EventKind.VIF)
    causes = [(e.fields["from"], e.fields["to"], e.fields["cause"]) for e in vif]
    # INT 0x80 goes through a trap gate: no VIF change before STI.
    assert causes[0] == (0, 1, "sti")
    # Each timer interrupt (interrupt gate) clears VIF, its IRET sets it again.
    assert causes[1:7] == [(1, 0, "interrupt-gate"), (0, 1, "iret")] * 3
    assert causes[-1] == (1, 0, "cli")


def test_timer_irqs_wake_hlt_and_arrive_after_it(guest):
    run = guest("basics")
    irqs = run.of(EventKind.IRQ)
    assert len(irqs) == 3
    assert all(e.fields == {"vector": 0x20, "line": 0} for e in irqs)
    # HLT completes: the interrupt returns to the instruction after it.
    hlt_addr = run.symbol("wait")
    assert all(e.eip == hlt_addr + 1 for e in irqs)
    # 100 Hz at 100 virtual MIPS: one tick every 1e6 instruction periods of virtual time.
    assert run.machine.clock.now() >= 3 * 1_000_000


def test_emulated_instructions_leave_architectural_state(guest):
    run = guest("insns")
    assert run.stop.exit_status == 11
    lines = run.console.splitlines()
    assert lines[0] == "cr0=00000011"                        # PE | ET after Multiboot
    assert lines[1] == "cr3=00005000 cr2=12345678 cr4=00000010"
    assert lines[2] == "cr0 after clts=00000011"             # TS cleared
    assert lines[3] == "tss access=0000008b"                 # LTR sets the busy bit
    assert lines[4] == "fs:0 via ldt=cafef00d"               # segment from the LDT, base 0x1000
    assert lines[5] == "sysenter_cs=00000010"
    assert lines[6] == "tsc advanced=00000001"
    assert lines[7] == "ss loads ok=00000001"
    assert lines[8:] == ["lret ok", "invlpg wbinvd ok", "done"]
    vcpu = run.machine.vcpu
    assert (vcpu.cr3, vcpu.cr2, vcpu.cr4) == (0x5000, 0x12345678, 0x10)
    assert vcpu.tr.selector == 0x28 and vcpu.ldtr.selector == 0x30
    assert vcpu.msrs[0x174] == 0x10
    emulated = {e.fields["insn"].split()[0] for e in run.of(EventKind.TRAP)
                if e.fields["action"] == "emulate"}
    assert {"mov", "clts", "ltr", "lldt", "wrmsr", "rdmsr", "rdtsc", "pop", "lss", "retf",
            "invlpg", "wbinvd", "lgdt", "lidt"} <= emulated


def test_guest_faults_are_reflected_with_vector_error_and_eip(guest):
    run = guest("archfaults")
    assert run.stop.exit_status == 7
    n = run.u32("nresults")
    faults = [tuple(run.u32("results", 3 * i + k) for k in range(3)) for i in range(n)]
    assert faults == [
        (13, 0, run.symbol("msr_insn")),                 # unknown MSR: #GP(0)
        (13, 0, run.symbol("lidt_insn")),                # operand in the monitor hole: #GP(0)
        (6, 0, run.symbol("ud_insn")),                   # UD2
        (11, 0x42 * 8 + 2, run.symbol("np_insn")),       # not-present gate: #NP(IDT, vector)
        (13, 0, run.symbol("hole_insn")),                # the monitor hole is out of reach
    ]


def test_ring3_task_frames(guest):
    run = guest("ring3")
    assert run.stop.exit_status == (0x21 << 1) | 1
    lines = run.console.splitlines()
    user_stack_top = run.symbol("user_stack_top")
    # INT 0x80 from ring 3 via a DPL-3 interrupt gate: 5-word frame on the TSS stack, with the
    # user's CS/SS (RPL 3) and EFLAGS as the user had them (IF set by the IRET frame).
    assert lines[1] == (f"syscall eax=00000011 cs={UCODE:08x} eflags={0x202:08x} "
                        f"ss={UDATA:08x} esp={user_stack_top:08x}")
    assert lines[2] == f"#GP err=00000000 eip={run.symbol('user_cli'):08x} cs=0000001b ss=00000023"
    assert lines[3] == (f"#GP err={0x81 * 8 + 2:08x} eip={run.symbol('user_int'):08x} "
                        "cs=0000001b ss=00000023")
    assert lines[4] == (f"#GP err={KDATA:08x} eip={run.symbol('user_lds'):08x} "
                        "cs=0000001b ss=00000023")
    assert lines[5] == "bye from ring 3"


def test_ring_changes_track_virtual_cpl(guest):
    run = guest("ring3")
    assert run.machine.vcpu.cpl == 0            # ended inside the exit syscall, in the kernel
    # Every user fault was reflected, none emulated.
    user = [e for e in run.of(EventKind.TRAP) if run.symbol("user_entry") <= e.eip
            < run.symbol("syscall_handler")]
    assert [(e.fields["vector"], e.fields["action"]) for e in user] == [
        (0x80, "deliver"), (13, "reflect"),       # INT 0x80; CLI
        (0x81, "deliver"), (13, "reflect"),       # INT 0x81 through a DPL-0 gate faults
        (13, "reflect"), (0x80, "deliver")]       # MOV DS, kernel selector; exit syscall


def test_two_runs_give_identical_event_streams(guest):
    first = [e.to_json() for e in guest("basics").events]
    second = [e.to_json() for e in guest("basics").events]
    assert len(first) > 100
    assert first == second


def test_icount_is_exact(guest):
    # The guest's events are stamped with retired instruction counts; running with a limit of
    # exactly the icount of an event must stop right before that event happens.
    full = guest("basics")
    sti = next(e for e in full.events if e.kind is EventKind.VIF and e.fields["cause"] == "sti")
    part = guest("basics", max_insns=sti.icount)
    assert part.stop.reason is StopReason.MAX_INSNS
    assert part.stop.icount == sti.icount
    assert part.machine.registers().eip == sti.eip
    assert not any(e.kind is EventKind.VIF and e.fields["cause"] == "sti" for e in part.events)


def test_io_events_and_unclaimed_ports(guest):
    run = guest("basics")
    io = run.of(EventKind.IO)
    console = [e for e in io if e.fields["port"] == 0xE9]
    assert bytes(e.fields["value"] for e in console).decode() == run.console
    pit = [e for e in io if e.fields["port"] == 0x40]
    assert [e.fields["value"] for e in pit] == [11932 & 0xFF, 11932 >> 8]
    assert all("unclaimed" not in e.fields for e in io)


def test_exceptions_do_not_accumulate_into_double_faults(guest):
    # Unicorn reports the second #GP as #DF unless old_exception is reset after each one;
    # the insns guest takes dozens of #GP traps in a row.
    run = guest("insns")
    vectors = {e.fields["vector"] for e in run.of(EventKind.TRAP)}
    assert 8 not in vectors
    assert len(run.of(EventKind.TRAP)) > 20


def test_entry_state(guest):
    run = guest("mbinfo", max_insns=1)
    regs = run.machine.registers()
    assert regs.eip == run.symbol("_start") + 5    # one instruction retired (mov $stack,%esp)
    assert (regs.cs, regs.ss, regs.ds) == (0x10, 0x18, 0x18)
    assert regs.cpl == 0 and not regs.vif and regs.eflags & IF == 0
    assert regs.eax == 0x2BADB002
    assert regs.cr0 & 0x80000001 == 1             # protected mode, paging off


def test_frames_carry_the_virtual_if(guest):
    run = guest("vif")
    assert run.stop.exit_status == 21
    assert run.console.splitlines() == [
        "trap gate frame IF=00000000",        # CLI, then INT through a trap gate
        "trap gate frame IF=00000200",        # STI: the frame shows the virtual IF
        "interrupt gate frame IF=00000200",
        "trap gate frame IF=00000000",        # nested in the interrupt gate: IF was cleared
        "trap gate frame IF=00000200",        # IRET restored IF=1 from its frame
        "cr0 low bits after lmsw=00000009",   # LMSW set TS, kept PE
    ]
    # VIF starts clear, so the first CLI changes nothing; trap gates and IRETs that restore
    # the same value change nothing either.
    causes = [e.fields["cause"] for e in run.of(EventKind.VIF)]
    assert causes == ["sti", "int 0x81", "iret", "cli", "iret", "cli"]


def test_cpuid_is_the_documented_model(guest):
    from dbgvm.core import privileged
    run = guest("basics", max_insns=1)
    m = run.machine
    for leaf, expected in ((0, (1, *struct.unpack("<III", b"dbgvmVirtCPU"[0:4] +
                                                  b"dbgvmVirtCPU"[8:12] +
                                                  b"dbgvmVirtCPU"[4:8]))),
                           # FPU, PSE, TSC, MSR, CX8, SEP, CMOV: bits 0 3 4 5 8 11 15
                           (1, (0x630, 0, 0, sum(1 << b for b in (0, 3, 4, 5, 8, 11, 15)))),
                           (7, (0, 0, 0, 0))):
        m.write_register("eax", leaf)
        privileged.cpuid(m)
        r = m.registers()
        assert (r.eax, r.ebx, r.ecx, r.edx) == expected


def _tiny(code: bytes):
    from dbgvm.core.assembly import build_machine
    from dbgvm.core.loader import BootImage, Chunk
    machine = build_machine(ram_mb=4)
    machine.load(BootImage((Chunk(0x100000, code, len(code)),), 0x100000, False, 0, 0, {}))
    return machine


def test_unclaimed_ports_read_all_ones_and_show_as_io_events():
    # in al,0x99; out 0xe9,al; in ax,0x98 ; out 0x97,al ; hlt
    machine = _tiny(b"\xe4\x99\xe6\xe9\x66\xe5\x98\xe6\x97\xf4")
    io = []
    machine.events.subscribe({EventKind.IO}, io.append)
    stop = machine.run(100)
    assert stop.reason is StopReason.HALTED
    assert bytes(machine.console_output) == b"\xff"
    fields = [(e.fields["port"], e.fields["dir"], e.fields["size"], e.fields["value"],
               e.fields.get("unclaimed", False)) for e in io]
    assert fields == [(0x99, "in", 1, 0xFF, True), (0xE9, "out", 1, 0xFF, False),
                      (0x98, "in", 2, 0xFFFF, True), (0x97, "out", 1, 0xFF, True)]


def test_external_input_enters_at_a_boundary_with_its_icount():
    machine = _tiny(b"\x90" * 64 + b"\xf4")
    got, seen = [], []
    machine.inputs.register("console", got.append)
    machine.inputs.observe(seen.append)
    machine.run(10)
    machine.inputs.post("console", b"ls\n")
    assert got == []                         # nothing happens outside the run loop
    machine.run(10)
    assert got == [b"ls\n"]
    assert [(i.icount, i.channel, i.payload) for i in seen] == [(10, "console", b"ls\n")]


def test_hlt_with_the_timer_masked_ends_instead_of_idling_forever():
    # PIT mode 2 running, IRQ0 masked at the PIC, STI; HLT: nothing can ever wake the CPU
    code = (b"\xb0\x34\xe6\x43\xb0\x10\xe6\x40\xe6\x40"   # PIT ch0 mode 2, reload 0x1010
            b"\xb0\xff\xe6\x21"                            # mask everything at the master
            b"\xfb\xf4")                                     # sti; hlt
    machine = _tiny(code)
    stop = machine.run(1000)
    assert stop.reason is StopReason.HALTED
    assert "no timer interrupt that can arrive" in stop.message


def test_sixteen_bit_far_ret_is_emulated():
    """`66 cb` at virtual CPL 0 pops a 16-bit IP and CS (SDM vol. 2B RET: EIP is IP
    zero-extended, 4 bytes popped); it once stopped the VM as unsupported."""
    code = (b"\x66\x6a\x10"                 # push word 0x10 (the boot CS)
            b"\x66\x68\x00\x80"             # push word 0x8000
            b"\x66\xcb")                    # retf (16-bit operand size)
    from dbgvm.core.assembly import build_machine
    machine = build_machine(ram_mb=4)
    machine.load(BootImage((Chunk(0x100000, code, len(code)), Chunk(0x8000, b"\xf4", 1)),
                           0x100000, False, 0, 0, {}))
    esp = machine.registers().esp
    stop = machine.run(100)
    assert stop.reason is StopReason.HALTED, stop.message
    regs = machine.registers()
    assert regs.eip == 0x8001 and regs.esp == esp and regs.cs == 0x10
