"""Emulation of the sensitive instructions a deprivileged guest kernel executes.

At real CPL 3 these raise #GP (or #NP for a return to ring-3 code); the VMM decodes the
instruction with capstone and runs the handler for its mnemonic against the *virtual* CPU. One
table maps mnemonics to handlers; each handler either completes the instruction (the dispatcher
then moves EIP past it unless the handler transferred control) or raises GuestFault/GuestStop.
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING

from capstone import CsInsn
from capstone.x86 import X86_OP_IMM, X86_OP_MEM, X86_OP_REG
from unicorn import x86_const
from unicorn.x86_const import (UC_X86_REG_EAX, UC_X86_REG_EBX, UC_X86_REG_ECX, UC_X86_REG_EDX,
                               UC_X86_REG_ESP, UC_X86_REG_SS)

from .descriptors import Descriptor, SystemType
from .delivery import stack_segment
from .faults import GuestFault, GuestStop, Vector
from .stops import StopReason
from .returns import emulate_iret, emulate_retf
from .vcpu import CR0_PE, CR0_TS, CR4_TSD, EFLAGS_RF, EFLAGS_VM

if TYPE_CHECKING:
    from .cpu_context import CpuContext

# MSRs a guest may use (others give #GP, as on a CPU without them).
MSR_TSC = 0x10
MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP = 0x174, 0x175, 0x176
MSR_MISC_ENABLE = 0x1A0
PLAIN_MSRS = frozenset({MSR_SYSENTER_CS, MSR_SYSENTER_ESP, MSR_SYSENTER_EIP, MSR_MISC_ENABLE})

_UC_REGS: dict[str, int] = {name[len("UC_X86_REG_"):].lower(): value
                            for name, value in vars(x86_const).items()
                            if name.startswith("UC_X86_REG_")}


class Emulation(Enum):
    """What a handler did with a trapped instruction, so the dispatcher knows where the guest
    goes on: it completed the instruction (NEXT: the dispatcher moves EIP past it), transferred
    control itself (JUMPED: the handler set EIP), or found the instruction in a form that is
    not sensitive (NOT_SENSITIVE: nothing was emulated; the fault is the guest's own and is
    reflected). The dispatcher compares members by identity, which costs what a bool did."""

    NEXT = "next"
    JUMPED = "jumped"
    NOT_SENSITIVE = "not-sensitive"


# The members as module constants for the trap path: looking a member up on its Enum class
# costs ~60 ns in Python 3.11, a global ~10 ns (a trap round trip is ~5 us).
NEXT, JUMPED, NOT_SENSITIVE = Emulation.NEXT, Emulation.JUMPED, Emulation.NOT_SENSITIVE


Handler = Callable[["CpuContext", CsInsn], Emulation]


def uc_reg(insn: CsInsn, reg: int) -> int:
    return _UC_REGS[insn.reg_name(reg)]


def effective_address(m: "CpuContext", insn: CsInsn, op) -> int:
    """Linear address of a memory operand (segment base + base + index*scale + disp)."""
    mem = op.mem
    addr = mem.disp
    if mem.base:
        addr += m.regs.read(uc_reg(insn, mem.base))
    if mem.index:
        addr += m.regs.read(uc_reg(insn, mem.index)) * mem.scale
    if mem.segment:
        seg_reg = uc_reg(insn, mem.segment)
    elif mem.base and insn.reg_name(mem.base) in ("esp", "ebp"):
        seg_reg = UC_X86_REG_SS
    else:
        seg_reg = x86_const.UC_X86_REG_DS
    return (m.tables.base_of(m.regs.read(seg_reg)) + addr) & 0xFFFFFFFF


def _source_value(m: "CpuContext", insn: CsInsn, op, size: int) -> int:
    if op.type == X86_OP_REG:
        return m.regs.read(uc_reg(insn, op.reg))
    if op.type == X86_OP_IMM:
        return op.imm & 0xFFFFFFFF
    data = m.read_linear(effective_address(m, insn, op), size)
    return int.from_bytes(data, "little")


def _require_ring0(m: "CpuContext") -> None:
    if m.vcpu.cpl != 0:
        raise GuestFault(Vector.GP, 0)


# -- interrupt flag and halting -----------------------------------------------------------
def _cli(m: "CpuContext", insn: CsInsn) -> Emulation:
    if m.vcpu.cpl > m.vcpu.iopl:
        raise GuestFault(Vector.GP, 0)
    m.set_vif(False, "cli")
    return NEXT


def _sti(m: "CpuContext", insn: CsInsn) -> Emulation:
    if m.vcpu.cpl > m.vcpu.iopl:
        raise GuestFault(Vector.GP, 0)
    if not m.vcpu.vif:
        m.interrupt_shadow()
    m.set_vif(True, "sti")
    return NEXT


def _hlt(m: "CpuContext", insn: CsInsn) -> Emulation:
    _require_ring0(m)
    m.halt()
    return NEXT


# -- control registers ----------------------------------------------------------------------
def _mov(m: "CpuContext", insn: CsInsn) -> Emulation:
    dst, src = insn.operands
    if dst.type == X86_OP_REG and insn.reg_name(dst.reg) in ("ss",):
        selector = _source_value(m, insn, src, 2) & 0xFFFF
        load_ss(m, selector)
        return NEXT
    dst_name = insn.reg_name(dst.reg) if dst.type == X86_OP_REG else ""
    src_name = insn.reg_name(src.reg) if src.type == X86_OP_REG else ""
    if not (dst_name[:2] in ("cr", "dr") or src_name[:2] in ("cr", "dr")):
        return NOT_SENSITIVE
    _require_ring0(m)
    if dst_name.startswith("cr"):
        m.write_cr(int(dst_name[2:]), m.regs.read(_UC_REGS[src_name]))
    elif src_name.startswith("cr"):
        m.regs.write(_UC_REGS[dst_name], m.read_cr(int(src_name[2:])))
    elif dst_name.startswith("dr"):
        m.vcpu.dr[int(dst_name[2:])] = m.regs.read(_UC_REGS[src_name])
    elif src_name.startswith("dr"):
        m.regs.write(_UC_REGS[dst_name], m.vcpu.dr[int(src_name[2:])])
    return NEXT


def _clts(m: "CpuContext", insn: CsInsn) -> Emulation:
    _require_ring0(m)
    m.write_cr(0, m.vcpu.cr0 & ~CR0_TS)
    return NEXT


def _lmsw(m: "CpuContext", insn: CsInsn) -> Emulation:
    _require_ring0(m)
    value = _source_value(m, insn, insn.operands[0], 2)
    # LMSW sets PE (never clears it) and MP, EM, TS.
    m.write_cr(0, (m.vcpu.cr0 & ~0xE) | (value & 0xF) | (m.vcpu.cr0 & CR0_PE))
    return NEXT


def _invlpg(m: "CpuContext", insn: CsInsn) -> Emulation:
    _require_ring0(m)
    m.invlpg(effective_address(m, insn, insn.operands[0]))
    return NEXT


def _nop_cache(m: "CpuContext", insn: CsInsn) -> Emulation:
    _require_ring0(m)
    return NEXT


# -- descriptor tables ----------------------------------------------------------------------
def _table_operand(m: "CpuContext", insn: CsInsn) -> tuple[int, int]:
    op = insn.operands[0]
    if op.type != X86_OP_MEM:
        raise GuestFault(Vector.UD)
    limit, base = struct.unpack("<HI", m.read_linear(effective_address(m, insn, op), 6))
    return base, limit


def _lgdt(m: "CpuContext", insn: CsInsn) -> Emulation:
    _require_ring0(m)
    base, limit = _table_operand(m, insn)
    m.vcpu.gdtr.base, m.vcpu.gdtr.limit = base, limit
    m.tables.load_gdt(base, limit, m.trap_eip)
    m.descriptor_tables_moved()
    return NEXT


def _lidt(m: "CpuContext", insn: CsInsn) -> Emulation:
    _require_ring0(m)
    base, limit = _table_operand(m, insn)
    m.vcpu.idtr.base, m.vcpu.idtr.limit = base, limit
    return NEXT


def _system_descriptor(m: "CpuContext", selector: int, kinds: tuple[SystemType, ...]) -> Descriptor:
    if selector & 4:
        raise GuestFault(Vector.GP, selector & 0xFFFC)
    desc = m.tables.descriptor(selector)
    if desc is None or desc.s or desc.system_type not in kinds or m.tables.refusal(selector):
        raise GuestFault(Vector.GP, selector & 0xFFFC)
    if not desc.present:
        raise GuestFault(Vector.NP, selector & 0xFFFC)
    return desc


def _lldt(m: "CpuContext", insn: CsInsn) -> Emulation:
    _require_ring0(m)
    selector = _source_value(m, insn, insn.operands[0], 2) & 0xFFFF
    if selector & 0xFFFC == 0:
        m.vcpu.ldtr.selector, m.vcpu.ldtr.base, m.vcpu.ldtr.limit = selector, 0, 0
        m.tables.load_ldt(0, 0, m.trap_eip)
        m.descriptor_tables_moved()
        return NEXT
    desc = _system_descriptor(m, selector, (SystemType.LDT,))
    m.vcpu.ldtr.selector, m.vcpu.ldtr.base, m.vcpu.ldtr.limit = selector, desc.base, desc.limit
    m.tables.load_ldt(desc.base, desc.limit, m.trap_eip)
    m.descriptor_tables_moved()
    return NEXT


def _ltr(m: "CpuContext", insn: CsInsn) -> Emulation:
    _require_ring0(m)
    selector = _source_value(m, insn, insn.operands[0], 2) & 0xFFFF
    if selector & 0xFFFC == 0:
        raise GuestFault(Vector.GP, 0)
    desc = _system_descriptor(m, selector, (SystemType.TSS32_AVAILABLE,
                                            SystemType.TSS16_AVAILABLE))
    if desc.system_type is SystemType.TSS16_AVAILABLE:
        raise GuestStop(StopReason.UNSUPPORTED, "16-bit TSS is not supported")
    busy = desc.with_busy(True)
    m.write_linear(m.vcpu.gdtr.base + (selector & ~7), busy.pack())  # LTR marks it busy
    m.tables.write_guest_entry(selector, busy)
    m.vcpu.tr.selector, m.vcpu.tr.base, m.vcpu.tr.limit = selector, desc.base, desc.limit
    return NEXT


def load_ss(m: "CpuContext", selector: int) -> None:
    """MOV/POP/LSS to SS at virtual CPL 0: RPL 0 selectors fault at real CPL 3."""
    stack_segment(m, selector, m.vcpu.cpl, Vector.GP)
    m.regs.write(UC_X86_REG_SS, selector | 3)


def _pop(m: "CpuContext", insn: CsInsn) -> Emulation:
    op = insn.operands[0]
    if op.type != X86_OP_REG or insn.reg_name(op.reg) != "ss":
        return NOT_SENSITIVE
    esp = m.regs.read(UC_X86_REG_ESP)
    base = m.tables.base_of(m.regs.read(UC_X86_REG_SS))
    selector = struct.unpack("<I", m.read_linear(base + esp, 4))[0] & 0xFFFF
    load_ss(m, selector)
    m.regs.write(UC_X86_REG_ESP, (esp + 4) & 0xFFFFFFFF)
    return NEXT


def _lss(m: "CpuContext", insn: CsInsn) -> Emulation:
    dst, src = insn.operands
    offset, selector = struct.unpack("<IH", m.read_linear(effective_address(m, insn, src), 6))
    load_ss(m, selector)
    m.regs.write(uc_reg(insn, dst.reg), offset)
    return NEXT


# -- returns --------------------------------------------------------------------------------
def _iret(m: "CpuContext", insn: CsInsn) -> Emulation:
    if insn.mnemonic != "iretd":
        raise GuestStop(StopReason.UNSUPPORTED, f"{insn.mnemonic} (16-bit IRET) is not supported")
    emulate_iret(m)
    return JUMPED


def _retf(m: "CpuContext", insn: CsInsn) -> Emulation:
    extra = insn.operands[0].imm if insn.operands else 0
    emulate_retf(m, extra, 2 if insn.prefix[2] == 0x66 else 4)
    return JUMPED


# -- model-specific registers and time ------------------------------------------------------
def _rdtsc(m: "CpuContext", insn: CsInsn) -> Emulation:
    if m.vcpu.cr4 & CR4_TSD and m.vcpu.cpl != 0:
        raise GuestFault(Vector.GP, 0)
    tsc = m.read_tsc()
    m.regs.write(UC_X86_REG_EAX, tsc & 0xFFFFFFFF)
    m.regs.write(UC_X86_REG_EDX, tsc >> 32)
    return NEXT


def _rdmsr(m: "CpuContext", insn: CsInsn) -> Emulation:
    _require_ring0(m)
    index = m.regs.read(UC_X86_REG_ECX)
    if index == MSR_TSC:
        value = m.read_tsc()
    elif index in PLAIN_MSRS:
        value = m.vcpu.msrs.get(index, 0)
    else:
        raise GuestFault(Vector.GP, 0)
    m.regs.write(UC_X86_REG_EAX, value & 0xFFFFFFFF)
    m.regs.write(UC_X86_REG_EDX, value >> 32)
    return NEXT


def _wrmsr(m: "CpuContext", insn: CsInsn) -> Emulation:
    _require_ring0(m)
    index = m.regs.read(UC_X86_REG_ECX)
    value = m.regs.read(UC_X86_REG_EAX) | m.regs.read(UC_X86_REG_EDX) << 32
    if index not in PLAIN_MSRS:
        raise GuestFault(Vector.GP, 0)
    m.vcpu.msrs[index] = value
    return NEXT


# -- fast system calls ---------------------------------------------------------------------
def sysenter(m: "CpuContext") -> None:
    """SYSENTER (SDM vol. 2B): to virtual ring 0 at SYSENTER_CS:SYSENTER_EIP, stack
    SYSENTER_CS+8:SYSENTER_ESP, IF cleared. Unicorn 2.1.4 does nothing for it but move EIP
    past it, so the VMM does it all (the vDSO's __kernel_vsyscall uses it)."""
    cs = m.vcpu.msrs.get(MSR_SYSENTER_CS, 0) & 0xFFFC
    if cs == 0:
        raise GuestFault(Vector.GP, 0)
    m.set_vif(False, "sysenter")
    m.set_cpl(0)
    m.regs.write(x86_const.UC_X86_REG_CS, cs | 3)
    m.regs.write(UC_X86_REG_SS, (cs + 8) | 3)
    m.regs.write(UC_X86_REG_ESP, m.vcpu.msrs.get(MSR_SYSENTER_ESP, 0))
    m.regs.write(x86_const.UC_X86_REG_EIP, m.vcpu.msrs.get(MSR_SYSENTER_EIP, 0))
    flags = m.regs.read(x86_const.UC_X86_REG_EFLAGS)
    m.regs.write(x86_const.UC_X86_REG_EFLAGS, flags & ~(EFLAGS_VM | EFLAGS_RF))


def _sysexit(m: "CpuContext", insn: CsInsn) -> Emulation:
    """SYSEXIT: to virtual ring 3 at SYSENTER_CS+16:EDX, stack SYSENTER_CS+24:ECX."""
    _require_ring0(m)
    cs = m.vcpu.msrs.get(MSR_SYSENTER_CS, 0) & 0xFFFC
    if cs == 0:
        raise GuestFault(Vector.GP, 0)
    m.set_cpl(3)
    m.regs.write(x86_const.UC_X86_REG_CS, (cs + 16) | 3)
    m.regs.write(UC_X86_REG_SS, (cs + 24) | 3)
    m.regs.write(UC_X86_REG_ESP, m.regs.read(UC_X86_REG_ECX))
    m.regs.write(x86_const.UC_X86_REG_EIP, m.regs.read(UC_X86_REG_EDX))
    m.returned_to_user()
    return JUMPED


HANDLERS: dict[str, Handler] = {
    "cli": _cli, "sti": _sti, "hlt": _hlt, "mov": _mov, "clts": _clts, "lmsw": _lmsw,
    "invlpg": _invlpg, "wbinvd": _nop_cache, "invd": _nop_cache,
    "lgdt": _lgdt, "lidt": _lidt, "lldt": _lldt, "ltr": _ltr, "pop": _pop, "lss": _lss,
    "iretd": _iret, "iret": _iret, "retf": _retf, "rdtsc": _rdtsc, "rdmsr": _rdmsr,
    "wrmsr": _wrmsr, "sysexit": _sysexit,
}

# CPUID: a fixed, documented model (docs/events.md lists it). Family 6 model 3, FPU, TSC,
# MSR, CX8, SEP, CMOV, PSE; vendor "dbgvmVirtCPU".
CPUID_VENDOR = b"dbgvmVirtCPU"
CPUID_LEAVES: dict[int, tuple[int, int, int, int]] = {
    0: (1, *struct.unpack("<III", CPUID_VENDOR[0:4] + CPUID_VENDOR[8:12] + CPUID_VENDOR[4:8])),
    1: (0x00000630, 0, 0, (1 << 0) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 11) |
        (1 << 15)),
}


def cpuid(m: "CpuContext") -> None:
    leaf = m.regs.read(UC_X86_REG_EAX)
    eax, ebx, ecx, edx = CPUID_LEAVES.get(leaf, (0, 0, 0, 0))
    for reg, value in ((UC_X86_REG_EAX, eax), (UC_X86_REG_EBX, ebx), (UC_X86_REG_ECX, ecx),
                       (UC_X86_REG_EDX, edx)):
        m.regs.write(reg, value)

