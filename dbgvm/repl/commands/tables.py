"""``gdt``, ``idt``, ``tss``: the guest's descriptor tables as it wrote them, decoded."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..tables_view import gdt_report, idt_report, tss_report
from .base import Command, CommandModule

if TYPE_CHECKING:
    from .interpreter import CommandInterpreter


@dataclass(frozen=True)
class Gdt(Command):
    names = ("gdt",)
    usage = "gdt"
    help = "The guest's GDT as it wrote it, decoded, with the monitor's refusals."


@dataclass(frozen=True)
class Idt(Command):
    names = ("idt",)
    usage = "idt"
    help = "The present gates of the guest's IDT, with handler symbols."


@dataclass(frozen=True)
class Tss(Command):
    names = ("tss",)
    usage = "tss"
    help = "The guest's task-state segment (the one TR selects): ring stacks, CR3, registers."


def gdt(m: CommandInterpreter, command: Gdt) -> str:
    return gdt_report(m.machine)


def idt(m: CommandInterpreter, command: Idt) -> str:
    return idt_report(m.machine, m.vm.symbols)


def tss(m: CommandInterpreter, command: Tss) -> str:
    return tss_report(m.machine)


MODULE = CommandModule(
    grammar='''
gdt: "gdt"
idt: "idt"
tss: "tss"
''',
    rules=("gdt", "idt", "tss"),
    builders={"gdt": lambda children: Gdt(), "idt": lambda children: Idt(),
              "tss": lambda children: Tss()},
    handlers={Gdt: gdt, Idt: idt, Tss: tss},
)
