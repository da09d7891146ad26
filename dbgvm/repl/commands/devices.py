"""``pic`` (``info pic``), ``pit``, ``hal stats``: the interrupt controller, the timer and the
HAL's counters."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..devices_view import pic_report, pit_report
from .base import Command, CommandModule, keywords

if TYPE_CHECKING:
    from .interpreter import CommandInterpreter


@dataclass(frozen=True)
class PicCommand(Command):
    names = ("pic", "info pic")
    usage = "pic"
    help = "The 8259 pair: vector bases, IRR, ISR, IMR, the line that would interrupt now."


@dataclass(frozen=True)
class PitCommand(Command):
    names = ("pit",)
    usage = "pit"
    help = "The 8254 channel 0: mode, reload, current count, next interrupt in virtual time."


@dataclass(frozen=True)
class HalStats(Command):
    names = ("hal stats",)
    usage = "hal stats"
    help = "Per-channel HAL counters of the current VM."


def pic(m: CommandInterpreter, command: PicCommand) -> str:
    return pic_report(m.machine.pic)


def pit(m: CommandInterpreter, command: PitCommand) -> str:
    return pit_report(m.machine.pit, m.machine.clock.now())


def hal_stats(m: CommandInterpreter, command: HalStats) -> str:
    if m.hal_stats is None:
        return "no HAL devices\n"
    text = m.hal_stats(m.current)
    return text if text.endswith("\n") else text + "\n"


MODULE = CommandModule(
    grammar='''
pic: "pic"
   | "info" "pic"               // QEMU's name
pit: "pit"
hal: "hal" "stats"
''',
    rules=("pic", "pit", "hal"),
    builders={"pic": lambda children: PicCommand(), "pit": lambda children: PitCommand(),
              "hal": lambda children: HalStats()},
    handlers={PicCommand: pic, PitCommand: pit, HalStats: hal_stats},
    completers={"hal": keywords(("stats",))},
)
