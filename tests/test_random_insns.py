"""Random instructions at virtual ring 0 (paging off and on) and at virtual ring 3 (paging on),
from a fixed list of seeds: every run, bounded by an instruction limit, must end cleanly (any
stop but a monitor error; no exception raised into the host) and leave the monitor hole intact
(test_escapes.assert_hole_intact).

The frame is tests/guests/fuzz.S: every vector's handler resumes one byte past the faulting
instruction, so a run goes on through the whole random block instead of faulting on its first
bad instruction until the limit. ``DBGVM_FUZZ_SEEDS=N`` runs seeds 0..N-1 (default 60) and
``DBGVM_FUZZ_BYTES`` sets the block's size (default 256).
"""
from __future__ import annotations

import os
import random
import struct

import pytest

from dbgvm.core.assembly import build_machine
from dbgvm.core.events import EventKind
from dbgvm.core.faults import StopReason
from dbgvm.core.loader import load
from guest_build import build
from test_escapes import HOLE_PT, assert_hole_intact, fill_marker

SEEDS = int(os.environ.get("DBGVM_FUZZ_SEEDS", "60"))
BYTES = int(os.environ.get("DBGVM_FUZZ_BYTES", "256"))
MAX_INSNS = 25_000         # the frame's own set-up takes about 7,000
RINGS = {"ring0": "0", "ring0-paging": "p", "ring3-paging": "3"}


def random_block(seed: int, size: int = BYTES) -> bytes:
    return random.Random(seed).randbytes(size)


def run_random(mode: str, code: bytes, max_insns: int = MAX_INSNS):
    machine = build_machine(ram_mb=8)
    fill_marker(machine.hole)
    hole_pt_before = bytes(machine.hole[HOLE_PT[0]:HOLE_PT[1]])
    machine.load(load(build("fuzz"), machine.ram_size, cmdline=f"mode={mode}"))
    start = machine.symbols["fuzz_code"]
    back = struct.pack("<Bi", 0xE9, -(len(code) + 5))           # jmp fuzz_code
    machine.write_physical(start, code + back)
    stops = []
    machine.events.subscribe({EventKind.STOP}, stops.append)
    stop = machine.run(max_insns)
    return machine, stop, stops, hole_pt_before


@pytest.mark.parametrize("seed", range(SEEDS))
@pytest.mark.parametrize("ring", RINGS)
def test_random_code_stops_cleanly_and_leaves_the_hole_alone(ring, seed):
    machine, stop, stops, hole_pt_before = run_random(RINGS[ring], random_block(seed))
    assert stop.reason is not StopReason.VMM_ERROR, stop.message
    assert len(stops) == 1
    assert_hole_intact(machine, hole_pt_before, ram_size=machine.ram_size)


def test_the_frame_resumes_after_faults():
    """The handlers do resume the random code: a block of UD2s and INT3s at ring 3 faults
    once per instruction (UD2 is 2 bytes: resuming 1 byte past it decodes 0B, a #UD too)."""
    machine, stop, _, _ = run_random("3", b"\x0f\x0b\xcc" * 10, max_insns=20_000)
    assert stop.reason is StopReason.MAX_INSNS, stop.message
    assert int.from_bytes(machine.read_physical(machine.symbols["faults"], 4), "little") > 100
