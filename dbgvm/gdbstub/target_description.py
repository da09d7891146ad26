"""The registers gdb sees, in order, and the target.xml that describes them.

``org.gnu.gdb.i386.core`` and ``.sse`` follow gdb's own feature files (names, sizes, types,
each type defined in the feature that uses it); the ``org.dbgvm.virtual`` feature carries
fs_base/gs_base and shows the deprivileged guest's virtual CPU: control registers,
descriptor-table registers, the virtual CPL and the virtual IF.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GdbRegister:
    name: str
    bits: int
    type: str
    group: str | None = None


# As QEMU describes EFLAGS (high bits first, IOPL as a two-bit field), so that gdb prints the
# flags the same way against either stub.
_EFLAGS_FIELDS = [("", 22, 31), ("ID", 21, 21), ("VIP", 20, 20), ("VIF", 19, 19),
                  ("AC", 18, 18), ("VM", 17, 17), ("RF", 16, 16), ("", 15, 15), ("NT", 14, 14),
                  ("IOPL", 12, 13), ("OF", 11, 11), ("DF", 10, 10), ("IF", 9, 9), ("TF", 8, 8),
                  ("SF", 7, 7), ("ZF", 6, 6), ("", 5, 5), ("AF", 4, 4), ("", 3, 3),
                  ("PF", 2, 2), ("", 1, 1), ("CF", 0, 0)]
_MXCSR_FIELDS = [("IE", 0), ("DE", 1), ("ZE", 2), ("OE", 3), ("UE", 4), ("PE", 5), ("DAZ", 6),
                 ("IM", 7), ("DM", 8), ("ZM", 9), ("OM", 10), ("UM", 11), ("PM", 12),
                 ("FZ", 15)]

FEATURES: list[tuple[str, str, list[GdbRegister]]] = [
    ("org.gnu.gdb.i386.core",
     "\n".join(
         ['  <flags id="i386_eflags" size="4">'] +
         [f'    <field name="{n}" start="{b}" end="{e}"/>' for n, b, e in _EFLAGS_FIELDS] +
         ["  </flags>"]),
     [GdbRegister(n, 32, "int32") for n in ("eax", "ecx", "edx", "ebx")] +
     [GdbRegister("esp", 32, "data_ptr"), GdbRegister("ebp", 32, "data_ptr")] +
     [GdbRegister(n, 32, "int32") for n in ("esi", "edi")] +
     [GdbRegister("eip", 32, "code_ptr"), GdbRegister("eflags", 32, "i386_eflags")] +
     [GdbRegister(n, 32, "int32") for n in ("cs", "ss", "ds", "es", "fs", "gs")] +
     [GdbRegister(f"st{i}", 80, "i387_ext") for i in range(8)] +
     [GdbRegister(n, 32, "int", "float") for n in ("fctrl", "fstat", "ftag", "fiseg", "fioff",
                                                    "foseg", "fooff", "fop")]),
    ("org.gnu.gdb.i386.sse",
     "\n".join(
         ['  <vector id="v4f" type="ieee_single" count="4"/>',
          '  <vector id="v2d" type="ieee_double" count="2"/>',
          '  <vector id="v16i8" type="int8" count="16"/>',
          '  <vector id="v8i16" type="int16" count="8"/>',
          '  <vector id="v4i32" type="int32" count="4"/>',
          '  <vector id="v2i64" type="int64" count="2"/>',
          '  <union id="vec128">',
          '    <field name="v4_float" type="v4f"/>', '    <field name="v2_double" type="v2d"/>',
          '    <field name="v16_int8" type="v16i8"/>', '    <field name="v8_int16" type="v8i16"/>',
          '    <field name="v4_int32" type="v4i32"/>', '    <field name="v2_int64" type="v2i64"/>',
          '    <field name="uint128" type="uint128"/>',
          '  </union>',
          '  <flags id="i386_mxcsr" size="4">'] +
         [f'    <field name="{n}" start="{b}" end="{b}"/>' for n, b in _MXCSR_FIELDS] +
         ["  </flags>"]),
     [GdbRegister(f"xmm{i}", 128, "vec128") for i in range(8)] +
     [GdbRegister("mxcsr", 32, "i386_mxcsr", "vector")]),
    # gdb 13 asserts (tdesc_use_registers: arch_regs.size () <= num_regs) when a 32-bit
    # description has org.gnu.gdb.i386.segments, so fs_base/gs_base live in our feature.
    ("org.dbgvm.virtual", "",
     [GdbRegister("fs_base", 32, "int"), GdbRegister("gs_base", 32, "int")] +
     [GdbRegister(n, 32, "int", "system") for n in (
         "cr0", "cr2", "cr3", "cr4", "gdtr_base", "gdtr_limit", "idtr_base", "idtr_limit",
         "tr", "ldtr", "cpl", "vif")]),
]

REGISTERS: list[GdbRegister] = [reg for _, _, regs in FEATURES for reg in regs]


def target_xml() -> str:
    parts = ['<?xml version="1.0"?>', '<!DOCTYPE target SYSTEM "gdb-target.dtd">', "<target>",
             "  <architecture>i386</architecture>"]
    for name, types, regs in FEATURES:
        parts.append(f'  <feature name="{name}">')
        if types:
            parts.append(types)
        for reg in regs:
            group = f' group="{reg.group}"' if reg.group else ""
            parts.append(f'    <reg name="{reg.name}" bitsize="{reg.bits}" type="{reg.type}"'
                         f'{group}/>')
        parts.append("  </feature>")
    parts.append("</target>")
    return "\n".join(parts) + "\n"
