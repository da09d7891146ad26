"""What Debian's unmodified Linux kernel needs of the core (commit 3c1251c), one guest case per
test (tests/guests/linuxisms.S, the case picked by ``mode=X``). Expected values come from the
architecture (Intel SDM) and from dbgvm's documented model (docs/events.md), not from runs."""
from __future__ import annotations

import pytest

from dbgvm.core.events import EventKind
from dbgvm.core.faults import StopReason

HH = 0xC0000000          # where the guest's higher-half mapping of physical 0 starts
KCODE, KDATA, UCODE, UDATA = 0x08, 0x10, 0x1B, 0x23
EFLAGS_IF = 1 << 9
PIT_HZ = 1_193_182
PERIODS_PER_S = 100_000_000      # one instruction period is 10 ns
TIME_READ_CHARGE = 200           # periods per trapped RDTSC (docs/events.md)


def run(guest, mode: str):
    return guest("linuxisms", cmdline=f"mode={mode}", max_insns=5_000_000)


def exited(r, code: int) -> bool:
    """The guest wrote ``code`` to the debug-exit port (status (code << 1) | 1)."""
    return r.stop.reason is StopReason.DEBUG_EXIT and r.stop.exit_status == code << 1 | 1


def traps_at(r, eip: int):
    return [e.fields for e in r.of(EventKind.TRAP) if e.eip == eip]


# -- 1. a higher-half kernel -----------------------------------------------------------------
def test_privileged_instructions_run_in_a_higher_half_kernel(guest):
    r = run(guest, "h")
    at = r.symbol("hh_cr0_read") + HH
    assert r.console.splitlines() == [
        f"running at {r.symbol('hh_code') + HH + 5:08x}",      # after the 5-byte CALL
        "cr0 80010011",                                        # PG WP ET PE
        "done"], r.stop.message
    assert exited(r, 0x01)
    # each privileged instruction at 0xC01xxxxx was decoded and emulated, none reflected
    insns = ["mov eax, cr0", "mov cr0, eax", "cli", "sti"]
    for offset, insn in zip((0, 3, 6, 7), insns):
        assert traps_at(r, at + offset) == [{"vector": 13, "insn": insn, "action": "emulate"}]
    assert not [e for e in r.of(EventKind.TRAP) if e.fields["action"] == "reflect"]


def test_an_instruction_ending_right_before_a_not_present_page(guest):
    # CLI is the last byte of a present page; the next page is not present. Decoding CLI must
    # not touch that page: CLI executes (virtual IF cleared), then the fetch of the next
    # instruction takes #PF with CR2 = EIP = the page, error 0 (not present, supervisor read)
    r = run(guest, "e")
    cli, after = r.symbol("edge_cli"), r.symbol("edge_after")
    assert after == cli + 1 and after % 4096 == 0
    assert r.console.splitlines() == [f"#PF cr2={after:08x} err=00000000 eip={after:08x}",
                                      "done"], r.stop.message
    assert exited(r, 0x02)
    assert traps_at(r, cli) == [{"vector": 13, "insn": "cli", "action": "emulate"}]
    assert [e.fields["vaddr"] for e in r.of(EventKind.PT) if e.fields["op"] == "reflect"] == \
        [after]


# -- 2. INT3 and INT 3 at a higher-half address ----------------------------------------------
def test_int3_and_int_3_return_past_their_own_length_under_paging(guest):
    r = run(guest, "i")
    int3, int_3 = r.symbol("hh_int3") + HH, r.symbol("hh_int_3") + HH
    assert int_3 == int3 + 1
    # SDM vol. 2A INT n/INT3: the saved EIP is that of the next instruction; INT3 is CC (one
    # byte), INT 3 is CD 03 (two)
    assert r.console.splitlines() == [f"#BP eip={int3 + 1:08x}", f"#BP eip={int_3 + 2:08x}",
                                      "done"], r.stop.message
    assert exited(r, 0x03)
    assert [e.fields for e in r.of(EventKind.TRAP) if e.fields["vector"] == 3] == [
        {"vector": 3, "insn": "int3", "action": "deliver"},
        {"vector": 3, "insn": "int 3", "action": "deliver"}]
    assert [e.eip for e in r.of(EventKind.TRAP) if e.fields["vector"] == 3] == [int3, int_3]


# -- 3. a TSS above guest RAM ----------------------------------------------------------------
def test_tss_based_above_guest_ram_through_paging(guest):
    r = run(guest, "t")
    tss_stack_top = r.symbol("tss_stack_top")
    assert r.console.splitlines() == [
        # a TSS whose last byte (0xFFBFFF99 + 0x67 = 0xFFC00000) is in the monitor hole:
        # refused, so LTR raises #GP(selector)
        f"#GP err=00000038 eip={r.symbol('ltr_hole'):08x}",
        "ltr 0xff000000 done",
        # INT 0x80 from ring 3: the stack is SS0:ESP0 read from the TSS at 0xFF000000, and
        # the frame (EIP CS EFLAGS ESP SS: 5 words) is pushed below ESP0
        f"kernel esp {tss_stack_top - 20:08x}",
        f"user eip {r.symbol('t_user') + 2:08x}",
        f"user cs {UCODE:08x}",
        f"user esp {r.symbol('user_stack_top'):08x}",
        f"user ss {UDATA:08x}"], r.stop.message
    assert exited(r, 0x04)
    assert (r.machine.vcpu.tr.selector, r.machine.vcpu.tr.base) == (0x38, 0xFF000000)


# -- 4. PUSHF shows the virtual IF -----------------------------------------------------------
def test_pushf_shows_the_virtual_interrupt_flag(guest):
    r = run(guest, "f")
    assert r.console.splitlines() == [
        "IF=00000001",      # after STI
        "IF=00000000",      # after CLI
        "IF=00000000",      # in a handler entered through an interrupt gate (SDM 6.12.1.3)
        "IF=00000001",      # after its IRET restored IF = 1
        "IF=00000001",      # in a handler entered through a trap gate: IF unchanged
        "IF=00000000",      # the same with IF = 0 before INT
        "IF=00000000",      # after IRET restored IF = 0
        "done"], r.stop.message
    assert exited(r, 0x05)


# -- 5. a descriptor table sharing its page with hot data ------------------------------------
@pytest.mark.parametrize("mode", ["g", "G"])
def test_gdt_sharing_a_page_with_hot_data(guest, mode):
    r = run(guest, mode)
    assert r.machine.mmu.paging == (mode == "G")
    gdt, counter = r.symbol("hot_gdt"), r.symbol("hot_counter")
    assert gdt // 4096 == counter // 4096
    assert r.console.splitlines() == [
        "counter 00000001",                 # the last store of the loop (ECX = 1)
        "fs:0x1000 5eed1000",               # base 0: physical 0x1000
        "fs:0x1000 5eed2000",               # base 0x1000 (a 2-byte store): physical 0x2000
        "fs:0x1000 5eed3000",               # base 0x2000 (one 8-byte MMX store): 0x3000
        "done"], r.stop.message
    assert exited(r, 0x06)
    # the 100,000 stores beside the table ran natively: no fault, fill or trap in the loop
    loop = range(r.symbol("hot_loop"), r.symbol("hot_loop_end"))
    assert [e for e in r.events if e.eip in loop] == []
    assert r.machine.tables.gdt.base == gdt
    # the 8-byte store was seen whole: the monitor's copy of the entry is the new descriptor
    assert r.machine.tables.gdt.entries[0x38 >> 3].raw == 0x00CF92002000FFFF
    # each rewrite is an update event at the storing instruction
    updates = [e for e in r.of(EventKind.DESC) if e.fields["op"] == "update"
               and e.fields["index"] == 0x38 >> 3]
    assert [e.eip for e in updates] == [r.symbol("hot_movw"), r.symbol("hot_movq")]


# -- 6. SYSENTER / SYSEXIT -------------------------------------------------------------------
def test_sysenter_and_sysexit(guest):
    r = run(guest, "y")
    lines = r.console.splitlines()
    assert lines[:2] == [
        # back at virtual CPL 3 after SYSEXIT: CLI faults, #GP(0)
        f"#GP err=00000000 eip={r.symbol('y_cli'):08x}",
        # SYSENTER with IA32_SYSENTER_CS[15:2] = 0: #GP(0) (SDM vol. 2B SYSENTER)
        f"#GP err=00000000 eip={r.symbol('y_sysenter0'):08x}"], r.stop.message
    assert exited(r, 0x07)
    k = [int(w, 16) for w in lines[2].removeprefix("kernel: ").split()]
    u = [int(w, 16) for w in lines[3].removeprefix("user: ").split()]
    # kernel side: the six arguments, ESP = IA32_SYSENTER_ESP, IF cleared (SYSENTER clears
    # VM, IF and RF; the user's EFLAGS were 0x202), CS = SYSENTER_CS, SS = SYSENTER_CS + 8
    # (dbgvm shows the real RPL 3 of segment registers: docs/events.md), and CPL 0: MOV from
    # CR0 did not fault
    assert k[:6] == [0x11111111, 0x22222222, 0x33333333, 0x44444444, 0x55555555, 0x66666666]
    assert k[6] == r.symbol("sysenter_stack_top")
    assert k[7] == 0x00000002
    assert (k[8] & ~3, k[9] & ~3, k[10]) == (KCODE, KDATA, 1)
    # user side after SYSEXIT: EIP = EDX, ESP = ECX, CS = SYSENTER_CS + 16 | 3,
    # SS = SYSENTER_CS + 24 | 3; EAX and the callee's untouched registers as left; IF = 1
    ret_esp = r.symbol("user_stack_top") - 16
    assert u[:8] == [0x600DCAFE, 0x11111111, ret_esp, r.symbol("y_return"), 0x44444444,
                     0x55555555, 0x66666666, ret_esp]
    assert (u[8], u[9]) == (KCODE + 16 | 3, KCODE + 24 | 3) == (UCODE, UDATA)
    assert u[10] & EFLAGS_IF
    assert traps_at(r, r.symbol("y_sysenter")) == [
        {"vector": -1, "insn": "sysenter", "action": "emulate"}]
    assert traps_at(r, r.symbol("y_sysenter0")) == [
        {"vector": 13, "insn": "sysenter", "action": "reflect"}]
    vif = [e for e in r.of(EventKind.VIF) if e.eip == r.symbol("y_sysenter")]
    assert [(e.fields["to"], e.fields["cause"]) for e in vif] == [(0, "sysenter")]


# -- 7. #DF through a task gate ----------------------------------------------------------------
def test_double_fault_through_a_task_gate_stops_with_the_frame(guest):
    # MOV FS with a selector beyond the GDT limit: #GP(0x80); the #GP gate is not present,
    # so delivering it raises #NP (contributory during contributory: #DF, SDM table 6-5);
    # IDT entry 8 is a task gate, as Linux's
    r = run(guest, "d")
    at = r.symbol("df_insn")
    message = r.stop.message
    assert (r.stop.reason.value, r.stop.exit_status) == ("double-fault", 1), message
    assert r.stop.reason is StopReason.DOUBLE_FAULT
    assert message.startswith("guest double fault"), message
    # #NP(IDT entry 13: 13 << 3 | IDT | EXT, SDM vol. 3 section 6.13)
    assert f"delivering vector 13 raised vector 11 error {13 << 3 | 2 | 1:#x};" in message
    assert f"cs:eip {KCODE:#06x}:{at:#010x}" in message
    assert "task_gate" not in message
    assert [e.fields["vector"] for e in r.of(EventKind.TRAP)][-2:] == [13, 8]


# -- 8. a triple fault is a guest reset --------------------------------------------------------
def test_triple_fault_is_a_guest_reset(guest):
    # UD2 with an empty IDT: #UD -> #GP (beyond the limit) -> #GP while delivering #GP: #DF
    # -> #GP while delivering #DF: shutdown
    r = run(guest, "r")
    assert r.stop.reason is StopReason.TRIPLE_FAULT
    assert r.stop.exit_status == 0
    assert r.stop.message.startswith("guest reset: triple fault"), r.stop.message
    assert f"{r.symbol('reset_insn'):#010x}" in r.stop.message


# -- 9. INVLPG flushes only what the shadow had ------------------------------------------------
def test_invlpg_flushes_only_pages_the_shadow_mapped(guest):
    r = run(guest, "v")
    assert exited(r, 0x0A)
    invlpgs = [(e.eip, e.fields) for e in r.of(EventKind.PT) if e.fields["op"] == "invlpg"]
    assert invlpgs == [
        (r.symbol("invlpg_untouched"), {"op": "invlpg", "vaddr": 0x300000, "flushed": 0}),
        (r.symbol("invlpg_touched"), {"op": "invlpg", "vaddr": 0x300000, "flushed": 1}),
        (r.symbol("invlpg_again"), {"op": "invlpg", "vaddr": 0x300000, "flushed": 0})]


# -- 10. trapped RDTSC is charged in virtual time -----------------------------------------------
def test_trapped_rdtsc_is_charged(guest):
    r = run(guest, "c")
    assert exited(r, 0x0B)
    delta = int(r.console.split()[-1], 16)
    # between the first and the last RDTSC: 3 instructions, then 1000 x (RDTSC, DEC, JNZ),
    # each one period, and 1001 charged RDTSCs (the first one's read is before its charge)
    assert delta >= TIME_READ_CHARGE * 1000
    assert delta == 3 + 3 * 1000 + TIME_READ_CHARGE * 1001


@pytest.mark.parametrize("mode", ["u", "U"])
def test_rdtsc_at_cpl3_follows_the_guests_own_tsd(guest, mode):
    # the monitor sets the real CR4.TSD so that RDTSC traps and reads virtual time; at CPL 3
    # that must stay invisible unless the guest set TSD itself (SDM Vol. 2B RDTSC: #GP(0)
    # if CR4.TSD = 1 and CPL > 0). Linux's vDSO reads the TSC at CPL 3.
    r = run(guest, mode)
    assert exited(r, 0x0E)
    first, second = r.symbol("u_first"), r.symbol("u_second")
    if mode == "u":
        # between the reads: the first RDTSC (one period, then its charge) and a MOV
        assert r.console.splitlines() == [f"tsc delta {2 + TIME_READ_CHARGE:08x}"]
        assert traps_at(r, first) == [{"vector": 13, "insn": "rdtsc", "action": "emulate"}]
    else:
        # each RDTSC faults in the guest (its handler skips it): EAX never changes
        assert r.console.splitlines() == [f"#GP err=00000000 eip={first:08x}",
                                          f"#GP err=00000000 eip={second:08x}",
                                          "tsc delta 00000000"]
        assert traps_at(r, first) == [{"vector": 13, "insn": "rdtsc", "action": "reflect"}]


def test_timer_due_during_an_rdtsc_spin_arrives_on_time(guest):
    r = run(guest, "p")
    assert exited(r, 0x0C)
    lines = dict(line.rsplit(" ", 1) for line in r.console.splitlines())
    assert int(lines["fired"], 16) == 1
    assert int(lines["loop done at irq"], 16) == 0          # during the loop, not after it
    assert 0 < int(lines["ecx at irq"], 16) < 5000
    # PIT mode 2 with divisor 1193: the first IRQ 0 1193 PIT ticks after the count is
    # loaded (the monitor's PIT is aligned to whole ticks: up to one tick early). The
    # interrupt comes after the RDTSC whose charge reached the deadline: at most one charge
    # late, plus the few instructions before the handler's RDTSC
    due = 1193 * PERIODS_PER_S / PIT_HZ
    tick = PERIODS_PER_S / PIT_HZ
    delta = int(lines["tsc delta"], 16)
    assert due - tick - 2 <= delta <= due + TIME_READ_CHARGE + 10


# -- a fault raised while delivering an exception has EXT set ----------------------------------
def test_fault_while_delivering_an_exception_has_ext_set(guest):
    # UD2 with IDT entry 6 a not-present gate: #NP (benign #UD, so delivered normally) with
    # the error code of SDM vol. 3 section 6.13: index 6, IDT (bit 1), and EXT (bit 0) since
    # the fault occurred during delivery of an earlier exception
    r = run(guest, "x")
    assert r.console.splitlines() == [
        f"#NP err={6 << 3 | 2 | 1:08x} eip={r.symbol('np_ud'):08x}", "done"], r.stop.message
    assert exited(r, 0x0D)
