"""No guest behaviour raises in the host: random code at virtual ring 0, with paging on or off,
runs until it stops, and every stop is a clean one (never a monitor error)."""
from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbgvm.core.assembly import build_machine
from dbgvm.core.events import EventKind
from dbgvm.core.faults import StopReason
from dbgvm.core.loader import BootImage, Chunk

CODE = 0x100000
IDT = 0x8000
HANDLER = 0x9000


ERROR_CODE_VECTORS = {8, 10, 11, 12, 13, 14, 17}


PD = 0xA000
PAGING_ON = (b"\xb8\x10\x00\x00\x00\x0f\x22\xe0"           # mov eax,0x10 (PSE); mov cr4,eax
             + b"\xb8" + struct.pack("<I", PD) + b"\x0f\x22\xd8"  # mov eax,PD; mov cr3,eax
             + b"\x0f\x20\xc0\x0d\x00\x00\x00\x80\x0f\x22\xc0")  # cr0 |= PG


def _image(code: bytes, paging: bool = False) -> BootImage:
    """Random code after LIDT (and, with ``paging``, with a 4 MiB identity page); every
    vector's handler just returns (dropping an error code), so a faulting instruction faults
    again and again until the instruction limit."""
    gates = b"".join(struct.pack("<HHBBH", HANDLER + (8 if v in ERROR_CODE_VECTORS else 0), 0x10,
                                 0, 0x8E, 0) for v in range(256))
    idtr = struct.pack("<HI", len(gates) - 1, IDT)
    prologue = b"\x0f\x01\x1d" + struct.pack("<I", 0x7000)      # lidt [0x7000]
    if paging:
        prologue += PAGING_ON
    handlers = b"\xcf" + b"\x90" * 7 + b"\x83\xc4\x04\xcf"        # iret | add esp,4; iret
    return BootImage((Chunk(IDT, gates, len(gates)), Chunk(0x7000, idtr, 6),
                      Chunk(HANDLER, handlers, len(handlers)),
                      Chunk(PD, struct.pack("<I", 0x83), 4),
                      Chunk(CODE, prologue + code, len(prologue) + len(code))),
                     CODE, False, 0, 0, {})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(code=st.binary(min_size=1, max_size=64), paging=st.booleans())
def test_random_code_never_breaks_the_vmm(code, paging):
    machine = build_machine(ram_mb=4)
    machine.load(_image(code, paging))
    errors = []
    machine.events.subscribe({EventKind.STOP}, errors.append)
    machine.write_register("esp", 0x7000)
    stop = machine.run(max_insns=5_000)
    assert stop.reason is not StopReason.VMM_ERROR, stop.message
    assert len(errors) == 1


def test_fetch_from_a_page_mapped_beyond_ram_stops_promptly():
    """A fault the monitor cannot resolve must end the run at once: re-executing the faulting
    instruction would only fault again (this once looped forever inside Unicorn)."""
    import subprocess
    import sys
    program = """
import struct, sys
sys.path.insert(0, 'tests')
from test_robustness import _image, PD
from dbgvm.core.loader import BootImage, Chunk
from dbgvm.core.assembly import build_machine
image = _image(b"\\xb8" + struct.pack("<I", 0x400000) + b"\\xff\\xe0", True)
chunks = image.chunks + (Chunk(PD + 4, struct.pack("<I", 0x40000083), 4),)
m = build_machine(ram_mb=4)
m.load(BootImage(chunks, image.entry, False, 0, 0, {}))
m.write_register("esp", 0x7000)
stop = m.run(max_insns=5000)
print(stop.reason.value, stop.message)
"""
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("bad-memory"), proc.stdout
    assert "0x40000000" in proc.stdout
