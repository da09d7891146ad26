"""``gdt``, ``idt`` and ``tss``: the guest's descriptor tables as the guest wrote them.

They are read from guest memory through the debugger's side-effect-free accessor (no A/D bits
set, no re-validation triggered); the monitor's verdicts come from its own snapshot.
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..core.debug import DebugError
from ..core.descriptors import Descriptor, SystemType
from .symbols import SymbolTable

if TYPE_CHECKING:
    from ..core.machine import Machine

TSS_FIELDS = ("link", "esp0", "ss0", "esp1", "ss1", "esp2", "ss2", "cr3", "eip", "eflags",
              "eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "es", "cs", "ss", "ds",
              "fs", "gs", "ldt")
TSS_SIZE = 104
_SELECTORS = frozenset({"link", "ss0", "ss1", "ss2", "es", "cs", "ss", "ds", "fs", "gs", "ldt"})


def describe(desc: Descriptor, symbols: SymbolTable | None = None) -> str:
    """One descriptor in words."""
    present = "present" if desc.present else "not-present"
    if desc.s:
        if desc.is_code:
            extra = [w for w, on in (("conforming", desc.conforming),
                                     ("readable", desc.readable)) if on]
            kind = "code"
        else:
            extra = [w for w, on in (("writable", desc.writable),
                                     ("expand-down", desc.expand_down)) if on]
            kind = "data"
        bits = "32-bit" if desc.big else "16-bit"
        return (f"{kind:<5} base {desc.base:#010x} limit {desc.limit:#010x} dpl {desc.dpl} "
                f"{present} {bits} {' '.join(extra)}").rstrip()
    kind = desc.system_type
    name = kind.name.lower() if kind is not None else f"reserved-type-{desc.type}"
    if kind in (SystemType.CALL_GATE32, SystemType.CALL_GATE16, SystemType.INTERRUPT_GATE32,
                SystemType.INTERRUPT_GATE16, SystemType.TRAP_GATE32, SystemType.TRAP_GATE16):
        target = f"{desc.gate_selector:#06x}:{desc.gate_offset:#010x}"
        label = symbols.label(desc.gate_offset) if symbols else ""
        return f"{name} -> {target}{label} dpl {desc.dpl} {present}"
    if kind is SystemType.TASK_GATE:
        return f"{name} -> tss {desc.gate_selector:#06x} dpl {desc.dpl} {present}"
    return f"{name} base {desc.base:#010x} limit {desc.limit:#x} dpl {desc.dpl} {present}"


def _entries(m: "Machine", base: int, limit: int) -> list[Descriptor] | str:
    try:
        data = m.debug.read_virtual(base, limit + 1)
    except DebugError as exc:
        return f"cannot read the table at {base:#010x}: {exc}"
    data = data[:len(data) // 8 * 8]
    return [Descriptor.from_bytes(data[i:i + 8]) for i in range(0, len(data), 8)]


def gdt_report(m: "Machine") -> str:
    gdtr = m.vcpu.gdtr
    snapshot = m.tables.gdt
    if gdtr.limit == 0 and gdtr.base == 0:
        head = "no GDT loaded yet: the boot selectors (as QEMU's Multiboot loader leaves them)"
        entries: list[Descriptor] | str = list(snapshot.entries)
    else:
        head = f"gdt base {gdtr.base:#010x} limit {gdtr.limit:#x}"
        entries = _entries(m, gdtr.base, gdtr.limit)
    if isinstance(entries, str):
        return f"{head}\n{entries}\n"
    lines = [head]
    for index, desc in enumerate(entries):
        if desc.raw == 0:
            continue
        line = f"{index * 8:#06x} [{index:4}] {desc.raw:016x}  {describe(desc)}"
        refused = snapshot.refused.get(index)
        if refused:
            line += f"  REFUSED: {refused}"
        lines.append(line)
    if len(lines) == 1:
        lines.append("(every entry is null)")
    return "\n".join(lines) + "\n"


def idt_report(m: "Machine", symbols: SymbolTable) -> str:
    idtr = m.vcpu.idtr
    entries = _entries(m, idtr.base, min(idtr.limit, 256 * 8 - 1))
    head = f"idt base {idtr.base:#010x} limit {idtr.limit:#x}"
    if isinstance(entries, str):
        return f"{head}\n{entries}\n"
    lines = [head]
    for vector, desc in enumerate(entries):
        if desc.present:
            lines.append(f"{vector:#04x} {describe(desc, symbols)}")
    if len(lines) == 1:
        lines.append("(no present gate)")
    return "\n".join(lines) + "\n"


def tss_report(m: "Machine") -> str:
    selector = m.vcpu.tr.selector
    if selector & ~3 == 0:
        return "no TSS loaded (TR is the null selector)\n"
    gdtr = m.vcpu.gdtr
    index = selector >> 3
    try:
        desc = Descriptor.from_bytes(m.debug.read_virtual(gdtr.base + index * 8, 8))
        data = m.debug.read_virtual(desc.base, TSS_SIZE)
    except DebugError as exc:
        return f"tr {selector:#06x}: cannot read the TSS: {exc}\n"
    values = struct.unpack("<26I", data)
    lines = [f"tr {selector:#06x}: {describe(desc)}"]
    row = []
    for name, value in zip(TSS_FIELDS, values):
        small = name in _SELECTORS
        row.append(f"{name} {value & 0xFFFF:#06x}" if small else f"{name} {value:#010x}")
        if len(row) == 5:
            lines.append("  ".join(row))
            row = []
    row.append(f"iomap {values[25] >> 16:#06x}")
    lines.append("  ".join(row))
    return "\n".join(lines) + "\n"
