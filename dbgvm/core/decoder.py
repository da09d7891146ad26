"""Decoding guest instructions as the guest sees its memory (capstone), for the trap path.

A trapped instruction is decoded through the guest's segments and paging, then cached by
linear address; a cached decoding is checked against the bytes in memory before it is used,
so that a guest rewriting its code is decoded afresh.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from capstone import CS_ARCH_X86, CS_MODE_32, Cs, CsInsn
from capstone.x86 import X86_OP_MEM
from unicorn.x86_const import UC_X86_REG_CS

from . import privileged
from .descriptors import VMM_HOLE
from .faults import GuestFault, GuestStop, Vector

if TYPE_CHECKING:
    from .cpu_context import CpuContext

_STACK_MNEMONICS = frozenset({"push", "pop", "pushal", "popal", "pushfd", "popfd", "call",
                              "ret", "retf", "enter", "leave", "iretd", "int", "int3", "into"})


class Decoded:
    """A decoded instruction and what the trap path needs of it (Decoder.decoded)."""

    __slots__ = ("code", "insn", "mnemonic", "size", "handler")

    def __init__(self, code: bytes, insn: CsInsn, mnemonic: str, size: int,
                 handler: privileged.Handler | None) -> None:
        self.code = code
        self.insn = insn
        self.mnemonic = mnemonic
        self.size = size
        self.handler = handler


class Decoder:
    def __init__(self, cpu: "CpuContext") -> None:
        self._cpu = cpu
        # parts a snapshot's restore keeps in place (the vcpu it replaces: read through cpu)
        self._tables, self._regs, self._mmu, self._ram = cpu.tables, cpu.regs, cpu.mmu, cpu.ram
        self._cs = Cs(CS_ARCH_X86, CS_MODE_32)
        self._cs.detail = True
        self._cache: dict[int, Decoded] = {}

    def clear(self) -> None:
        """Forget every decoding (after guest memory changed wholesale: a snapshot restore)."""
        self._cache.clear()

    def disassemble_one(self, code: bytes, address: int) -> CsInsn | None:
        return next(self._cs.disasm(code, address, 1), None)

    def decode(self, eip: int) -> CsInsn:
        """The instruction at CS:EIP, as the guest sees its memory now."""
        return self.decoded(eip).insn

    def decoded(self, eip: int) -> Decoded:
        """decode(), with what the trap path needs of the instruction (capstone's properties
        cost ~0.5 us a call), cached by linear address and checked against memory."""
        linear = self._tables.base_of(self._regs.read(UC_X86_REG_CS)) + eip
        cached = self._cache.get(linear)
        if cached is not None:
            code = cached.code
            # The instruction trapped, so the shadow maps its page: compare the bytes there
            # (a Python walk of the guest's tables was 40% of a trap's cost).
            entry = self._mmu.shadow_entry(linear, self._cpu.vcpu.cpl == 3)
            if entry is not None and entry & 1 and (linear & 0xFFF) + len(code) <= 0x1000:
                paddr = (entry & ~0xFFF) | (linear & 0xFFF)
                if self._ram[paddr:paddr + len(code)] == code:
                    return cached
            elif self._cpu.read_linear(linear, len(code)) == code:
                return cached
        code = self._read_code(linear)
        insn = next(self._cs.disasm(code, eip, 1), None)
        if insn is None:
            raise GuestFault(Vector.UD)
        decoded = Decoded(code[:insn.size], insn, insn.mnemonic, insn.size,
                          privileged.HANDLERS.get(insn.mnemonic))
        self._cache[linear] = decoded
        return decoded

    def _read_code(self, linear: int) -> bytes:
        """Up to 15 bytes of code at ``linear`` (the longest x86 instruction), through the
        guest's paging: the first page must be readable (or the fetch faults), the bytes on a
        following page only when it is mapped (an instruction may end just before it)."""
        read_linear = self._cpu.read_linear
        size = min(15, VMM_HOLE - linear)
        first = min(size, 4096 - (linear & 0xFFF))
        code = read_linear(linear, first)
        if first < size:
            try:
                code += read_linear(linear + first, size - first)
            except (GuestFault, GuestStop):
                pass
        return code

    def describe(self, eip: int) -> str:
        """The instruction at ``eip`` as text, or "(unreadable)"."""
        try:
            insn = self.decode(eip)
            return f"{insn.mnemonic} {insn.op_str}".strip()
        except (GuestFault, GuestStop):
            return "(unreadable)"

    def stack_access(self, eip: int) -> bool:
        """Does the instruction at ``eip`` reach memory through SS (an implicit stack access,
        an SS override, or a base of ESP/EBP)? Its segment-limit faults are #SS, not #GP."""
        try:
            insn = self.decode(eip)
        except (GuestFault, GuestStop):
            return False
        if insn.mnemonic.split()[0] in _STACK_MNEMONICS:
            return True
        for op in insn.operands:
            if op.type == X86_OP_MEM:
                seg = insn.reg_name(op.mem.segment) if op.mem.segment else None
                base = insn.reg_name(op.mem.base) if op.mem.base else None
                if seg == "ss" or (seg is None and base in ("esp", "ebp")):
                    return True
        return False

    def one_byte_int(self, eip: int) -> bool:
        """Was the software interrupt that returns to ``eip + 1`` INT3 or INTO (one byte),
        rather than INT n (two)? Read through the guest's paging: EIP is linear."""
        cpu = self._cpu
        linear = cpu.tables.base_of(cpu.regs.read(UC_X86_REG_CS)) + eip
        try:
            return cpu.read_linear(linear & 0xFFFFFFFF, 1) in (b"\xcc", b"\xce")
        except (GuestFault, GuestStop):
            return False
