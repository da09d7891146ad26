"""Monitor commands shared by every front end (gdb's ``monitor``, later the prompt and -x).

This is the small first set the gdb stub needs: physical memory access, event breakpoints and
a VM summary. Each command is a function over the Machine returning the text to show; errors
are one line and change nothing. (The lark grammar of the full monitor language is issue 6;
it will parse into these same commands.)
"""
from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.events import Event, EventKind
from ..core.faults import StopReason
from ..core.machine import Machine


class CommandError(ValueError):
    """A command that cannot run; the message is the one line to show."""


def _number(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise CommandError(f"not a number: {text!r}") from None


@dataclass
class Catch:
    kind: EventKind
    match: Callable[[Event], bool]
    text: str


@dataclass
class Monitor:
    """The command set over one machine, with the event breakpoints it has armed."""

    machine: Machine
    catches: list[Catch] = field(default_factory=list)
    last_catch: Event | None = None

    def __post_init__(self) -> None:
        self.commands: dict[str, tuple[Callable[[list[str]], str], str]] = {
            "help": (self._help, "help [COMMAND]: list the commands, or explain one"),
            "xp": (self._xp, "xp ADDR [COUNT]: hex dump COUNT (16) bytes of guest-physical "
                   "memory"),
            "setp": (self._setp, "setp ADDR BYTE...: write bytes to guest-physical memory"),
            "catch": (self._catch, "catch vif | trap [VECTOR] | irq [VECTOR] | pt [OP] | desc "
                      "| hal [CHANNEL]: stop when such an event happens"),
            "uncatch": (self._uncatch, "uncatch: remove every event breakpoint"),
            "info": (self._info, "info: the VM's state (icount, virtual CPU, stop reason)"),
            "step-irqs": (self._step_irqs, "step-irqs on|off: deliver interrupts while "
                          "single-stepping (default off)"),
        }
        self.machine.events.subscribe(set(EventKind), self._on_event)

    def run(self, line: str) -> str:
        """Run one command line; returns its output (an error is one line, ending in \\n)."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            return f"error: {exc}\n"
        if not words:
            return ""
        entry = self.commands.get(words[0])
        if entry is None:
            return f"error: unknown command {words[0]!r} (try 'help')\n"
        try:
            return entry[0](words[1:])
        except CommandError as exc:
            return f"error: {exc}\n"

    def _help(self, args: list[str]) -> str:
        if args:
            entry = self.commands.get(args[0])
            if entry is None:
                raise CommandError(f"unknown command {args[0]!r}")
            return entry[1] + "\n"
        return "".join(text + "\n" for _, text in self.commands.values())

    def _xp(self, args: list[str]) -> str:
        if not 1 <= len(args) <= 2:
            raise CommandError("usage: xp ADDR [COUNT]")
        addr = _number(args[0])
        count = _number(args[1]) if len(args) == 2 else 16
        try:
            data = self.machine.read_physical(addr, count)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        lines = []
        for off in range(0, len(data), 16):
            chunk = data[off:off + 16]
            lines.append(f"{addr + off:08x}: " + " ".join(f"{b:02x}" for b in chunk))
        return "\n".join(lines) + "\n"

    def _setp(self, args: list[str]) -> str:
        if len(args) < 2:
            raise CommandError("usage: setp ADDR BYTE...")
        addr = _number(args[0])
        values = [_number(a) for a in args[1:]]
        if any(not 0 <= v <= 0xFF for v in values):
            raise CommandError("bytes must be 0..255")
        try:
            self.machine.write_physical(addr, bytes(values))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        return f"wrote {len(values)} bytes at physical {addr:#x}\n"

    def _catch(self, args: list[str]) -> str:
        if not args:
            return "".join(f"{i}: {c.text}\n" for i, c in enumerate(self.catches)) or \
                "no event breakpoints\n"
        try:
            kind = EventKind(args[0])
        except ValueError:
            raise CommandError(f"cannot catch {args[0]!r} (vif, trap, irq, pt, desc, hal)") \
                from None
        match: Callable[[Event], bool] = lambda e: True
        if len(args) > 1:
            if kind in (EventKind.TRAP, EventKind.IRQ):
                vector = _number(args[1])
                match = lambda e: e.fields.get("vector") == vector  # noqa: E731
            elif kind in (EventKind.PT, EventKind.HAL):
                key, want = ("op" if kind is EventKind.PT else "channel"), args[1]
                match = lambda e: e.fields.get(key) == want  # noqa: E731
            else:
                raise CommandError(f"catch {kind.value} takes no argument")
        text = " ".join(["catch", *args])
        self.catches.append(Catch(kind, match, text))
        return f"event breakpoint {len(self.catches) - 1}: {text}\n"

    def _uncatch(self, args: list[str]) -> str:
        count = len(self.catches)
        self.catches.clear()
        return f"removed {count} event breakpoints\n"

    def _on_event(self, event: Event) -> None:
        if event.kind is EventKind.STOP:
            return
        for catch in self.catches:
            if catch.kind is event.kind and catch.match(event):
                self.last_catch = event
                self.machine.stop_after_current(StopReason.CATCH,
                                                f"caught {event.describe().split('] ', 1)[1]}")
                return

    def _info(self, args: list[str]) -> str:
        m = self.machine
        regs = m.registers()
        lines = [f"icount {m.icount}  virtual time {m.clock.now()}",
                 f"eip {regs.eip:#010x}  cpl {regs.cpl}  vif {int(regs.vif)}  "
                 f"cr0 {regs.cr0:#x}  cr3 {regs.cr3:#x}  cr4 {regs.cr4:#x}",
                 f"shadow: {m.mmu.stats.fills} fills, {m.mmu.cached_spaces} address spaces "
                 f"kept, paging {'on' if m.mmu.paging else 'off'}"]
        if self.last_catch is not None:
            lines.append(f"last event breakpoint: {self.last_catch.describe()}")
        return "\n".join(lines) + "\n"

    def _step_irqs(self, args: list[str]) -> str:
        if args not in (["on"], ["off"]):
            raise CommandError("usage: step-irqs on|off")
        self.machine.irqs_while_stepping = args == ["on"]
        return f"interrupts while stepping: {args[0]}\n"
