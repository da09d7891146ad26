"""Monitor commands run against test guests; results are checked against what the test works
out on its own (a reference run's events, the guest's page tables read from RAM, its
symbols), never against the monitor's own view."""
from __future__ import annotations

import re
import struct
import threading
import time

import pytest
from guest_build import build

from dbgvm.core.assembly import build_machine
from dbgvm.core.events import Event, EventKind
from dbgvm.core.faults import StopReason
from dbgvm.core.loader import load
from dbgvm.core.machine import Machine
from dbgvm.record.reverse import ReverseEngine
from dbgvm.repl.commands import CommandInterpreter
from dbgvm.repl.errors import Problem
from dbgvm.repl.parser import parse


def setup(name="basics", **monitor_args):
    m = build_machine()
    image = load(build(name), m.ram_size)
    m.load(image)
    return m, CommandInterpreter(m, **monitor_args), image.symbols


def reference_events(name: str, kind: EventKind, count: int) -> list[Event]:
    """The first ``count`` events of a kind in an undisturbed run of the same guest."""
    m = build_machine()
    m.load(load(build(name), m.ram_size))
    seen: list[Event] = []
    m.events.subscribe({kind}, seen.append)
    m.run(5_000_000)
    return seen[:count]


def u32(m: Machine, paddr: int) -> int:
    return struct.unpack("<I", m.read_physical(paddr, 4))[0]


# -- event breakpoints -------------------------------------------------------------------
def test_catch_vif_stops_right_after_the_instruction_that_changed_it():
    m, mon, sym = setup()
    reference = reference_events("basics", EventKind.VIF, 3)
    assert mon.run("catch vif") == "event breakpoint 1: catch vif\n"
    for expected in reference:
        out = mon.run("continue")
        caught = mon.vm.last_catch
        assert (caught.icount, caught.eip, caught.fields) == \
            (expected.icount, expected.eip, expected.fields)
        assert f"cause={expected.fields['cause']}" in out.splitlines()[0]
    # the first change is the STI just before `wait`: one byte, 0xFB, and the stop is after it
    first = reference[0]
    assert first.fields == {"from": 0, "to": 1, "cause": "sti"}
    assert first.eip == sym["wait"] - 1 and m.read_physical(first.eip, 1) == b"\xfb"


def test_catch_vif_output_names_the_stop_place():
    m, mon, sym = setup()
    mon.run("catch vif")
    out = mon.run("c")
    lines = out.splitlines()
    assert lines[0].startswith("event breakpoint 1: vif ")
    assert lines[1].startswith(f"=> {sym['wait']:#010x} <wait>:  hlt")
    assert m.registers().eip == sym["wait"]


def test_a_catch_stop_names_the_icount_info_shows():
    """The stop line of an event breakpoint and `info` count the same instructions: the
    event's own instruction has retired (it once printed one less than `info`)."""
    m, mon, sym = setup()
    mon.run("catch vif")
    out = mon.run("continue")
    shown = int(re.search(r"\(icount (\d+)\)", out).group(1))
    assert shown == m.icount == mon.vm.last_stop.icount
    assert f"icount {m.icount}" in mon.run("info")
    assert mon.vm.last_stop.eip == m.registers().eip == sym["wait"]


def test_catch_trap_vector_stops_after_the_trapping_instruction():
    m, mon, sym = setup()
    assert "event breakpoint 1: catch trap 0" in mon.run("catch trap 0")
    mon.run("continue")
    assert mon.vm.last_stop.reason is StopReason.CATCH
    assert mon.vm.last_catch.eip == sym["de_insn"]
    assert m.registers().eip == sym["de_handler"]      # the #DE was delivered


def test_catch_irq_and_pt_and_their_arguments():
    m, mon, sym = setup()
    mon.run("catch irq 0x21")                         # never happens in basics
    mon.run("catch irq 0x20")
    mon.run("c")
    assert mon.vm.last_stop.reason is StopReason.CATCH
    assert mon.vm.last_catch.fields["vector"] == 0x20
    assert "1: catch irq 33 (0 hits)\n2: catch irq 32 (1 hits)\n" == mon.run("catch")
    m2, mon2, _ = setup("paging")
    mon2.run("catch pt dirty")
    mon2.run("c")
    assert mon2.vm.last_catch.fields["op"] == "dirty"
    assert mon2.vm.last_catch == reference_events("paging", EventKind.PT, 10_000)[
        [e.fields["op"] for e in reference_events("paging", EventKind.PT, 10_000)].index("dirty")]


def test_catch_desc_and_uncatch():
    m, mon, _ = setup("desctables")
    reference = reference_events("desctables", EventKind.DESC, 1)
    mon.run("catch desc")
    mon.run("c")
    assert mon.vm.last_catch.icount == reference[0].icount
    assert mon.run("uncatch") == "removed 1 event breakpoints\n"
    assert mon.run("catch") == "no event breakpoints\n"


def test_catch_hal_matches_the_channel():
    m, mon, _ = setup()
    mon.run("catch hal net")
    m.events.publish(Event(1, EventKind.HAL, 0x1000, {"channel": "console", "op": "tx"}))
    assert mon.vm.last_catch is None
    m.events.publish(Event(2, EventKind.HAL, 0x1000, {"channel": "net", "op": "tx"}))
    assert mon.vm.last_catch.icount == 2


# -- breakpoints and watchpoints ---------------------------------------------------------
def test_break_continue_delete_and_info_breakpoints():
    m, mon, sym = setup()
    assert mon.run("break de_insn") == f"breakpoint 1 at {sym['de_insn']:#010x} <de_insn>\n"
    assert mon.run("b gp_insn") == f"breakpoint 2 at {sym['gp_insn']:#010x} <gp_insn>\n"
    assert "is already" in mon.run("break de_insn")
    out = mon.run("c")
    assert out.startswith(f"breakpoint 1 at {sym['de_insn']:#010x} <de_insn>\n=> ")
    assert "div ecx" in out and m.registers().eip == sym["de_insn"]
    assert mon.run("c").startswith("breakpoint 2 at")
    assert m.registers().eip == sym["gp_insn"]
    table = mon.run("info breakpoints").splitlines()
    assert table[1].split()[:3] == ["1", "breakpoint", "1"]
    assert mon.run("delete 1") == "deleted breakpoint 1\n"
    assert m.breakpoints == frozenset({sym["gp_insn"]})
    assert mon.run("delete") == "deleted 1 breakpoints\n"
    assert m.breakpoints == frozenset()
    out = mon.run("c")
    assert out.startswith("debug-exit: ") and mon.vm.last_stop.exit_status == (0x10 << 1) | 1


def test_continue_leaves_a_breakpoint_whose_instruction_needs_a_shadow_fill():
    m, mon, sym = setup("paging")
    mon.run("break user_entry")
    mon.run("c")
    assert m.registers().eip == sym["user_entry"]
    out = mon.run("c")
    assert out.startswith("debug-exit")


def test_watch_write_stops_after_the_writing_instruction():
    m, mon, sym = setup()
    out = mon.run("watch ticks")
    assert out == f"watchpoint 1: write {sym['ticks']:#010x} <ticks> len 4\n"
    out = mon.run("c")
    assert out.startswith(f"watchpoint 1: write of {sym['ticks']:#010x} <ticks>")
    assert u32(m, sym["ticks"]) == 1                   # the incl completed
    eip = m.registers().eip
    assert sym["timer_handler"] < eip < sym["ticks"]
    assert m.read_physical(eip - 6, 2) == b"\xff\x05"  # right after `incl ticks`


def test_step_counts_instructions_and_shows_the_next_one():
    m, mon, sym = setup()
    out = mon.run("step 3")
    assert m.icount == 3
    assert out.startswith(f"=> {m.registers().eip:#010x}")
    assert out.rstrip().endswith("(icount 3)")
    mon.run("s")
    assert m.icount == 4


# -- registers, memory, disassembly -----------------------------------------------------
def test_regs_and_set_register():
    m, mon, sym = setup()
    assert mon.run("set eax = 0x1000 + 2*8") == "eax = 0x1010\n"
    assert m.registers().eax == 0x1010
    assert mon.run("set $ecx = $eax / 0x10 - 1") == "ecx = 0x100\n"
    mon.run("set eip = wait")
    regs = mon.run("regs")
    assert "eax 0x00001010" in regs and "ecx 0x00000100" in regs
    assert f"eip {sym['wait']:#010x} <wait>" in regs
    assert "cpl 0  vif 0" in regs
    mon.run("set vif = 1")
    assert m.registers().vif and "[ IF ]" in mon.run("regs")


def test_x_and_xp_agree_with_guest_memory():
    m, mon, sym = setup()
    hello = sym["hello"]
    raw = m.read_physical(hello, 16)
    assert mon.run("xp hello 16") == f"{hello:08x}: " + " ".join(f"{b:02x}" for b in raw) + "\n"
    assert mon.run("x hello 16").startswith(f"{hello:08x} <hello>: {raw[0]:02x}")
    words = struct.unpack("<4I", raw)
    assert mon.run("x/4xw hello").split(": ")[1].split() == [f"{w:08x}" for w in words]
    assert mon.run("x/s hello") == f"{hello:08x} <hello>: 'hello from basics\\n'\n"
    assert mon.run("x/2c hello") == f"{hello:08x} <hello>: 'h' 'e'\n"
    signed = mon.run("x/dh hello+1 1").split(": ")[1].strip()
    assert int(signed) == struct.unpack("<h", m.read_physical(hello + 1, 2))[0]


def test_x_goes_through_the_guest_page_tables():
    m, mon, sym = setup("paging")
    mon.run("break user_entry")
    mon.run("c")
    # 0x400000 maps to physical 0x201000 after the guest's remap
    assert mon.run("x/xw 0x400000 1").split(": ")[1].strip() == f"{u32(m, 0x201000):08x}"
    assert "not mapped" in mon.run("x 0xc00000")


def test_disas_with_symbols():
    m, mon, sym = setup()
    lines = mon.run("disas de_insn 2").splitlines()
    assert lines[0] == f"   {sym['de_insn']:#010x} <de_insn>:  div ecx"
    assert lines[1].startswith(f"   {sym['de_insn'] + 2:#010x} <de_insn+0x2>:  mov esi, ")
    assert lines[1].endswith("<after_de>")
    here = mon.run("disas").splitlines()
    assert len(here) == 10 and here[0].startswith(f"=> {sym['_start']:#010x} <_start>:")
    assert "call" in mon.run("disas _start+5 1") and "<setup_tables>" in mon.run(
        "disas _start+5 1")


# -- paging -------------------------------------------------------------------------------
def _guest_walk(m: Machine, cr3: int, vaddr: int) -> tuple[int, int, int | None, int | None]:
    """The test's own walk: (pde address, pde, pte address, pte) read from guest RAM."""
    pde_addr = (cr3 & ~0xFFF) + 4 * (vaddr >> 22)
    pde = u32(m, pde_addr)
    if not pde & 1 or pde & 0x80:
        return pde_addr, pde, None, None
    pte_addr = (pde & ~0xFFF) + 4 * ((vaddr >> 12) & 0x3FF)
    return pde_addr, pde, pte_addr, u32(m, pte_addr)


def _cells(line: str) -> list[tuple[int, int]]:
    return [(int(a, 16), int(v, 16)) for a, v in re.findall(r"\[(0x[0-9a-f]+)\] (0x[0-9a-f]+)",
                                                           line)]


@pytest.mark.parametrize("where", ["user_entry", "0x400000", "0x401000", "0x800000 + marker",
                                   "0xc00000", "marker"])
def test_pt_walk_agrees_with_the_guest_tables(where):
    m, mon, sym = setup("paging")
    mon.run("break user_entry")
    mon.run("c")
    vaddr = eval(where.replace("marker", str(sym["marker"])).replace(  # noqa: S307
        "user_entry", str(sym["user_entry"])))
    cr3 = m.registers().cr3
    pde_addr, pde, pte_addr, pte = _guest_walk(m, cr3, vaddr)
    out = mon.run(f"pt walk {where}")
    lines = out.splitlines()
    assert lines[0] == (f"pt walk {vaddr:#010x}: guest paging on, cr3 {cr3:#010x}, pse on, "
                        f"wp on")                    # the guest set CR4.PSE and CR0.WP
    assert max(map(len, lines)) < 80, out
    # three blocks (guest, shadow kernel view, shadow user view), each a title and its rows
    # (user_entry runs in the guest's ring-3 task)
    assert [lines[i] for i in (1, 5, 9)] == ["guest (virtual cpl 3)", "shadow, kernel view",
                                             "shadow, user view"]
    guest, shadow_user = ({line.split()[0]: line.split(None, 1)[1] for line in lines[i + 1:i + 4]}
                          for i in (1, 9))
    assert _cells(guest["pde"])[0] == (pde_addr, pde)
    if pte_addr is not None:
        assert _cells(guest["pte"])[0] == (pte_addr, pte)
    guest_page = guest["page"]
    if not pde & 1 or (pte is not None and not pte & 1):
        assert guest_page.startswith("not present")
    else:
        frame = (pde & 0xFFC00000) | (vaddr & 0x3FF000) if pte is None else pte & ~0xFFF
        assert guest_page.startswith(f"{frame & ~0xFFF:#010x} -> {frame | (vaddr & 0xFFF):#010x}"
                                     if pte is not None else f"{pde & 0xFFC00000:#010x}")
    # the shadow cells are the VMM's real tables: a filled user-view entry maps the same
    # frame as the guest
    if shadow_user["page"].startswith("0x") and pte is not None:
        assert int(shadow_user["page"], 16) == pte & ~0xFFF


def test_pt_map_and_pages_show_the_whole_guest_address_space():
    """The paging guest's own tables (tests/guests/paging.S) at user_entry: 0-4 MiB identity
    mapped supervisor read/write except its two user pages, 0x400000 and 0x401000 read/write
    (remapped to 0x201000, the second made writable), and PDE 2 a 4 MiB page at 0."""
    m, mon, sym = setup("paging")
    mon.run("break user_entry")
    mon.run("c")
    user = sorted((sym["user_page"], sym["user_stack_page"]))
    expected = []
    start = 0
    for page in user:                          # -rw, then the user page urw, and so on
        if page > start:
            expected.append((start, page, "-rw"))
        expected.append((page, page + 0x1000, "urw"))
        start = page + 0x1000
    expected += [(start, 0x402000, "-rw"), (0x800000, 0xC00000, "-rw")]
    out = mon.run("pt map")
    assert mon.run("info mem") == out
    rows = re.findall(r"^([0-9a-f]{8})-([0-9a-f]{8}) ([0-9a-f]{8}) (\S+) +0x([0-9a-f]{8}) +"
                      r"(\d+)/(\d+) pages$", out, re.M)
    assert [(int(a, 16), int(b, 16), r) for a, b, _, r, _, _, _ in rows] == expected, out
    for a, b, size, _, first, shadowed, pages in rows:
        assert int(size, 16) == int(b, 16) - int(a, 16) == int(pages) * 0x1000
        assert int(shadowed) <= int(pages)
    assert rows[-1][4] == "00000000"             # the 4 MiB page maps physical 0
    pages = mon.run("info tlb").splitlines()
    assert "00400000: 00201000 4K -rw" in pages and "00401000: 00202000 4K -rw" in pages
    assert "00800000: 00000000 4M -rw" in pages
    assert f"{sym['user_page']:08x}: {sym['user_page']:08x} 4K urw" in pages
    assert len(pages) == 1024 + 2 + 1


def test_pt_walk_with_paging_off_and_pt_stats():
    m, mon, sym = setup()
    out = mon.run("pt walk 0x1234")
    assert "guest paging off" in out and "0x00001000 identity" in out
    stats = mon.run("pt stats")
    assert stats.startswith("guest paging off") and f"fills {m.mmu.stats.fills}" in stats


# -- tables and devices ------------------------------------------------------------------
def test_idt_lists_the_guest_gates_with_handlers():
    m, mon, sym = setup()
    mon.run("break wait")
    mon.run("c")
    lines = mon.run("idt").splitlines()
    gates = {int(line.split()[0], 16): line for line in lines[1:]}
    assert set(gates) == {0, 13, 0x20, 0x80}
    assert gates[0].endswith(f"0x0008:{sym['de_handler']:#010x} <de_handler> dpl 0 present")
    assert gates[0x80].startswith("0x80 trap_gate32")
    assert gates[0x20].startswith("0x20 interrupt_gate32")


def test_gdt_and_tss_match_guest_memory():
    m, mon, sym = setup()
    assert mon.run("gdt").startswith("no GDT loaded yet")
    assert mon.run("tss") == "no TSS loaded (TR is the null selector)\n"
    mon.run("break wait")
    mon.run("c")
    gdtr = m.vcpu.gdtr
    text = mon.run("gdt").splitlines()
    assert text[0] == f"gdt base {gdtr.base:#010x} limit {gdtr.limit:#x}"
    for line in text[1:]:
        selector, index, raw = re.match(r"(0x[0-9a-f]+) \[ *(\d+)\] ([0-9a-f]{16})", line).groups()
        index = int(index)
        assert int(selector, 16) == 8 * index
        assert int(raw, 16) == struct.unpack("<Q", m.read_physical(gdtr.base + 8 * index, 8))[0]
    tss = mon.run("tss")
    if m.vcpu.tr.selector:
        assert tss.startswith(f"tr {m.vcpu.tr.selector:#06x}")


def test_pic_and_pit_after_the_guest_programs_them():
    m, mon, sym = setup()
    mon.run("break wait")
    mon.run("c")
    pic = mon.run("pic")
    assert f"vector base {m.pic.master.vector_base:#04x}" in pic
    assert f"imr {m.pic.master.imr:08b}" in pic
    pit = mon.run("pit")
    assert pit.startswith("channel 0: mode ") and "reload 0x2e9c" in pit   # 11932: 100 Hz
    assert "counting: current count" in pit


def test_hal_stats_provider():
    m, mon, _ = setup()
    assert mon.run("hal stats") == "no HAL devices\n"
    m2, mon2, _ = setup(hal_stats=lambda vm: f"vm {vm}: console 3 packets")
    assert mon2.run("hal stats") == "vm 0: console 3 packets\n"


# -- tracing and history ------------------------------------------------------------------
def test_trace_lines_are_the_events_as_they_happen():
    m, mon, sym = setup()
    assert mon.run("trace on vif,irq") == "tracing vif, irq\n"
    out = mon.run("c")
    reference = [e for e in reference_events("basics", EventKind.VIF, 100)]
    trace = [line for line in out.splitlines() if line.startswith("[")]
    assert [line for line in trace if " vif " in line] == [e.describe() for e in reference]
    assert any(" irq " in line for line in trace)
    assert mon.run("trace off vif") == "tracing irq\n"
    assert mon.run("trace off") == "tracing nothing\n"


def test_trace_goes_to_notify_when_there_is_one():
    lines: list[str] = []
    m, mon, sym = setup(notify=lines.append)
    mon.run("trace on vif")
    out = mon.run("c")
    assert "vif" not in out.split("debug-exit")[0]
    assert [line.rstrip() for line in lines] == [
        e.describe() for e in reference_events("basics", EventKind.VIF, 100)]


def test_events_shows_the_recorded_history():
    m, mon, sym = setup()
    mon.run("c")
    reference = reference_events("basics", EventKind.VIF, 100)
    assert mon.run("events vif last 2").splitlines() == [e.describe() for e in reference[-2:]]
    assert len(mon.run("events").splitlines()) == 20
    assert mon.run("events last 1").splitlines()[0].split()[2] == "stop"


# -- the session --------------------------------------------------------------------------
def test_info_summarises_the_vm():
    m, mon, sym = setup()
    mon.run("catch vif")
    mon.run("c")
    info = mon.run("info")
    assert "vm 0 of 1: paused" in info
    assert f"eip {sym['wait']:#010x} <wait>  cpl 0  vif 1" in info
    assert "cause=sti" in info and f"icount {m.icount}" in info


def test_a_finished_guest_cannot_be_continued():
    m, mon, _ = setup()
    mon.run("c")
    assert mon.status.ended
    assert "the guest has ended (debug-exit)" in mon.run("c")
    assert "the guest has ended" in mon.run("step")


def test_runner_and_several_vms():
    machines = []
    for name in ("basics", "paging"):
        m = build_machine()
        m.load(load(build(name), m.ram_size))
        machines.append(m)
    calls = []

    def runner(max_insns, interrupted):
        calls.append((max_insns, interrupted()))
        stops = [mm.run(max_insns, interrupted=interrupted) for mm in machines]
        return stops[0]
    mon = CommandInterpreter(machines=machines, run=runner)
    out = mon.run("vm")
    assert out.splitlines()[0].startswith("* vm 0: paused")
    assert mon.run("vm 1").splitlines()[1].startswith("* vm 1")
    assert f"<{'_start'}>" in mon.run("regs")
    assert machines[1].symbols["_start"] == mon.machine.registers().eip
    mon.run("vm 0")
    mon.run("c")
    assert calls == [(None, False)]
    assert machines[0].icount > 0 and machines[1].icount > 0


def test_send_types_into_the_console():
    got = []
    m, mon, _ = setup(console_input=lambda vm, data: got.append((vm, data)))
    assert mon.run("send ls -l") == ""
    assert mon.run('send "\\x03"') == ""
    assert got == [(0, b"ls -l\n"), (0, b"\x03")]


def test_stop_from_another_thread_while_the_guest_runs():
    m, mon, sym = setup("spin")
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("out", mon.run("c")),
                              daemon=True)
    worker.start()
    try:
        deadline = time.time() + 10
        while not mon.running and time.time() < deadline:
            time.sleep(0.01)
        assert mon.running and mon.status.running
        out = mon.run("regs")
        assert out.startswith("error: the guest is running")
        assert mon.run("help stop").startswith("stop")          # safe while running
        assert mon.run("stop") == "stopping the guest\n"
    finally:
        mon.request_stop()
        worker.join(10)
    assert result["out"].startswith("stopped\n=> ")
    assert mon.vm.last_stop.reason is StopReason.REQUESTED
    assert not mon.running and mon.run("regs").startswith("eax")


def test_help_covers_every_command():
    from dbgvm.repl import commands as S
    _, mon, _ = setup()
    text = mon.run("help")
    for cls in S.COMMANDS:
        assert cls.usage in text
        for name in cls.names:
            assert mon.run(f"help {name}").startswith(cls.usage.split()[0]), name


# -- going back in a recorded run ---------------------------------------------------------
# A Machine on its own is deterministic: an engine over a fresh machine, told where a full
# reference run of the guest ends, goes back and forth in that run without any recording.
def fresh(name: str = "basics", icount: int | None = None) -> Machine:
    """A new machine of the guest, run for exactly ``icount`` instructions (none: to its
    end)."""
    m = build_machine()
    m.load(load(build(name), m.ram_size))
    if icount is None:
        m.run()
    else:
        while m.icount < icount:
            if m.run(icount - m.icount).reason is not StopReason.MAX_INSNS:
                break
        assert m.icount == icount
    return m


def end_of_run(name: str = "basics") -> int:
    return fresh(name).icount


def reverse_setup(name="basics", *, interval=100, end=None, **monitor_args):
    m, _, sym = setup(name)
    engine = ReverseEngine(m, end_of_run(name) if end is None else end, interval=interval)
    return m, CommandInterpreter(m, reverse=engine, **monitor_args), sym, engine


def same_state(m: Machine, icount: int, name: str = "basics") -> bool:
    """The machine is where a fresh run of ``icount`` instructions is (registers, RAM)."""
    ref = fresh(name, icount)
    return (m.icount, m.registers(), m.read_physical(0, 0x200000)) == \
        (ref.icount, ref.registers(), ref.read_physical(0, 0x200000))


def test_rstep_lands_where_a_fresh_run_of_fewer_instructions_is():
    m, mon, sym, _ = reverse_setup()
    mon.run("step 5")
    out = mon.run("rstep 2")
    assert m.icount == 3 and same_state(m, 3)
    ref = fresh("basics", 3).registers()
    assert out.startswith(f"=> {ref.eip:#010x} <") and out.endswith("   (icount 3)\n")
    assert len(out.splitlines()) == 1                  # as `step`: no reason line
    assert mon.run("rstep") == mon.run("goto 2")       # same place, same report
    assert same_state(m, 2)


@pytest.mark.parametrize("interval", [100, 2_000_000])
def test_rstep_across_snapshots_and_interrupts(interval):
    m, mon, sym, _ = reverse_setup(interval=interval)
    mon.run("c")                                        # to the end: debug-exit
    end = m.icount
    for back in (1, 1, 7, 120, 3):
        before = m.icount
        mon.run(f"rstep {back}")
        assert m.icount == before - back and same_state(m, before - back), (before, back)
    assert m.icount == end - 132


def test_rstep_at_the_start_says_so():
    m, mon, sym, _ = reverse_setup()
    out = mon.run("rstep")
    assert out == ("start of the recorded run\n"
                   f"=> {sym['_start']:#010x} <_start>:  mov esp, {sym['stack_top']:#x}"
                   "   (icount 0)\n")
    assert mon.vm.last_stop.reason is StopReason.HISTORY_START
    mon.run("step 3")
    out = mon.run("rstep 10")                          # more than there is: to the start
    assert out.startswith("start of the recorded run\n=> ")
    assert m.icount == 0 and same_state(m, 0)
    mon.run("step 3")
    assert mon.run("rstep 3").startswith("=> ")        # exactly back to 0 is a plain step
    assert m.icount == 0


def test_rcontinue_returns_to_the_previous_breakpoint_hit():
    m, mon, sym, _ = reverse_setup()
    mon.run("break wait")
    mon.run("c")
    first = m.icount
    assert m.registers().eip == sym["wait"]
    mon.run("c")
    second = m.icount
    assert second > first and m.registers().eip == sym["wait"]
    out = mon.run("rcontinue")
    assert out == (f"breakpoint 1 at {sym['wait']:#010x} <wait>\n"
                   f"=> {sym['wait']:#010x} <wait>:  hlt   (icount {first})\n")
    assert m.icount == first and same_state(m, first)
    assert mon.vm.last_stop.reason is StopReason.BREAKPOINT
    assert mon.vm.points.points[1].hits == 3           # counted as gdb does, backwards too
    # no earlier hit: back to the start of the run
    out = mon.run("rcontinue")
    assert out.startswith("start of the recorded run\n=> ") and m.icount == 0
    assert mon.vm.last_stop.reason is StopReason.HISTORY_START
    # and forward again: the same hits
    mon.run("c")
    assert m.icount == first
    mon.run("c")
    assert m.icount == second


def test_rcontinue_stops_at_watchpoints_backwards():
    m, mon, sym, _ = reverse_setup()
    mon.run("watch ticks")
    hits = []
    for _ in range(3):
        mon.run("c")
        hits.append(m.icount)
    assert u32(m, sym["ticks"]) == 3
    out = mon.run("rcontinue")
    assert out.startswith(f"watchpoint 1: write of {sym['ticks']:#010x} <ticks>\n=> ")
    assert m.icount == hits[1] and same_state(m, hits[1]) and u32(m, sym["ticks"]) == 2
    mon.run("rcontinue")
    assert m.icount == hits[0] and u32(m, sym["ticks"]) == 1
    assert mon.run("rcontinue").startswith("start of the recorded run")


def test_rcontinue_finds_the_last_of_several_points():
    m, mon, sym, _ = reverse_setup()
    mon.run("c")                                        # to the end, no points
    mon.run("break de_insn")
    mon.run("break gp_insn")
    out = mon.run("rcontinue")
    assert out.startswith(f"breakpoint 2 at {sym['gp_insn']:#010x} <gp_insn>\n")
    assert m.registers().eip == sym["gp_insn"]
    assert mon.run("rcontinue").startswith("breakpoint 1 at")
    assert m.registers().eip == sym["de_insn"] and same_state(m, m.icount)


def test_rcontinue_finds_a_hit_exactly_at_a_snapshot():
    """A breakpoint hit at an instruction count where the engine keeps a snapshot."""
    m, mon, sym, engine = reverse_setup(interval=100)
    mon.run("c")                                        # snapshots every 100 instructions
    assert 300 in [s.icount for s in engine.store.snapshots]
    at_300 = fresh("basics", 300).registers().eip
    mon.run(f"break {at_300}")
    # the next time that address runs after 300
    probe = fresh("basics", 301)
    while probe.registers().eip != at_300:
        probe.run(1)
    mon.run(f"goto {probe.icount - 1}")
    out = mon.run("rcontinue")
    assert m.icount == 300, out
    assert out.startswith("breakpoint 1 at ")


def test_continue_stops_at_a_breakpoint_on_a_snapshot_boundary():
    """Going forward, the engine runs up to each snapshot point and on from there: a
    breakpoint first reached exactly at such a point still stops the run."""
    probe, seen = fresh("basics", 0), set()
    while probe.icount <= 100 or probe.registers().eip in seen:
        seen.add(probe.registers().eip)
        probe.run(1)
    address, first = probe.registers().eip, probe.icount    # first reached after 100
    m, mon, sym, engine = reverse_setup(interval=first)     # a snapshot is taken there
    mon.run(f"break {address}")
    out = mon.run("c")
    assert m.icount == first, out
    assert out.startswith("breakpoint 1 at ")


def test_rcontinue_finds_a_hit_at_the_first_instruction():
    m, mon, sym, _ = reverse_setup()
    mon.run("break _start")
    mon.run("step 5")
    out = mon.run("rcontinue")
    assert m.icount == 0
    assert out.startswith(f"breakpoint 1 at {sym['_start']:#010x} <_start>\n"), out


def test_goto_is_a_fresh_run_of_that_many_instructions():
    m, mon, sym, engine = reverse_setup()
    for icount in (300, 5, 753, 0, 880, 751, 1):
        out = mon.run(f"goto {icount}")
        assert m.icount == icount and same_state(m, icount), icount
        assert out.endswith(f"   (icount {icount})\n") and out.startswith("=> ")
    mon.run("goto 0x10 * 3 + 2")
    assert m.icount == 50


def test_goto_outside_the_recorded_run_is_refused():
    m, mon, sym, engine = reverse_setup(end=500)
    mon.run("goto 42")
    assert mon.run("goto 501") == (
        "error: icount 501 is outside the recorded run (0..500) in: goto 501\n"
        + " " * len("error: icount 501 is outside the recorded run (0..500) in: goto ")
        + "^\n")
    assert mon.run("goto 1-2").startswith("error: icount -1 is outside the recorded run")
    assert m.icount == 42
    mon.run("goto 500")
    assert m.icount == 500


def test_forward_stops_at_the_end_of_the_recorded_run():
    m, mon, sym, engine = reverse_setup(end=500)
    out = mon.run("c")
    assert out.startswith("end of the recorded run\n=> ") and out.endswith("(icount 500)\n")
    assert m.icount == 500 and same_state(m, 500)
    assert mon.vm.last_stop.reason is StopReason.HISTORY_END and not mon.status.ended
    assert mon.run("step").startswith("end of the recorded run") and m.icount == 500
    mon.run("rstep 2")
    mon.run("step 5")                                   # steps up to the end, no further
    assert m.icount == 500 and mon.vm.last_stop.reason is StopReason.HISTORY_END


def all_events(name: str = "basics") -> list[Event]:
    """Every event of an undisturbed run of the guest to its end."""
    m = build_machine()
    m.load(load(build(name), m.ram_size))
    seen: list[Event] = []
    m.events.subscribe(set(EventKind), seen.append)
    m.run()
    return seen


def test_going_back_keeps_the_monitor_state_right():
    # one snapshot (at 0): the engine runs forward in one go
    m, mon, sym, engine = reverse_setup(interval=2_000_000)
    reference = reference_events("basics", EventKind.IRQ, 1)[0]   # the first timer tick
    everything = all_events()
    ref = fresh()
    mon.run("catch irq")
    mon.run("c")
    assert mon.vm.last_catch.icount == reference.icount
    mon.run("uncatch")
    mon.run("c")
    assert mon.status.ended and mon.vm.last_stop.reason is StopReason.DEBUG_EXIT
    assert "the guest has ended" in mon.run("c")
    mon.run(f"goto {reference.icount - 10}")
    now = m.icount
    # the VM is paused, not ended; what happened after `now` is not in its history yet
    assert not mon.status.ended and mon.vm.ended is None
    assert mon.status.icount == now and mon.status.eip == m.registers().eip
    assert mon.status.stop == "step" and mon.vm.last_stop.icount == now
    assert list(mon.vm.history) == [e for e in everything if e.icount < now][-len(
        mon.vm.history):]
    assert all(e.icount < now for e in mon.vm.history)
    assert mon.vm.last_catch is None
    assert "vm 0 of 1: paused" in mon.run("info")
    # forward again: the same events, once each, the same end
    mon.run("c")
    assert mon.vm.last_stop.reason is StopReason.DEBUG_EXIT and m.icount == ref.icount
    assert [e for e in mon.vm.history if e.icount >= now] == \
        [e for e in everything if e.icount >= now]


def test_going_forward_through_snapshots_publishes_only_the_guest_events():
    """The engine runs forward in pieces to take its snapshots: the listeners (the
    monitor's history and trace, a replay's verifier) must see the events of one run."""
    m, mon, sym, engine = reverse_setup(interval=100)
    mon.run("trace on stop")
    out = mon.run("c")
    assert len(engine.store.snapshots) > 1
    assert list(mon.vm.history) == all_events()
    assert [line for line in out.splitlines() if " stop " in line] == \
        [e.describe() for e in all_events() if e.kind is EventKind.STOP]


def test_going_back_needs_a_recorded_run():
    m, mon, _ = setup()
    for line in ("rstep", "rstep 3", "rcontinue", "goto 5"):
        assert mon.run(line) == (
            "error: going backwards needs a recorded run: use `dbgvm replay FILE` in: "
            f"{line}\n" + " " * len("error: going backwards needs a recorded run: use "
                                     "`dbgvm replay FILE` in: ") + "^\n")
    assert m.icount == 0


def test_only_the_recorded_vm_goes_back():
    machines = [fresh("paging", 0), fresh("basics", 0)]
    engine = ReverseEngine(machines[1], end_of_run("basics"), interval=100)
    mon = CommandInterpreter(machines=machines, reverse=engine)
    out = mon.run("rstep")
    assert out.startswith("error: only VM 1 has a recorded run to go back in ('vm 1')")
    mon.run("step 3")                                  # VM 0 runs forward on its own
    assert machines[0].icount == 3
    mon.run("vm 1")
    mon.run("step 4")
    assert mon.run("rstep").endswith("(icount 3)\n") and machines[1].icount == 3
    with pytest.raises(ValueError):
        CommandInterpreter(machines[0], reverse=engine)


def test_quit_sets_the_flag():
    _, mon, _ = setup()
    assert mon.run("quit") == "" and mon.quit_requested


# (line, problem, caret column) -- every run-time message of the catalogue; test_grammar.py
# checks that these and its syntax errors together cover the whole catalogue
RUNTIME_ERRORS = [
    ("break nosuchsymbol", Problem.UNKNOWN_SYMBOL, 6),
    ("set eax = 1 + 2/(3-3)", Problem.DIVISION_BY_ZERO, 17),
    ("x 0xfff00000", Problem.UNMAPPED, 2),
    ("watch 0x7000000", Problem.UNMAPPED, 6),
    ("xp 0x7fffffff 4", Problem.OUTSIDE_RAM, 3),
    ("setp 0 1 256", Problem.NOT_A_BYTE, 9),
    ("step 0", Problem.BAD_COUNT, 5),
    ("x 0 5000", Problem.BAD_COUNT, 4),
    ("delete 9", Problem.NO_BREAKPOINT, 7),
    ("set cs = 3", Problem.REGISTER_WRITE, 4),
    ("regs", Problem.BUSY, 0),
    ("stop", Problem.NOT_RUNNING, 0),
    ("continue", Problem.ENDED, 0),
    ("vm 2", Problem.NO_VM, 3),
    ("send hello", Problem.NO_CONSOLE_INPUT, 5),
    ("rstep", Problem.NO_HISTORY, 0),
    ("rcontinue", Problem.NO_HISTORY, 0),
    ("goto 1", Problem.NO_HISTORY, 0),
    ("rstep 2", Problem.NOT_THE_RECORDED_VM, 0),
    ("goto 0x7fffffff", Problem.OUTSIDE_HISTORY, 5),
    ("rstep 0", Problem.BAD_COUNT, 6),
    # through gdb's `monitor`
    ("continue", Problem.BEHIND_GDBS_BACK, 0),
    ("quit", Problem.QUIT_UNDER_GDB, 0),
]
UNDER_GDB = {Problem.BEHIND_GDBS_BACK, Problem.QUIT_UNDER_GDB}


@pytest.mark.parametrize("line,problem,column", RUNTIME_ERRORS,
                         ids=[c[0] for c in RUNTIME_ERRORS])
def test_runtime_errors_say_what_and_where_and_change_nothing(line, problem, column):
    m, mon, _ = setup()
    if problem is Problem.OUTSIDE_HISTORY or line.startswith("rstep 0"):
        m, mon, _, _ = reverse_setup()
    elif problem is Problem.NOT_THE_RECORDED_VM:
        other = fresh("basics", 0)
        mon = CommandInterpreter(machines=[m, other], reverse=ReverseEngine(other, 100))
    if problem is Problem.ENDED:
        mon.run("c")
    regs = m.registers()
    memory = m.read_physical(0, 0x200000)
    points = dict(mon.vm.points.points)
    if problem is Problem.BUSY:
        assert mon._machine_lock.acquire()       # as while another thread runs the guest
        out = mon.run(line)
        mon._machine_lock.release()
    else:
        out = mon.run(line, from_gdb=problem in UNDER_GDB)
    message, caret, rest = out.split("\n")
    assert rest == "" and message.startswith("error: ")
    assert message.split(" in: ")[0] == "error: " + _message(problem, line, mon), out
    assert caret.index("^") == len(message) - len(line) + column
    assert m.registers() == regs and m.read_physical(0, 0x200000) == memory
    assert mon.vm.points.points == points


def _message(problem: Problem, line: str, mon: CommandInterpreter) -> str:
    from dbgvm.repl.errors import CommandError
    try:
        mon.execute(parse(line), from_gdb=problem in UNDER_GDB) \
            if problem is not Problem.BUSY else None
    except CommandError as exc:
        assert exc.problem is problem
        return exc.message
    return problem.value.format()


def test_the_old_gdb_monitor_commands_still_work():
    m, mon, _ = setup()
    assert mon.run("setp 0x5000 1 2 0xff") == "wrote 3 bytes at physical 0x5000\n"
    assert "00005000: 01 02 ff" in mon.run("xp 0x5000 3")
    assert mon.run("step-irqs on") == "interrupts while stepping: on\n" and \
        m.irqs_while_stepping
    assert mon.run("frobnicate").startswith("error: unknown command")


def test_help_fits_80_columns_broken_between_words():
    from dbgvm.repl import commands as S
    _, mon, _ = setup()
    texts = [mon.run("help")] + [mon.run(f"help {cls.names[0]}") for cls in S.COMMANDS]
    for text in texts:
        assert max(len(line) for line in text.splitlines()) <= 80, text
    words = set(texts[0].split())
    for cls in S.COMMANDS:        # every word of every summary is there whole
        summary = cls.help.split(". ")[0].rstrip(".")
        assert set(summary.split()) <= words, cls
    assert "also: info registers" in mon.run("help regs")


def test_console_and_trace_prefixes_are_vm_n_everywhere():
    from dbgvm.repl.app import ConsoleLines
    shown: list[str] = []
    ConsoleLines(shown.append, lambda: True).feed(1, b"hello\n")
    assert shown == ["[vm1] hello\n"]          # as `dbgvm run --batch --vms 2` prints it
    m0, m1 = build_machine(), build_machine()
    for m in (m0, m1):
        m.load(load(build("basics"), m.ram_size))
    mon = CommandInterpreter(machines=[m0, m1])
    mon.run("trace on stop")
    mon.run("vm 1")
    out = mon.run("continue")
    assert "[vm1] " in out and "[vm 1]" not in out
