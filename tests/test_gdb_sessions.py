"""Recorded gdb sessions replayed against the stub, each reply checked by what it means.

tests/transcripts/*.jsonl hold the requests real gdb sent in three sessions (recorded with
``dbgvm run --gdb-transcript``; the file is named GUEST-SCENARIO). They are replayed packet
by packet against a fresh stub on the same guest. No reply is compared with a recorded one:
the expectations come from outside dbgvm:

- the guest's ELF file, read with pyelftools: the entry point, and the bytes of its code and
  data (a read of memory the guest has not written since must return them);
- its symbols, read with binutils' nm: breakpoint addresses, the fault handlers a step lands
  in, the selectors KCODE/KDATA/UCODE/UDATA the guest loads;
- the guest's source (tests/guests/*.S): ``de_insn`` divides by zero and ``user_read`` reads
  a supervisor page from ring 3 (a step lands in the handler), the timer handler increments
  ``ticks`` and the wait loop compares it, basics.S ends with ``exit_with 0x10``;
- the Multiboot specification (EAX = 0x2BADB002 at entry), docs/design.md's debug-exit
  contract (status (V << 1) | 1), and the gdb remote protocol (the reply each request needs,
  the i386 register order of ``g``, the stop reply naming the point that was hit);
- the requests themselves: what P, X and M wrote is what g and m return until the guest runs.
"""
from __future__ import annotations

import struct
import subprocess
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from capstone import CS_ARCH_X86, CS_MODE_32, Cs
from capstone.x86 import X86_OP_MEM
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile
from guest_build import build

from dbgvm.core.assembly import build_machine
from dbgvm.core.loader import load
from dbgvm.gdbstub import transcript
from dbgvm.gdbstub.session import Session

TRANSCRIPTS = Path(__file__).parent / "transcripts"
# the gdb remote protocol's i386 register order (gdb/features/i386/32bit-core.xml)
I386_CORE = ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip", "eflags", "cs",
             "ss", "ds", "es", "fs", "gs")
MULTIBOOT_MAGIC = 0x2BADB002
# from the guests' sources: where a step from a faulting instruction lands
FAULTS_INTO = {("basics", "de_insn"): "de_handler", ("paging", "user_read"): "pf_handler"}
EXIT_STATUS = {"basics": (0x10 << 1) | 1}            # basics.S: exit_with 0x10
DATA_IN_CODE = {"user_skip": 4}                      # paging.S: a variable on the user page
WATCH_KINDS = {b"watch": "2", b"rwatch": "3", b"awatch": "4"}


@dataclass
class Guest:
    """What the ELF file and nm say about a guest, independently of dbgvm's loader."""

    entry: int
    symbols: dict[str, int]
    image: dict[int, int]                 # address -> byte, as loaded (NOBITS: zero)
    written: set[int]                     # addresses the guest may write (data, bss)
    code: dict[int, tuple[str, int, bool]] = field(default_factory=dict)
    # address -> (mnemonic, size, accesses the variable `ticks`)

    @classmethod
    def of(cls, name: str) -> "Guest":
        path = build(name)
        nm = subprocess.run(["nm", str(path)], capture_output=True, text=True, check=True)
        symbols = {parts[2]: int(parts[0], 16) for parts in map(str.split, nm.stdout.splitlines())
                   if len(parts) == 3}
        image: dict[int, int] = {}
        written: set[int] = set()
        with path.open("rb") as f:
            elf = ELFFile(f)
            for section in elf.iter_sections():
                if not section["sh_flags"] & SH_FLAGS.SHF_ALLOC:
                    continue
                start, size = section["sh_addr"], section["sh_size"]
                data = bytes(size) if section["sh_type"] == "SHT_NOBITS" else section.data()
                image.update(zip(range(start, start + size), data))
                if section["sh_flags"] & SH_FLAGS.SHF_WRITE:
                    written.update(range(start, start + size))
            entry = elf["e_entry"]
        for symbol, size in DATA_IN_CODE.items():
            if symbol in symbols:
                written.update(range(symbols[symbol], symbols[symbol] + size))
        guest = cls(entry, symbols, image, written)
        guest._disassemble()
        return guest

    def _disassemble(self) -> None:
        cs = Cs(CS_ARCH_X86, CS_MODE_32)
        cs.detail = True
        ticks = self.symbols.get("ticks")
        start = min(self.image)
        code = bytes(self.image.get(a, 0) for a in range(start, max(self.image) + 1))
        for insn in cs.disasm(code, start):
            touches = any(op.type == X86_OP_MEM and op.mem.disp == ticks and not op.mem.base
                          for op in insn.operands)
            self.code[insn.address] = (insn.mnemonic, insn.size, touches)

    def instruction_before(self, eip: int) -> tuple[str, bool] | None:
        for size in range(1, 16):
            found = self.code.get(eip - size)
            if found is not None and found[1] == size:
                return found[0], found[2]
        return None


def registers(reply: bytes) -> dict[str, int]:
    return {name: struct.unpack_from("<I", bytes.fromhex(reply.decode()), 4 * i)[0]
            for i, name in enumerate(I386_CORE)}


class Checker:
    """Follows a session request by request, with what the guest must look like."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.guest = Guest.of(name)
        self.points: dict[str, set[int]] = {kind: set() for kind in "01234"}
        self.known = dict(self.guest.image)     # memory whose content is known now
        self.ran = False
        self.stop = b""                         # the kind of the last stop
        self.stepped_from: int | None = None
        self.written_regs: dict[int, int] = {}
        self.eip: int | None = None
        self.ticks = 0                          # ``ticks``'s value by the source's semantics
        self.xml = b""
        self.checked_bytes = 0

    def check(self, request: bytes, reply: bytes) -> None:
        head = request.split(b":")[0].split(b",")[0]
        if request.startswith(b"qSupported"):
            features = set(reply.split(b";"))
            assert {b"swbreak+", b"hwbreak+", b"qXfer:features:read+"} <= features
        elif request in (b"vMustReplyEmpty", b"qTStatus", b"qOffsets"):
            assert reply == b""                  # not supported: the protocol's empty reply
        elif request == b"qSymbol::":
            assert reply in (b"", b"OK")
        elif head[:1] in (b"Z", b"z", b"P", b"X", b"M", b"H") or request in (
                b"QStartNoAckMode", b"vKill;a410"):
            assert reply == b"OK"
            self._note_write(request)
        elif request.startswith(b"qXfer:features:read:target.xml:"):
            assert reply[:1] in (b"m", b"l")
            self.xml += reply[1:]
            if reply[:1] == b"l":
                self._check_target_xml()
        elif request == b"?":
            assert reply.startswith(b"T05")
        elif request == b"qfThreadInfo":
            assert reply.startswith(b"m") and len(reply) > 1
        elif request == b"qsThreadInfo":
            assert reply == b"l"
        elif request == b"qAttached":
            assert reply == b"1"                 # attached to a machine that was running
        elif request == b"vCont?":
            assert {b"c", b"s"} <= set(reply.split(b";")[1:])
        elif request == b"g":
            self._check_registers(registers(reply))
        elif request.startswith(b"m"):
            self._check_memory(request, reply)
        elif request.startswith(b"vCont;"):
            self._check_stop(request, reply)
        else:
            pytest.fail(f"no expectation for request {request!r}")

    def _check_target_xml(self) -> None:
        root = ElementTree.fromstring(self.xml)
        assert root.findtext("architecture") == "i386"
        names = [reg.get("name") for reg in root.iter("reg")]
        assert tuple(names[:len(I386_CORE)]) == I386_CORE

    def _note_write(self, request: bytes) -> None:
        kind = request[:1]
        if kind in (b"Z", b"z"):
            point, address, _ = request[1:].decode().split(",")
            points = self.points[point]
            (points.add if kind == b"Z" else points.discard)(int(address, 16))
        elif kind == b"P":
            number, value = request[1:].split(b"=")
            self.written_regs[int(number, 16)] = struct.unpack("<I", bytes.fromhex(
                value.decode()))[0]
        elif kind in (b"X", b"M"):
            where, data = request[1:].split(b":", 1)
            address, length = (int(part, 16) for part in where.split(b","))
            data = data if kind == b"X" else bytes.fromhex(data.decode())
            assert len(data) == length
            self.known.update(zip(range(address, address + length), data))

    def _check_memory(self, request: bytes, reply: bytes) -> None:
        address, length = (int(part, 16) for part in request[1:].split(b","))
        data = bytes.fromhex(reply.decode())
        assert len(data) == length, request
        for offset, byte in enumerate(data):
            expected = self.known.get(address + offset)
            if expected is not None:
                assert byte == expected, (request, data.hex())
                self.checked_bytes += 1

    def _check_registers(self, regs: dict[str, int]) -> None:
        symbols = self.guest.symbols
        for number, value in self.written_regs.items():
            assert regs[I386_CORE[number]] == value
        if not self.ran:
            assert regs["eip"] == self.guest.entry
            assert regs["eax"] == MULTIBOOT_MAGIC
            return
        eip = regs["eip"]
        user_page = symbols.get("user_page")
        user = user_page is not None and user_page <= eip < user_page + 0x1000
        assert regs["cs"] == symbols["UCODE" if user else "KCODE"]
        assert regs["ss"] == symbols["UDATA" if user else "KDATA"]
        if self.eip is None:          # the first g since the guest stopped: where it stopped
            self._check_stop_place(eip)
            self.eip = eip

    def _check_stop_place(self, eip: int) -> None:
        kind = self.stop
        if kind in (b"swbreak", b"hwbreak"):
            # a breakpoint stop names no address: the guest is at one of that kind
            assert eip in self.points["0" if kind == b"swbreak" else "1"], hex(eip)
        elif kind in WATCH_KINDS:
            # stopped after the instruction that accessed the watched variable
            before = self.guest.instruction_before(eip)
            assert before is not None and before[1], hex(eip)
            if before[0] == "inc":
                self.ticks += 1
            ticks = self.guest.symbols["ticks"]
            self.known.update(zip(range(ticks, ticks + 4), struct.pack("<I", self.ticks)))
        elif kind == b"step":
            name = next((n for n, a in self.guest.symbols.items() if a == self.stepped_from
                         and (self.name, n) in FAULTS_INTO), None)
            if name is not None:
                assert eip == self.guest.symbols[FAULTS_INTO[(self.name, name)]]
            else:
                assert eip == self.stepped_from + self.guest.code[self.stepped_from][1]

    def _check_stop(self, request: bytes, reply: bytes) -> None:
        self.ran = True
        self.written_regs.clear()
        for address in self.guest.written:       # the guest may have written its data
            self.known.pop(address, None)
        stepping = request.startswith(b"vCont;s")
        self.stepped_from, self.eip = (self.eip if stepping else None), None
        if reply.startswith(b"W"):
            assert not any(self.points.values())
            assert int(reply[1:], 16) == EXIT_STATUS[self.name]
            return
        assert reply.startswith(b"T05"), reply
        fields = dict(part.split(b":", 1) for part in reply[3:].split(b";") if part)
        if stepping:
            assert self.stepped_from is not None and not set(fields) - {b"thread"}
            self.stop = b"step"
        elif b"swbreak" in fields or b"hwbreak" in fields:
            self.stop = b"swbreak" if b"swbreak" in fields else b"hwbreak"
        else:
            (kind, address), = ((k, v) for k, v in fields.items() if k in WATCH_KINDS)
            assert int(address, 16) in self.points[WATCH_KINDS[kind]]
            assert int(address, 16) == self.guest.symbols["ticks"]   # the only one watched
            self.stop = kind


@pytest.mark.parametrize("path", sorted(TRANSCRIPTS.glob("*.jsonl")), ids=lambda p: p.stem)
def test_recorded_requests_get_the_replies_the_guest_implies(path):
    name = path.stem.split("-")[0]
    m = build_machine()
    m.load(load(build(name), m.ram_size))
    session = Session(m)
    checker = Checker(name)
    requests = [packet for direction, packet in transcript.read(path) if direction == "in"]
    assert requests, "empty transcript"
    for request in requests:
        reply = session.handle(request)
        session.output.clear()               # console output (O packets) says nothing here
        assert reply is not None, request
        checker.check(request, reply)
    assert checker.checked_bytes >= 8 and checker.ran
