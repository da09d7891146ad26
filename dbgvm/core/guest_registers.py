"""Every register a debugger can show, by name, as the *guest* sees it.

The real Unicorn state differs from what the guest believes in a few places (CS/SS carry RPL 3,
EFLAGS.IF/IOPL are virtual, control and descriptor-table registers are the VMM's); this
module is the one place that maps names to the guest's view, for reading and for writing.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from unicorn import x86_const as X

from .faults import GuestFault, GuestStop
from .vcpu import EFLAGS_FIXED, EFLAGS_IF, EFLAGS_IOPL

if TYPE_CHECKING:
    from .cpu_context import CpuContext

_GPR = {name: getattr(X, f"UC_X86_REG_{name.upper()}")
        for name in ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip")}
_DATA_SEGS = {name: getattr(X, f"UC_X86_REG_{name.upper()}") for name in ("ds", "es", "fs", "gs")}
_FPU = {"fctrl": X.UC_X86_REG_FPCW, "fstat": X.UC_X86_REG_FPSW, "ftag": X.UC_X86_REG_FPTAG,
        "fiseg": X.UC_X86_REG_FCS, "fioff": X.UC_X86_REG_FIP, "foseg": X.UC_X86_REG_FDS,
        "fooff": X.UC_X86_REG_FDP, "fop": X.UC_X86_REG_FOP, "mxcsr": X.UC_X86_REG_MXCSR}
_ST = {f"st{i}": getattr(X, f"UC_X86_REG_FP{i}") for i in range(8)}
_XMM = {f"xmm{i}": getattr(X, f"UC_X86_REG_XMM{i}") for i in range(8)}


class RegisterError(ValueError):
    """The register does not exist or cannot take that value (the message says why)."""


def _st_read(m: "CpuContext", reg: int) -> int:
    mantissa, exponent = m.uc.reg_read(reg)
    return (exponent & 0xFFFF) << 64 | mantissa


def _st_write(m: "CpuContext", reg: int, value: int) -> None:
    m.uc.reg_write(reg, (value & (1 << 64) - 1, (value >> 64) & 0xFFFF))


def _table_reg(m: "CpuContext", name: str) -> int:
    table, part = name.split("_")
    reg = getattr(m.vcpu, table)
    return reg.base if part == "base" else reg.limit


READERS: dict[str, Callable[["CpuContext"], int]] = {
    **{name: (lambda m, r=reg: m.regs.read(r)) for name, reg in _GPR.items()},
    "eflags": lambda m: m.vcpu.guest_eflags(m.regs.read(X.UC_X86_REG_EFLAGS)),
    "cs": lambda m: (m.regs.read(X.UC_X86_REG_CS) & ~3) | m.vcpu.cpl,
    "ss": lambda m: (m.regs.read(X.UC_X86_REG_SS) & ~3) | m.vcpu.cpl,
    **{name: (lambda m, r=reg: m.regs.read(r)) for name, reg in _DATA_SEGS.items()},
    **{name: (lambda m, r=reg: _st_read(m, r)) for name, reg in _ST.items()},
    **{name: (lambda m, r=reg: m.uc.reg_read(r)) for name, reg in _FPU.items()},
    **{name: (lambda m, r=reg: m.uc.reg_read(r)) for name, reg in _XMM.items()},
    "fs_base": lambda m: m.tables.base_of(m.regs.read(X.UC_X86_REG_FS)),
    "gs_base": lambda m: m.tables.base_of(m.regs.read(X.UC_X86_REG_GS)),
    **{f"cr{i}": (lambda m, i=i: m.read_cr(i)) for i in (0, 2, 3, 4)},
    **{f"{t}_{p}": (lambda m, n=f"{t}_{p}": _table_reg(m, n))
       for t in ("gdtr", "idtr") for p in ("base", "limit")},
    "tr": lambda m: m.vcpu.tr.selector,
    "ldtr": lambda m: m.vcpu.ldtr.selector,
    "cpl": lambda m: m.vcpu.cpl,
    "vif": lambda m: int(m.vcpu.vif),
}


def _write_cs_ss(m: "CpuContext", name: str, selector: int) -> None:
    """Load another code/stack segment at the same virtual privilege level."""
    if selector == read_register(m, name):
        return
    if selector & 3 != m.vcpu.cpl:
        raise RegisterError(f"{name}={selector:#x} would change the privilege level "
                            f"(virtual CPL {m.vcpu.cpl}): not supported")
    desc = m.tables.descriptor(selector)
    ok = desc is not None and desc.present and not m.tables.refusal(selector) and (
        desc.is_code if name == "cs" else desc.writable and desc.dpl == m.vcpu.cpl)
    if not ok:
        raise RegisterError(f"{name}={selector:#x} is not a usable "
                            f"{'code' if name == 'cs' else 'stack'} segment")
    m.regs.write(X.UC_X86_REG_CS if name == "cs" else X.UC_X86_REG_SS, selector | 3)


def read_register(m: "CpuContext", name: str) -> int:
    try:
        return READERS[name](m)
    except KeyError:
        raise RegisterError(f"no register named {name!r}") from None


def write_register(m: "CpuContext", name: str, value: int) -> None:
    """Change a register as the guest sees it; RegisterError when that cannot be done."""
    try:
        if name in _GPR:
            m.regs.write(_GPR[name], value & 0xFFFFFFFF)
        elif name == "eflags":
            m.vcpu.iopl = (value & EFLAGS_IOPL) >> 12
            m.set_vif(bool(value & EFLAGS_IF), "debugger")
            m.regs.write(X.UC_X86_REG_EFLAGS, (value & ~(EFLAGS_IF | EFLAGS_IOPL)) | EFLAGS_FIXED)
            m.mirror_vif()
        elif name in ("cs", "ss"):
            _write_cs_ss(m, name, value & 0xFFFF)
        elif name in _DATA_SEGS:
            m.regs.write(_DATA_SEGS[name], value & 0xFFFF)
        elif name in _ST:
            _st_write(m, _ST[name], value)
        elif name in _FPU or name in _XMM:
            m.uc.reg_write({**_FPU, **_XMM}[name], value)
        elif name in ("cr0", "cr2", "cr3", "cr4"):
            m.write_cr(int(name[2]), value & 0xFFFFFFFF)
        elif name == "vif":
            m.set_vif(bool(value), "debugger")
        elif name in READERS:
            raise RegisterError(f"{name} is read-only here")
        else:
            raise RegisterError(f"no register named {name!r}")
    except (GuestFault, GuestStop) as exc:
        raise RegisterError(f"cannot set {name} to {value:#x}: {exc}") from None
    except ValueError as exc:
        if isinstance(exc, RegisterError):
            raise
        raise RegisterError(f"cannot set {name} to {value:#x}: {exc}") from None
