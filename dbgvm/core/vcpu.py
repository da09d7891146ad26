"""The virtual CPU state the guest believes it has, beside the real (ring-3) Unicorn state."""
from __future__ import annotations

from dataclasses import astuple, dataclass, field

EFLAGS_CF, EFLAGS_TF, EFLAGS_IF, EFLAGS_DF = 1 << 0, 1 << 8, 1 << 9, 1 << 10
EFLAGS_IOPL = 3 << 12
EFLAGS_NT, EFLAGS_RF, EFLAGS_VM, EFLAGS_AC = 1 << 14, 1 << 16, 1 << 17, 1 << 18
EFLAGS_FIXED = 1 << 1
# Bits a real-mode-free 32-bit guest may change through IRET at CPL 0 (IF and IOPL are virtual).
EFLAGS_RESTORABLE = 0x00254DD5 & ~(EFLAGS_IF | EFLAGS_IOPL | EFLAGS_VM)

CR0_PE, CR0_MP, CR0_EM, CR0_TS, CR0_ET = 1, 2, 4, 8, 0x10
CR0_NE, CR0_WP, CR0_AM, CR0_NW, CR0_CD, CR0_PG = 0x20, 1 << 16, 1 << 18, 1 << 29, 1 << 30, 1 << 31
CR4_TSD, CR4_PSE, CR4_PAE, CR4_PGE = 1 << 2, 1 << 4, 1 << 5, 1 << 7


@dataclass
class TableRegister:
    """GDTR/IDTR (``selector`` unused) or LDTR/TR as the guest loaded them."""

    base: int = 0
    limit: int = 0
    selector: int = 0


TableValue = tuple[int, int, int]          # (base, limit, selector) of a TableRegister


@dataclass(frozen=True)
class VirtualCpuState:
    """A saved VirtualCpu: one field per attribute, every one immutable."""

    cpl: int
    vif: bool
    iopl: int
    cr0: int
    cr2: int
    cr3: int
    cr4: int
    gdtr: TableValue
    idtr: TableValue
    ldtr: TableValue
    tr: TableValue
    msrs: tuple[tuple[int, int], ...]
    dr: tuple[int, ...]


@dataclass
class VirtualCpu:
    cpl: int = 0
    vif: bool = False
    iopl: int = 0
    cr0: int = CR0_PE | CR0_ET
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    gdtr: TableRegister = field(default_factory=TableRegister)
    idtr: TableRegister = field(default_factory=lambda: TableRegister(0, 0x3FF))
    ldtr: TableRegister = field(default_factory=TableRegister)
    tr: TableRegister = field(default_factory=TableRegister)
    msrs: dict[int, int] = field(default_factory=dict)
    dr: list[int] = field(default_factory=lambda: [0] * 8)  # kept, never armed

    def save(self) -> VirtualCpuState:
        return VirtualCpuState(self.cpl, self.vif, self.iopl, self.cr0, self.cr2, self.cr3,
                               self.cr4, astuple(self.gdtr), astuple(self.idtr),
                               astuple(self.ldtr), astuple(self.tr),
                               tuple(sorted(self.msrs.items())), tuple(self.dr))

    def restore(self, state: VirtualCpuState) -> None:
        """Become ``state`` in place (the emulation code reads ``vcpu`` at each use)."""
        self.cpl, self.vif, self.iopl = state.cpl, state.vif, state.iopl
        self.cr0, self.cr2, self.cr3, self.cr4 = state.cr0, state.cr2, state.cr3, state.cr4
        self.gdtr, self.idtr = TableRegister(*state.gdtr), TableRegister(*state.idtr)
        self.ldtr, self.tr = TableRegister(*state.ldtr), TableRegister(*state.tr)
        self.msrs = dict(state.msrs)
        self.dr = list(state.dr)

    def guest_eflags(self, real: int) -> int:
        """EFLAGS as the guest sees them: the real flags with the virtual IF and IOPL."""
        value = real & ~(EFLAGS_IF | EFLAGS_IOPL)
        return value | (EFLAGS_IF if self.vif else 0) | (self.iopl << 12)


@dataclass(frozen=True)
class GuestRegisters:
    """The guest's register file as the guest sees it (virtual CS/SS RPL, IF, IOPL)."""

    eax: int
    ecx: int
    edx: int
    ebx: int
    esp: int
    ebp: int
    esi: int
    edi: int
    eip: int
    eflags: int
    cs: int
    ss: int
    ds: int
    es: int
    fs: int
    gs: int
    cr0: int
    cr2: int
    cr3: int
    cr4: int
    cpl: int
    vif: bool
