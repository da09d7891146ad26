"""``regs`` (``info registers``) and ``set``: the registers as the guest sees them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...core.guest_registers import RegisterError
from ..arguments import REGISTER_NAMES
from ..errors import Problem, fail
from ..expr import Expr
from .base import Command, CommandModule, keywords

if TYPE_CHECKING:
    from .interpreter import CommandInterpreter

_FLAGS = ((0, "CF"), (2, "PF"), (4, "AF"), (6, "ZF"), (7, "SF"), (8, "TF"), (9, "IF"),
          (10, "DF"), (11, "OF"))


@dataclass(frozen=True)
class Regs(Command):
    names = ("regs", "info registers")
    usage = "regs"
    help = "The guest's registers as the guest sees them (virtual CPL, IF, control registers)."


@dataclass(frozen=True)
class SetRegister(Command):
    register: str
    value: Expr
    register_column: int = 0
    names = ("set",)
    usage = "set REG = EXPR"
    help = "Set a register ('set eax = 1', 'set $vif = 0', 'set eip = main')."
    gdb_instead = "'set $REG = VALUE'"


def regs(m: CommandInterpreter, command: Regs) -> str:
    r = m.machine.registers()
    flags = " ".join(name for bit, name in _FLAGS if r.eflags >> bit & 1)
    gprs = [("eax", r.eax), ("ecx", r.ecx), ("edx", r.edx), ("ebx", r.ebx),
            ("esp", r.esp), ("ebp", r.ebp), ("esi", r.esi), ("edi", r.edi)]
    lines = ["  ".join(f"{n} {v:#010x}" for n, v in gprs[:4]),
             "  ".join(f"{n} {v:#010x}" for n, v in gprs[4:]),
             f"eip {m.vm.symbols.address(r.eip)}  eflags {r.eflags:#010x} [ {flags} ] "
             f"iopl {(r.eflags >> 12) & 3}",
             "  ".join(f"{n} {getattr(r, n):#06x}" for n in ("cs", "ss", "ds", "es", "fs",
                                                             "gs")),
             "  ".join(f"{n} {getattr(r, n):#010x}" for n in ("cr0", "cr2", "cr3", "cr4")),
             f"cpl {r.cpl}  vif {int(r.vif)}"]
    return "\n".join(lines) + "\n"


def set_register(m: CommandInterpreter, command: SetRegister) -> str:
    value = m.value(command.value)
    try:
        m.machine.write_register(command.register, value)
    except RegisterError as exc:
        raise fail(Problem.REGISTER_WRITE, command.register_column, detail=str(exc)) \
            from None
    shown = m.read_register(command.register)
    return f"{command.register} = {shown:#x}\n"


def _build_set(children: list) -> SetRegister:
    token, value = children
    name = token.lstrip("$").lower()
    if name not in REGISTER_NAMES:
        raise fail(Problem.UNKNOWN_REGISTER, token.start_pos, name=token.lstrip("$"))
    return SetRegister(name, value, token.start_pos)


MODULE = CommandModule(
    grammar='''
regs: "regs"
    | "info" "registers"        // QEMU's name
set: "set" (REGISTER | NAME) "=" expr
''',
    rules=("regs", "set"),
    builders={"regs": lambda children: Regs(), "set": _build_set},
    handlers={Regs: regs, SetRegister: set_register},
    completers={"set": keywords(tuple(sorted(REGISTER_NAMES)))},
)
