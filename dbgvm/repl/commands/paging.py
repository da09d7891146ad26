"""``pt walk``, ``pt stats``, ``pt map`` (``info mem``), ``pt pages`` (``info tlb``): the
guest's page tables beside the monitor's shadow MMU."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..expr import Expr
from ..mappings_view import map_report, pages_report
from ..paging_view import stats_report, walk_report
from .base import Command, CommandModule, keywords

if TYPE_CHECKING:
    from .interpreter import CommandInterpreter


@dataclass(frozen=True)
class PtWalk(Command):
    address: Expr
    names = ("pt walk",)
    usage = "pt walk VADDR"
    help = ("Walk the guest's page tables for VADDR and show the shadow entries (kernel and "
            "user views) beside them.")


@dataclass(frozen=True)
class PtStats(Command):
    names = ("pt stats",)
    usage = "pt stats"
    help = "Shadow MMU counters: fills, dirty faults, flushes, zaps, address spaces kept."


@dataclass(frozen=True)
class PtMap(Command):
    names = ("pt map", "info mem")
    usage = "pt map"
    help = ("The guest's whole address space as its page tables map it: ranges with the "
            "same rights (QEMU's 'info mem'), and how many pages of each the shadow holds.")


@dataclass(frozen=True)
class PtPages(Command):
    names = ("pt pages", "info tlb")
    usage = "pt pages"
    help = ("Every page the guest's page tables map, virtual to physical with size and "
            "rights (QEMU's 'info tlb').")


def pt_walk(m: CommandInterpreter, command: PtWalk) -> str:
    return walk_report(m.machine, m.address(command.address))


def pt_stats(m: CommandInterpreter, command: PtStats) -> str:
    return stats_report(m.machine)


def pt_map(m: CommandInterpreter, command: PtMap) -> str:
    return map_report(m.machine)


def pt_pages(m: CommandInterpreter, command: PtPages) -> str:
    return pages_report(m.machine)


MODULE = CommandModule(
    grammar='''
pt_walk: "pt" "walk" expr
pt_stats: "pt" "stats"
pt_map: "pt" "map"
      | "info" "mem"            // QEMU's name
pt_pages: "pt" "pages"
        | "info" "tlb"          // QEMU's name
''',
    rules=("pt_walk", "pt_stats", "pt_map", "pt_pages"),
    builders={
        "pt_walk": lambda children: PtWalk(children[0]),
        "pt_stats": lambda children: PtStats(),
        "pt_map": lambda children: PtMap(),
        "pt_pages": lambda children: PtPages(),
    },
    handlers={PtWalk: pt_walk, PtStats: pt_stats, PtMap: pt_map, PtPages: pt_pages},
    completers={"pt": keywords(("walk", "stats", "map", "pages"), None)},
)
