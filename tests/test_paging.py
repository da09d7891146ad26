"""Shadow paging against the architecture (SDM vol. 3 ch. 4): the paging guest's own view of
A/D bits, remaps and page faults, the pt events, exact instruction counts across shadow-fill
restarts, and a property test of the shadow MMU against an independent reference walk."""
from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from dbgvm.core.assembly import build_machine
from dbgvm.core.events import EventKind
from dbgvm.core.faults import StopReason
from dbgvm.core.guest_paging import PageFault

PT1_VADDR = 0x400000


def test_paging_guest_sees_architectural_behaviour(guest):
    run = guest("paging")
    assert run.stop.reason is StopReason.DEBUG_EXIT and run.stop.exit_status == 19
    marker = run.symbol("marker")
    assert run.console.splitlines() == [
        "paging on",
        "read 11111111 pde.A=00000020 pte.AD=00000020",       # read: A set, D clear
        "after write pde.A=00000020 pte.AD=00000060",         # write: D set
        "after remap 22222222",                               # INVLPG picked up the new PTE
        f"#PF cr2={0x800000 + marker:08x} err=00000000",      # not present, read, supervisor
        "via 4M page 600df00d",                               # the 4 MiB page maps physical 0
        "#PF cr2=00401000 err=00000003",                      # CR0.WP: present, write
        "read-only page now 44444444",
        "physical 0x202000 44444444",
        f"#PF cr2={marker:08x} err=00000005",                 # user read of supervisor page
        f"#PF cr2={marker:08x} err=00000007",                 # user write of supervisor page
        "back in the kernel",
    ]


def test_pt_events(guest):
    run = guest("paging")
    pt = run.of(EventKind.PT)
    ops = {e.fields["op"] for e in pt}
    assert {"fill", "dirty", "flush", "invlpg", "reflect"} <= ops
    flushes = [e.fields["cause"] for e in pt if e.fields["op"] == "flush"]
    assert "cr0" in flushes                               # turning paging on
    invlpgs = [e.fields["vaddr"] for e in pt if e.fields["op"] == "invlpg"]
    assert invlpgs == [PT1_VADDR, PT1_VADDR + 0x1000]   # the remap, then the #PF handler
    reflects = [(e.fields["vaddr"], e.fields["error"]) for e in pt if e.fields["op"] == "reflect"]
    marker = run.symbol("marker")
    assert reflects == [(0x800000 + marker, 0), (PT1_VADDR + 0x1000, 3), (marker, 5), (marker, 7)]
    # A user-mode fill never maps a kernel view entry; kernel fills are marked -k.
    user_fills = [e for e in pt if e.fields["op"] == "fill" and not e.fields["perm"].endswith("-k")]
    # (user code pushes nothing: INT 0x80 switches to the kernel stack first)
    assert {e.fields["vaddr"] for e in user_fills} == {run.symbol("user_page")}
    dirty = [e.fields["paddr"] for e in pt if e.fields["op"] == "dirty"]
    assert 0x200000 in dirty and 0x202000 in dirty


def test_icount_is_exact_across_shadow_restarts(guest):
    full = guest("paging")
    assert full.machine.mmu.stats.fills > 10
    user_read = next(e for e in full.of(EventKind.PT) if e.fields["op"] == "reflect"
                     and e.fields["error"] == 5)
    part = guest("paging", max_insns=user_read.icount)
    assert part.stop.reason is StopReason.MAX_INSNS
    assert part.machine.registers().eip == full.symbol("user_read")
    assert part.machine.vcpu.cpl == 3


def test_paging_runs_are_deterministic(guest):
    assert [e.to_json() for e in guest("paging").events] == \
        [e.to_json() for e in guest("paging").events]


def test_address_space_shadows_are_kept_and_kept_coherent(guest):
    run = guest("spaces")
    assert run.stop.exit_status == 29
    assert [line.split()[-1] for line in run.console.splitlines()] == [
        "11111111", "22222222", "11111111", "22222222", "33333333", "44444444"]
    pt = run.of(EventKind.PT)
    switches = [(e.fields["cr3"], e.fields["cached"]) for e in pt if e.fields["op"] == "flush"
                and e.fields["cause"] == "cr3"]
    pd_a, pd_b = run.symbol("pd_a"), run.symbol("pd_b")
    # switching back reuses the shadow built before
    assert switches == [(pd_b, 0), (pd_a, 1), (pd_b, 1), (pd_a, 1), (pd_a, 1)]
    zaps = [(e.fields["source"], e.fields["vaddr"], e.fields["paddr"]) for e in pt
            if e.fields["op"] == "zap"]
    # the write to A's page table (while B was current) dropped the one shadow entry built
    # from the PTE it changed, the write to A's directory the shadow table of that PDE's 4 MiB
    assert zaps == [("entry", 0x400000, run.symbol("pt_a")), ("table", 0x400000, pd_a)]


def test_switching_back_does_not_refill(guest):
    run = guest("bench_cr3", max_insns=2_000_000)
    stats = run.machine.mmu.stats
    assert stats.switches > 10_000
    assert stats.reused >= stats.switches - 3
    assert stats.fills < 50          # both spaces were filled once, then reused


# -- property test: shadow MMU vs an independent reference walk ----------------------------

PD_PHYS, PT_BASE, DATA_BASE = 0x10000, 0x20000, 0x100000
N_PDES = 4           # the random address space spans 16 MiB of linear addresses


def reference(mem: dict[int, int], vaddr: int, write: bool, user: bool, wp: bool, pse: bool):
    """SDM 4.3/4.6 written out directly: (paddr, writable) or ('fault', error code)."""
    def rd(a):
        return mem.get(a, 0)
    bits = (2 if write else 0) | (4 if user else 0)
    pde = rd(PD_PHYS + 4 * (vaddr >> 22))
    if not pde & 1:
        return ("fault", bits)
    if pse and pde & 0x80:
        u, w, paddr = pde & 4, pde & 2, (pde & 0xFFC00000) | (vaddr & 0x3FFFFF)
    else:
        pte = rd((pde & 0xFFFFF000) + 4 * ((vaddr >> 12) & 0x3FF))
        if not pte & 1:
            return ("fault", bits)
        u, w, paddr = pde & pte & 4, pde & pte & 2, (pte & 0xFFFFF000) | (vaddr & 0xFFF)
    if user and not u:
        return ("fault", 1 | bits)
    if write and not w and (user or wp):
        return ("fault", 1 | bits)
    return (paddr, bool(w) or (not user and not wp))


entry_flags = st.sampled_from([0, 1, 3, 5, 7])          # P, RW, US combinations (P clear too)
pte_strategy = st.tuples(entry_flags, st.integers(0, 31))  # flags, which data page
pde_strategy = st.tuples(entry_flags, st.booleans(), st.integers(0, 7))  # flags, large?, PT/page
access = st.tuples(st.integers(0, N_PDES * 1024 - 1), st.integers(0, 4095), st.booleans(),
                   st.booleans())                          # page, offset, write, user


@settings(max_examples=60, deadline=None)
@given(pdes=st.lists(pde_strategy, min_size=N_PDES, max_size=N_PDES),
       ptes=st.lists(st.lists(pte_strategy, min_size=16, max_size=16), min_size=N_PDES,
                     max_size=N_PDES),
       accesses=st.lists(access, min_size=1, max_size=40), wp=st.booleans(), pse=st.booleans())
def test_shadow_mmu_matches_reference_walk(pdes, ptes, accesses, wp, pse):
    m = _PAGING_MACHINE
    m.mmu.configure(True, PD_PHYS, wp, pse, 0, "test")
    m.mmu.flush(0, "test")  # the test rewrites the tables behind the monitor's back
    mem: dict[int, int] = {}

    def put(addr: int, value: int) -> None:
        mem[addr] = value
        m.ram[addr:addr + 4] = struct.pack("<I", value)

    m.ram[PD_PHYS:PD_PHYS + 4096] = bytes(4096)
    for i, (flags, large, target) in enumerate(pdes):
        if large:
            put(PD_PHYS + 4 * i, (target << 22) | 0x80 | flags)
        else:
            pt = PT_BASE + i * 4096
            m.ram[pt:pt + 4096] = bytes(4096)
            put(PD_PHYS + 4 * i, pt | flags)
            for j, (pflags, page) in enumerate(ptes[i]):
                put(pt + 4 * (j * 64), (DATA_BASE + page * 4096) | pflags)
    for page, offset, write, user in accesses:
        # only pages whose PTE slot the strategy filled (every 64th) or large pages matter;
        # others are not present, which the reference also says.
        vaddr = (page << 12) | offset
        expected = reference(mem, vaddr, write, user, wp, pse)
        entry = m.mmu.shadow_entry(vaddr, user)
        shadow_ok = entry is not None and entry & 1 and (not write or entry & 2)
        if shadow_ok:
            # a present shadow entry must agree with the guest's tables
            assert expected[0] != "fault"
            assert entry & 0xFFFFF000 == expected[0] & 0xFFFFF000
            continue
        result = m.mmu.handle_fault(vaddr, write, user, 0)
        if expected[0] == "fault":
            assert isinstance(result, PageFault) and result.error_code == expected[1]
            continue
        assert result is None
        entry = m.mmu.shadow_entry(vaddr, user)
        assert entry & 0xFFFFF000 == expected[0] & 0xFFFFF000
        assert entry & 4                                     # CPL 3 must reach it
        # writable in the shadow only when the guest allows it and D is set
        leaf_addr = _leaf(mem, vaddr, pse)
        dirty = bool(struct.unpack_from("<I", m.ram, leaf_addr)[0] & 0x40)
        assert bool(entry & 2) == (expected[1] and dirty)
        if write:
            assert dirty
        accessed = struct.unpack_from("<I", m.ram, leaf_addr)[0] & 0x20
        assert accessed
        pde_now = struct.unpack_from("<I", m.ram, PD_PHYS + 4 * (vaddr >> 22))[0]
        assert pde_now & 0x20
        mem.update({leaf_addr: struct.unpack_from("<I", m.ram, leaf_addr)[0],
                    PD_PHYS + 4 * (vaddr >> 22): pde_now})


def _leaf(mem, vaddr, pse):
    pde_addr = PD_PHYS + 4 * (vaddr >> 22)
    pde = mem[pde_addr]
    if pse and pde & 0x80:
        return pde_addr
    return (pde & 0xFFFFF000) + 4 * ((vaddr >> 12) & 0x3FF)


_PAGING_MACHINE = build_machine(ram_mb=64)


# -- descriptor tables written after LGDT ----------------------------------------------------

def _desc_events(run):
    return [(e.fields["op"], e.fields["index"]) for e in run.of(EventKind.DESC)
            if e.fields["index"] == 7]


def test_rewritten_descriptors_are_revalidated_with_paging_off(guest):
    run = guest("desctables", cmdline="mode=flat")
    _check_desctables(run)
    assert not run.machine.mmu.paging
    # with the guest's paging off the shadow maps RAM one to one, the GDT page writable: the
    # table's own bytes are watched, so stores beside it on the same page never trap
    gdt = run.symbol("gdt")
    entry = run.machine.mmu.shadow_entry(gdt, False)
    assert entry is not None and entry & 0xFFFFF000 == gdt & 0xFFFFF000 and entry & 2
    assert _watched(run) == [(gdt, run.machine.tables.gdt.limit + 1)]


def _watched(run):
    return [(p.linear, p.size) for p in run.machine.descriptor_watch.pieces]


def test_rewritten_descriptors_are_revalidated_under_the_shadow(guest):
    run = guest("desctables", cmdline="mode=paging")
    _check_desctables(run)
    # the GDT's bytes are watched through the guest's paging (their physical frame)
    gdt = run.symbol("gdt")
    entry = run.machine.mmu.shadow_entry(gdt, False)
    assert entry is not None and entry & 1
    pieces = run.machine.descriptor_watch.pieces
    assert sum(p.size for p in pieces) == run.machine.tables.gdt.limit + 1
    assert pieces[0].paddr == entry & 0xFFFFF000 | gdt & 0xFFF


def _check_desctables(run):
    assert run.stop.exit_status == 27
    assert run.console.splitlines()[-4:] == [
        "fs:0x1000 with base 0: 5eed1000", "fs:0x1000 with base 0x1000: 5eed2000",
        "#GP err=00000038", "done"]
    assert _desc_events(run) == [("update", 7), ("update", 7), ("refuse", 7), ("fault", 7)]
    fault = [e for e in run.of(EventKind.DESC) if e.fields["op"] == "fault"][0]
    assert fault.eip == run.symbol("load_gate")
    assert "interrupt_gate32 not allowed in the GDT" in fault.fields["reason"]


# -- guest stores to its own page tables ---------------------------------------------------

def test_page_table_stores_take_effect(guest):
    run = guest("ptwrites")
    assert run.console.splitlines() == ["errors 00000000"], run.console
    assert run.stop.exit_status == 0x2B
    pt = run.of(EventKind.PT)
    emulated = {e.fields["insn"].split()[0] for e in run.of(EventKind.TRAP)
                if e.fields["vector"] == 14 and e.fields["action"] == "emulate"}
    assert emulated == {"mov", "xchg"}
    sources = {e.fields["source"] for e in pt if e.fields["op"] == "zap"}
    assert {"entry", "table"} <= sources


def test_page_table_stores_count_as_natively(guest, monkeypatch):
    """An emulated store counts once: the run ends at the same instruction count, with the
    same output, as when every store to a page table runs natively (write-once)."""
    emulating = guest("ptwrites")
    from dbgvm.core import paging, shadow_mmu
    monkeypatch.setattr(paging.Paging, "_emulate_store", lambda self, write, eip: False)
    monkeypatch.setattr(shadow_mmu.ShadowMmu, "release", lambda self, frame, vaddr, eip: False)
    native = guest("ptwrites")
    assert native.console == emulating.console
    assert native.stop.icount == emulating.stop.icount
    assert native.machine.registers() == emulating.machine.registers()


def test_watchpoint_on_a_page_table_entry_fires(guest):
    from dbgvm.core.debug import WatchKind
    first = guest("ptwrites", max_insns=1)
    sym = first.symbol
    machine = first.machine
    handle = machine.debug.add_breakpoint(sym("pte_store"), "test")
    # the second round: the first one made pt_v a page table the shadow was built from
    assert machine.run(1_000_000).reason is StopReason.BREAKPOINT
    assert machine.run(1_000_000).reason is StopReason.BREAKPOINT
    assert machine.mmu.shadow_entry(sym("pt_v"), False) & 3 == 1    # write-protected
    assert machine.debug.remove(handle)
    machine.debug.add_watchpoint(sym("pt_v"), 4, WatchKind.WRITE, "test")
    stop = machine.run(1_000_000)
    assert stop.reason is StopReason.WATCHPOINT
    assert stop.eip == sym("after_store")
    assert stop.cause.vaddr == sym("pt_v")
