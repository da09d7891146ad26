"""The monitor's commands as typed objects: what the parser produces and the monitor runs.

Each class carries its own names, usage line and help text, so a command cannot exist without
help. ``runs_guest`` marks commands that execute guest code (the prompt runs them in the
background); ``while_running`` marks those that are safe while the guest runs in another
thread because they never touch the Machine.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from ..core.debug import WatchKind
from ..core.events import EventKind
from .expr import Expr


@dataclass(frozen=True)
class Command:
    names: ClassVar[tuple[str, ...]]
    usage: ClassVar[str]
    help: ClassVar[str]
    runs_guest: ClassVar[bool] = False
    while_running: ClassVar[bool] = False


@dataclass(frozen=True)
class Continue(Command):
    names = ("continue", "c")
    usage = "continue"
    help = ("Run the guest until something stops it: a breakpoint, a watchpoint, an event "
            "breakpoint (catch), the guest's end, or 'stop' / Ctrl-C.")
    runs_guest = True


@dataclass(frozen=True)
class Step(Command):
    count: Expr | None = None
    names = ("step", "s")
    usage = "step [N]"
    help = ("Execute N (default 1) instructions, then show the next one. Interrupts are not "
            "taken before a stepped instruction unless 'step-irqs on'.")
    runs_guest = True


@dataclass(frozen=True)
class StopCommand(Command):
    names = ("stop",)
    usage = "stop"
    help = "Stop the running guest after the current quantum (Ctrl-C at the prompt does the same)."
    while_running = True


@dataclass(frozen=True)
class Break(Command):
    address: Expr
    names = ("break", "b")
    usage = "break ADDR|SYMBOL"
    help = "Stop before the instruction at this virtual address (an expression: 'break main+4')."


@dataclass(frozen=True)
class Delete(Command):
    number: int | None = None
    number_column: int = 0
    names = ("delete", "d")
    usage = "delete [N]"
    help = "Delete breakpoint, watchpoint or event breakpoint N, or all of them."


@dataclass(frozen=True)
class Info(Command):
    names = ("info",)
    usage = "info"
    help = ("The VM summary: state, stop reason, instruction count, virtual CPU, shadow MMU, "
            "the last event breakpoint hit.")


@dataclass(frozen=True)
class InfoBreakpoints(Command):
    names = ("info breakpoints",)
    usage = "info breakpoints"
    help = "List breakpoints, watchpoints and event breakpoints with their numbers and hits."


@dataclass(frozen=True)
class Watch(Command):
    kind: WatchKind
    address: Expr
    length: Expr | None = None
    names = ("watch",)
    usage = "watch [read|write|access] ADDR [LEN]"
    help = ("Stop after an instruction that writes (default), reads or accesses LEN (default 4) "
            "bytes at ADDR: the physical bytes ADDR maps to now.")


class CatchKind(str, enum.Enum):
    VIF = "vif"
    TRAP = "trap"
    IRQ = "irq"
    PT = "pt"
    DESC = "desc"
    HAL = "hal"
    SYSCALL = "syscall"


@dataclass(frozen=True)
class Catch(Command):
    kind: CatchKind | None = None      # None: list the event breakpoints
    vector: int | None = None          # trap, irq vector; syscall number
    name: str | None = None            # pt op, hal channel, syscall name
    names = ("catch",)
    usage = "catch [vif|trap|irq|pt|desc|hal|syscall [ARG]]"
    help = ("Event breakpoint: stop right after the instruction that caused such an event "
            "(docs/events.md). ARG: a vector for trap and irq, an op for pt, a channel for "
            "hal, a name or number for syscall (its entry and return). Without arguments, "
            "list them.")


@dataclass(frozen=True)
class Uncatch(Command):
    names = ("uncatch",)
    usage = "uncatch"
    help = "Remove every event breakpoint."


@dataclass(frozen=True)
class Trace(Command):
    on: bool | None = None             # None: show what is traced
    kinds: frozenset[EventKind] = frozenset()
    names = ("trace",)
    usage = "trace [on|off [KINDS]]"
    help = ("Print events of these kinds (comma list, or 'all') as they happen; 'trace off' "
            "alone stops all tracing.")


@dataclass(frozen=True)
class Events(Command):
    kind: EventKind | None = None
    last: Expr | None = None
    names = ("events",)
    usage = "events [KIND] [last N]"
    help = "Show the last N (default 20) recorded events, all kinds or one."


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


class Unit(enum.IntEnum):
    BYTE = 1
    HALF = 2
    WORD = 4


class Radix(str, enum.Enum):
    HEX = "x"
    SIGNED = "d"
    UNSIGNED = "u"
    CHAR = "c"
    STRING = "s"


@dataclass(frozen=True)
class Examine(Command):
    physical: bool
    radix: Radix
    unit: Unit
    address: Expr
    count: Expr | None = None
    fmt_count: int | None = None
    names = ("x", "xp")
    usage = "x[/FMT] ADDR [COUNT]   xp[/FMT] ADDR [COUNT]"
    help = ("Show COUNT units of guest memory at ADDR: 'x' virtual (through the guest's page "
            "tables, without touching A/D bits), 'xp' physical. FMT letters: x hex (default), "
            "d signed, u unsigned, c characters, s string; b bytes (default), h 16-bit, "
            "w 32-bit. COUNT defaults to 16 bytes' worth.")


@dataclass(frozen=True)
class Disas(Command):
    address: Expr | None = None
    count: Expr | None = None
    names = ("disas",)
    usage = "disas [ADDR] [N]"
    help = "Disassemble N (default 10) instructions at ADDR (default eip), with symbols."


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


@dataclass(frozen=True)
class Quit(Command):
    names = ("quit", "q")
    usage = "quit"
    help = "Leave the monitor (the prompt; scripts end here)."
    while_running = True


@dataclass(frozen=True)
class Help(Command):
    topic: str | None = None
    names = ("help",)
    usage = "help [COMMAND]"
    help = "List the commands, or explain one."
    while_running = True


@dataclass(frozen=True)
class Vm(Command):
    index: int | None = None
    index_column: int = 0
    names = ("vm",)
    usage = "vm [N]"
    help = "List the VMs, or make VM N the current one (the one commands apply to)."


@dataclass(frozen=True)
class Send(Command):
    data: bytes
    names = ("send",)
    usage = "send TEXT | send \"STRING\""
    help = ("Type into the guest console: TEXT and a newline, or a quoted STRING exactly "
            "(with \\n, \\t, \\xNN escapes).")
    while_running = True


@dataclass(frozen=True)
class SetPhysical(Command):
    address: Expr
    values: tuple[Expr, ...]
    names = ("setp",)
    usage = "setp ADDR BYTE..."
    help = "Write bytes to guest-physical memory."


@dataclass(frozen=True)
class StepIrqs(Command):
    on: bool
    names = ("step-irqs",)
    usage = "step-irqs on|off"
    help = "Deliver interrupts while single-stepping (default off, as QEMU's gdbstub)."


@dataclass(frozen=True)
class ReverseStep(Command):
    count: Expr | None = None
    names = ("rstep",)
    usage = "rstep [N]"
    help = ("Go back N (default 1) instructions in a recorded run (dbgvm replay), then show "
            "the next instruction; the start of the run stops it.")
    runs_guest = True


@dataclass(frozen=True)
class ReverseContinue(Command):
    names = ("rcontinue",)
    usage = "rcontinue"
    help = ("Go back in a recorded run (dbgvm replay) to the last breakpoint or watchpoint hit "
            "before the current point, or to the start of the run when there is none.")
    runs_guest = True


@dataclass(frozen=True)
class Goto(Command):
    icount: Expr
    names = ("goto",)
    usage = "goto ICOUNT"
    help = ("Go to the state after ICOUNT instructions of a recorded run (dbgvm replay), "
            "backwards or forwards, without stopping at breakpoints on the way.")
    runs_guest = True


COMMANDS: tuple[type[Command], ...] = (
    Continue, Step, ReverseStep, ReverseContinue, Goto, StopCommand, Break, Delete, Info, InfoBreakpoints, Watch, Catch, Uncatch,
    Trace, Events, Regs, SetRegister, Examine, Disas, PtWalk, PtStats, PtMap, PtPages, Gdt, Idt, Tss,
    PicCommand, PitCommand, HalStats, Quit, Help, Vm, Send, SetPhysical, StepIrqs)

# every word that can start a command
COMMAND_WORDS: frozenset[str] = frozenset(
    name.split()[0] for cls in COMMANDS for name in cls.names)


def lookup(topic: str) -> list[type[Command]]:
    """The commands a help topic names ('x', 'c', 'pt', 'info breakpoints')."""
    topic = " ".join(topic.split())
    exact = [cls for cls in COMMANDS if topic in cls.names]
    return exact or [cls for cls in COMMANDS if any(n.split()[0] == topic for n in cls.names)]
