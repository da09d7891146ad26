"""The monitor's commands, one module per command or tight family (registry.py lists them),
and the CommandInterpreter that runs them (interpreter.py)."""
from ..memory_view import Radix, Unit
from ..points import CatchKind
from .base import Command, Needs
from .breakpoints import Break, Delete, InfoBreakpoints, Watch
from .catch import Catch, Uncatch
from .devices import HalStats, PicCommand, PitCommand
from .help import Help
from .memory import Disas, Examine, SetPhysical
from .interpreter import CommandInterpreter, ReverseExecution, Status, VmState
from .paging import PtMap, PtPages, PtStats, PtWalk
from .registers import Regs, SetRegister
from .registry import REGISTRY
from .reverse import Goto, ReverseContinue, ReverseStep
from .running import Continue, Step, StepIrqs, StopCommand
from .session import Info, Quit, Send, Vm
from .tables import Gdt, Idt, Tss
from .tracing import Events, Trace

COMMANDS = REGISTRY.commands
lookup = REGISTRY.lookup

__all__ = [
    "COMMANDS", "CatchKind", "Radix", "Unit", "lookup",
    "REGISTRY", "Break", "Catch", "Command", "Continue", "Delete", "Disas", "Events",
    "Examine", "Gdt", "Goto", "HalStats", "Help", "Idt", "Info", "InfoBreakpoints",
    "CommandInterpreter",
    "Needs", "PicCommand", "PitCommand", "PtMap", "PtPages", "PtStats", "PtWalk", "Quit",
    "Regs", "ReverseContinue", "ReverseExecution", "ReverseStep", "Send", "SetPhysical",
    "SetRegister", "Status", "Step", "StepIrqs", "StopCommand", "Tss", "Uncatch", "Vm",
    "VmState", "Watch", "Trace",
]
