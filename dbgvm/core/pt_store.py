"""Carrying out a guest store to one of its own page tables in the VMM.

Every guest page a shadow was built from is write-protected (shadow_mmu.py), so each store
Linux makes to its page tables faults. Letting the instruction write natively costs a
one-instruction quantum and a zap of every shadow table built from the page. The common
forms, ``mov dword ptr [mem], reg32/imm32`` and ``xchg dword ptr [mem], reg32`` (neither
touches EFLAGS), are instead emulated here in the #PF hook: the store is written into guest
RAM, only the shadow entries built from the entry written are dropped (ShadowMmu.guest_store),
and EIP moves past the instruction, which counts once (the #PF hook runs after Unicorn counted
it). Anything else (other instructions, a store that is not the access that faulted, 16-bit
addressing, a debugger watchpoint in place: its Unicorn hook would not see a store made here)
returns None and takes the native path.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from capstone import CsInsn
from capstone.x86 import X86_OP_IMM, X86_OP_MEM, X86_OP_REG
from unicorn import x86_const

if TYPE_CHECKING:
    from .decoder import Decoded

_GPR32 = {name: getattr(x86_const, f"UC_X86_REG_{name.upper()}")
          for name in ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi")}
_SEGS = {name: getattr(x86_const, f"UC_X86_REG_{name.upper()}")
         for name in ("es", "cs", "ss", "ds", "fs", "gs")}
_ADDRESS_SIZE = 0x67


class StorePlan(NamedTuple):
    """How to carry out one store: linear address = base of ``seg`` + ``base`` +
    ``index`` * ``scale`` + ``disp``; the value is the register ``reg`` or ``imm``;
    ``xchg`` also loads the old memory value into ``reg``."""

    seg: int
    base: int | None
    index: int | None
    scale: int
    disp: int
    reg: int | None
    imm: int
    xchg: bool
    size: int                   # the instruction's length


def plan_store(insn: CsInsn) -> StorePlan | None:
    """The plan for a flag-free 4-byte store the VMM carries out, or None."""
    mnemonic = insn.mnemonic
    if mnemonic not in ("mov", "xchg"):
        return None
    ops = insn.operands
    if len(ops) != 2 or _ADDRESS_SIZE in insn.prefix:
        return None
    mem, src = ops
    if mnemonic == "xchg" and mem.type == X86_OP_REG:
        mem, src = src, mem
    if mem.type != X86_OP_MEM or mem.size != 4:
        return None
    reg, imm = None, 0
    if src.type == X86_OP_REG:
        reg = _GPR32.get(insn.reg_name(src.reg))
        if reg is None:
            return None
    elif src.type == X86_OP_IMM and mnemonic == "mov":
        imm = src.imm & 0xFFFFFFFF
    else:
        return None
    m = mem.mem
    base = _GPR32.get(insn.reg_name(m.base)) if m.base else None
    index = _GPR32.get(insn.reg_name(m.index)) if m.index else None
    if (m.base and base is None) or (m.index and index is None):
        return None
    if m.segment:
        seg = _SEGS.get(insn.reg_name(m.segment))
        if seg is None:
            return None
    elif m.base and insn.reg_name(m.base) in ("esp", "ebp"):
        seg = x86_const.UC_X86_REG_SS
    else:
        seg = x86_const.UC_X86_REG_DS
    return StorePlan(seg, base, index, m.scale if index is not None else 0, m.disp, reg, imm,
                     mnemonic == "xchg", insn.size)


class StorePlans:
    """Plans cached by instruction bytes (32-bit code has no EIP-relative operands)."""

    def __init__(self) -> None:
        self._plans: dict[bytes, StorePlan | None] = {}

    def plan(self, decoded: "Decoded") -> StorePlan | None:
        code = decoded.code
        try:
            return self._plans[code]
        except KeyError:
            plan = self._plans[code] = plan_store(decoded.insn)
            return plan
