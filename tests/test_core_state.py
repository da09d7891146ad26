"""Each stateful core component saves a frozen state and restores it in place.

Two checks per component: its state type names every attribute the component has, apart from
the ones it declares NOT_SAVED (so an attribute added later fails here until it is saved or
declared), and a round trip: save, change the component through its own interface, restore,
and the component behaves and saves as before."""
from __future__ import annotations

import dataclasses

import pytest

from dbgvm.core.clock import VirtualClock
from dbgvm.core.debug import WatchKind
from dbgvm.core.events import EventKind
from dbgvm.core.inputs import InputQueue
from dbgvm.core.pic import Chip, Pic
from dbgvm.core.pit import Channel, Pit
from dbgvm.core.syscalls import SyscallTracker
from dbgvm.core.vcpu import VirtualCpu
from conftest import run_guest


def assert_state_names_every_attribute(component: object, state: object) -> None:
    attributes = {name.lstrip("_") for name in vars(component)}
    not_saved = getattr(type(component), "NOT_SAVED", frozenset())
    assert not_saved <= attributes, "NOT_SAVED names an attribute that does not exist"
    assert attributes - not_saved == {f.name for f in dataclasses.fields(state)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(state, dataclasses.fields(state)[0].name, None)


def test_virtual_cpu_round_trip():
    vcpu = VirtualCpu()
    vcpu.cr3, vcpu.msrs[0x174] = 0x1000, 0x10
    saved = vcpu.save()
    assert_state_names_every_attribute(vcpu, saved)
    vcpu.cpl, vcpu.vif, vcpu.iopl, vcpu.cr0, vcpu.cr2, vcpu.cr3, vcpu.cr4 = 3, True, 1, 0, 1, 2, 4
    vcpu.gdtr.base, vcpu.idtr.limit, vcpu.ldtr.selector, vcpu.tr.base = 1, 2, 3, 4
    vcpu.msrs[0x175] = 1
    vcpu.dr[7] = 0x400
    vcpu.restore(saved)
    assert vcpu == VirtualCpu(cr3=0x1000, msrs={0x174: 0x10})
    vcpu.msrs[0x176] = 5                        # the restored containers are the vcpu's own
    assert vcpu.save() != saved and saved.msrs == ((0x174, 0x10),)


def test_clock_round_trip():
    icount = [100]
    clock = VirtualClock()
    clock.count_instructions_of(lambda: icount[0])
    clock.charge(7)
    saved = clock.save()
    assert_state_names_every_attribute(clock, saved)
    clock.charge(5)
    clock.idle_until(1000)
    clock.restore(saved)
    assert clock.now() == 107


def test_pic_round_trip():
    pic = Pic()
    for port, value in ((0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01), (0x21, 0xFC)):
        pic.port_write(port, 1, value)
    pic.raise_irq(1)
    saved = pic.save()
    assert_state_names_every_attribute(pic, saved)
    assert_state_names_every_attribute(pic.master, saved.master)
    assert {f.name for f in dataclasses.fields(Chip)} == set(vars(saved.master))
    assert pic.acknowledge() == (0x21, 1)
    pic.port_write(0x21, 1, 0xFF)
    pic.restore(saved)
    assert pic.port_read(0x21, 1) == 0xFC
    assert pic.acknowledge() == (0x21, 1)


def test_pit_round_trip():
    now = [0]
    raised: list[int] = []
    pit = Pit(lambda: now[0], raised.append)
    pit.port_write(0x43, 1, 0x34)                 # channel 0, lobyte/hibyte, mode 2
    pit.port_write(0x40, 1, 0x00)
    pit.port_write(0x40, 1, 0x10)
    saved = pit.save()
    assert_state_names_every_attribute(pit, saved)
    assert_state_names_every_attribute(pit.channels[0], saved.channels[0])
    assert {f.name for f in dataclasses.fields(Channel)} == set(vars(saved.channels[0]))
    deadline = pit.next_deadline()
    pit.port_write(0x43, 1, 0x30)                 # mode 0, stopped until a count is written
    pit.port_write(0x61, 1, 0x03)
    assert pit.next_deadline() is None
    pit.restore(saved)
    assert pit.next_deadline() == deadline
    assert pit.port_read(0x61, 1) & 0x03 == 0
    now[0] = deadline
    pit.expire(deadline)
    assert raised == [0]


def test_input_queue_round_trip():
    inputs = InputQueue()
    consumed: list[bytes] = []
    inputs.register("console", consumed.append)
    inputs.post("console", b"now")
    inputs.schedule(50, "console", b"later")
    saved = inputs.save()
    assert_state_names_every_attribute(inputs, saved)
    inputs.expire(50)
    inputs.apply(60)
    assert consumed == [b"now", b"later"]
    inputs.restore(saved)
    assert inputs.pending() and inputs.next_deadline() == 50
    inputs.apply(10)
    assert consumed == [b"now", b"later", b"now"]


def test_syscall_tracker_round_trip():
    emitted: list[dict] = []
    tracker = SyscallTracker(lambda kind, eip, **fields: emitted.append(fields),
                             lambda kind: kind is EventKind.SYSCALL)
    tracker.entered(0x100, "int 0x80", 0x1000, 0xBFF0, 4, [1, 2, 3, 4, 5, 6])
    saved = tracker.save()
    assert_state_names_every_attribute(tracker, saved)
    tracker.returned(0x200, 0x1000, 0xBFF0, 3)
    assert not tracker.expecting
    tracker.restore(saved)
    tracker.returned(0x200, 0x1000, 0xBFF0, 3)
    assert [e["op"] for e in emitted] == ["entry", "exit", "exit"]


def _components(machine):
    return {"vcpu": machine.vcpu, "scheduler": machine.scheduler, "clock": machine.clock,
            "inputs": machine.inputs, "pic": machine.pic, "pit": machine.pit,
            "mmu": machine.mmu, "tables": machine.tables,
            "descriptor_watch": machine.descriptor_watch, "syscalls": machine.syscalls,
            "debug": machine.debug}


def test_every_machine_component_names_all_its_attributes():
    run = run_guest("paging", max_insns=20_000)
    for name, component in _components(run.machine).items():
        assert_state_names_every_attribute(component, component.save()), name


@pytest.mark.parametrize("name", ["paging", "desctables", "basics"])
def test_a_snapshot_brings_every_component_and_the_run_back(name):
    run = run_guest(name, max_insns=30_000)
    machine = run.machine
    store = machine.snapshot_store()
    store.take(machine.icount, machine.clock.now())
    at_snapshot = len(machine.console_output)
    saved = {key: part.save() for key, part in _components(machine).items() if key != "debug"}
    machine.run(40_000)
    ahead = ({key: part.save() for key, part in _components(machine).items()},
             machine.registers(), bytes(machine.console_output), machine.icount)
    assert saved != {key: value for key, value in ahead[0].items() if key != "debug"}
    store.restore(0)
    assert {key: part.save() for key, part in _components(machine).items()
            if key != "debug"} == saved
    console = len(machine.console_output)
    machine.run(40_000)
    again = ({key: part.save() for key, part in _components(machine).items()},
             machine.registers(), bytes(machine.console_output[console:]), machine.icount)
    assert again[0] == ahead[0] and again[1] == ahead[1] and again[3] == ahead[3]
    assert again[2] == ahead[2][at_snapshot:]


def test_debug_points_round_trip():
    run = run_guest("paging", max_insns=20_000)
    debug = run.machine.debug
    kept = debug.add_breakpoint(0x100000, "test")
    saved = debug.save()
    later = debug.add_breakpoint(0x100010, "test")
    debug.remove(kept)
    debug.add_watchpoint(0x100000, 4, WatchKind.WRITE, "test")
    debug.restore(saved)
    assert debug.breakpoints == [0x100000] and not debug.watching
    assert debug.save() == saved
    assert debug.holds(kept) and not debug.holds(later)
    assert not debug.remove(later)              # given out after the save: no longer held
    # numbers are not handed out twice, even after going back
    assert debug.add_breakpoint(0x100020, "test").number > later.number
    assert debug.remove(kept) and debug.breakpoints == [0x100020]
