"""``info``, ``vm``, ``send``, ``quit``: the session over the VMs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...core.vcpu import CR0_PG
from ..arguments import number, unescape
from ..errors import Problem, fail
from .base import Command, CommandModule, CompletionRequest

if TYPE_CHECKING:
    from .interpreter import CommandInterpreter

SEND_TEXT_COLUMN = 5            # where the text of 'send TEXT' starts


@dataclass(frozen=True)
class Info(Command):
    names = ("info",)
    usage = "info"
    help = ("The VM summary: state, stop reason, instruction count, virtual CPU, shadow MMU, "
            "the last event breakpoint hit.")


@dataclass(frozen=True)
class Quit(Command):
    names = ("quit", "q")
    usage = "quit"
    help = "Leave the monitor (the prompt; scripts end here)."
    while_running = True
    ends_session = True


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


def info(m: CommandInterpreter, command: Info) -> str:
    vm, machine = m.vm, m.machine
    r = machine.registers()
    state = f"ended ({vm.ended.value})" if vm.ended else "paused"
    lines = [f"vm {vm.index} of {len(m.vms)}: {state}"]
    if vm.last_stop is not None:
        lines.append(f"last stop: {vm.last_stop.reason.value}: {vm.last_stop.message}")
    lines += [f"icount {machine.icount}  virtual time {machine.clock.now()}",
              f"eip {vm.symbols.address(r.eip)}  cpl {r.cpl}  vif {int(r.vif)}  "
              f"cr0 {r.cr0:#x}  cr3 {r.cr3:#x}  cr4 {r.cr4:#x}",
              f"shadow: {machine.mmu.stats.fills} fills, {machine.mmu.cached_spaces} address "
              f"spaces kept, paging {'on' if machine.vcpu.cr0 & CR0_PG else 'off'}",
              f"{len(vm.points.points)} breakpoints/watchpoints/event breakpoints; "
              f"tracing {', '.join(sorted(k.value for k in m.tracing)) or 'nothing'}"]
    if vm.last_catch is not None:
        lines.append(f"last event breakpoint: {vm.last_catch.describe()}")
    return "\n".join(lines) + "\n"


def quit_(m: CommandInterpreter, command: Quit) -> str:
    m.quit_requested = True
    if m.running:
        m.request_stop()
    return ""


def vm(m: CommandInterpreter, command: Vm) -> str:
    if command.index is not None:
        if not 0 <= command.index < len(m.vms):
            raise fail(Problem.NO_VM, command.index_column, index=command.index,
                       last=len(m.vms) - 1)
        m.current = command.index
    lines = []
    for state in m.vms:
        mark = "*" if state.index == m.current else " "
        ended = f"ended ({state.ended.value})" if state.ended else "paused"
        eip = state.machine.registers().eip
        lines.append(f"{mark} vm {state.index}: {ended}, icount {state.machine.icount}, eip "
                     f"{state.symbols.address(eip)}")
    return "\n".join(lines) + "\n"


def send(m: CommandInterpreter, command: Send) -> str:
    if m.console_input is None:
        raise fail(Problem.NO_CONSOLE_INPUT, SEND_TEXT_COLUMN)
    m.console_input(m.current, command.data)
    return ""


def _build_send(children: list) -> Send:
    text = children[0].rstrip()
    if text[:1] in ("'", '"'):
        return Send(unescape(text, children[0].start_pos))
    return Send(text.encode("utf-8") + b"\n")


def _build_vm(children: list) -> Vm:
    if not children:
        return Vm()
    return Vm(number(children[0]), children[0].start_pos)


def _complete_info(request: CompletionRequest):
    """The second words of the ``info X`` names (QEMU's views and info breakpoints)."""
    if request.position == 0:
        return tuple(name.split()[1] for name in request.command_names
                     if name.startswith("info "))
    return request.symbols


MODULE = CommandModule(
    grammar='''
info: "info"
quit: ("quit" | "q")
vm: "vm" NUMBER?
send: "send" REST

REST: /\\S.*/
''',
    rules=("info", "quit", "vm", "send"),
    builders={"info": lambda children: Info(), "quit": lambda children: Quit(),
              "vm": _build_vm, "send": _build_send},
    handlers={Info: info, Quit: quit_, Vm: vm, Send: send},
    completers={"info": _complete_info},
)
