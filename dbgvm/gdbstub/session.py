"""One gdb session: a table of packet handlers over a Machine.

As in the Rust ``gdbstub`` crate, each optional protocol feature is a small capability that
brings its packet handlers and its qSupported features; qSupported is derived from the
capabilities present, never kept by hand. Each handler table entry carries the schema of its
arguments (params.py, as QEMU's gdbstub does): they are parsed and range-checked centrally, the
handler gets the values and returns the reply payload; a malformed packet or an out-of-range
number gets an ``E`` reply, never an exception.

Breakpoints and watchpoints are the machine's (core/debug.py), as in QEMU's stub: the session
keeps only the handles the machine gave it for gdb's Z packets, so a monitor ``delete`` of a
point at the same place cannot remove gdb's, and gdb's ``z`` cannot remove the monitor's. A
stop reply is made in one place, from the stop's typed cause (``Stop.cause``).
"""
from __future__ import annotations

import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..core.debug import DebugError, Handle, WatchKind
from ..core.faults import StopReason
from ..core.guest_registers import RegisterError, read_register, write_register
from ..core.machine import Machine, Stop
from ..core.stops import BreakpointHit, CatchHit, WatchHit
from .hostio import HostIO, ServedFile
from .params import Command, PacketError, unhex
from .target_description import REGISTERS, target_xml

THREAD = b"thread:01;"
OWNER = "gdb"                  # whose points the Z packets' are (core/debug_points.py)
SOFTWARE_BREAK, HARDWARE_BREAK = 0, 1          # Z0, Z1
# stops that end the guest's run: outside a replay gdb is told the process exited (W) or
# what stopped it; in a replay such a stop is the end of the recorded run, a place to go back
# from (replaylog:end), never an exit after which gdb could not reverse
ENDING = frozenset({StopReason.DEBUG_EXIT, StopReason.POWEROFF, StopReason.HALTED,
                    StopReason.TRIPLE_FAULT, StopReason.DOUBLE_FAULT, StopReason.BAD_MEMORY,
                    StopReason.VMM_ERROR, StopReason.UNSUPPORTED})


def _ignore(args: bytes) -> Callable[[bytes], bytes]:
    return lambda rest: args


@dataclass
class Capability:
    """A protocol feature: its qSupported entries and its packet handlers, each with the
    schema of its arguments."""

    features: list[str]
    handlers: dict[str, Command] = field(default_factory=dict)


class Runner(Protocol):
    def __call__(self, max_insns: int | None, *,
                 interrupted: Callable[[], bool] | None = None) -> Stop: ...


class MonitorCommand(Protocol):
    """Runs a monitor command line (dbgvm.repl.commands.CommandInterpreter.run): ``interrupted`` is
    polled while a command runs; ``from_gdb`` makes the monitor refuse the commands that
    would change the guest behind gdb's back (gdb keeps its own register cache)."""

    def __call__(self, line: str, *, interrupted: Callable[[], bool] | None = None,
                 from_gdb: bool = False) -> str: ...


class Reverse(Protocol):
    def step(self) -> Stop: ...

    def step_back(self) -> Stop: ...

    def continue_back(self) -> Stop: ...


class Session:
    """Answers packets for one connected gdb. ``wait_for_interrupt`` is polled while the
    guest runs and returns True when gdb sent Ctrl-C; ``monitor`` runs a monitor command;
    ``exec_file`` is the guest's executable (or symbol file) gdb may load (hostio.py)."""

    def __init__(self, machine: Machine, *, monitor: MonitorCommand | None = None,
                 console: Callable[[str], None] | None = None,
                 run: Runner | None = None, reverse: Reverse | None = None,
                 exec_file: ServedFile | None = None) -> None:
        self.m = machine
        self._run: Runner = run or machine.run    # several VMs run side by side: theirs
        self._reverse = reverse                   # a replay: execution can go backwards
        self._monitor = monitor
        self.no_ack = False
        self.killed = False
        self.detached = False
        self.exited: Stop | None = None           # the guest's end, told to gdb with W
        self.interrupted: Callable[[], bool] = lambda: False
        # gdb's points: (Z type, address, length) -> the machine's handle (Z0/Z1: length 0)
        self._points: dict[tuple[int, int, int], Handle] = {}
        self.last_stop = b"T05" + THREAD
        self.output: list[bytes] = []                 # O packets to send before a reply
        self._console = console
        caps = [self._base(), self._breakpoints(), self._description(),
                Capability(["QStartNoAckMode+"],
                           {"QStartNoAckMode": Command("*", self._no_ack)}),
                Capability(["vContSupported+"],
                           {"vCont?": Command("*", _ignore(b"vCont;c;C;s;S")),
                            "vCont": Command("*", self._vcont)}),
                Capability([], {"qRcmd": Command("x", self._rcmd)}),
                Capability([f"PacketSize={0x4000:x}"])]
        self._hostio = HostIO(exec_file) if exec_file is not None else None
        if self._hostio is not None:
            caps.append(Capability(["qXfer:exec-file:read+"],
                                   {"vFile": Command("*", self._hostio.vfile)}))
        if reverse is not None:
            caps.append(Capability(["ReverseStep+", "ReverseContinue+"],
                                   {"b": Command("*", self._backwards)}))
        self.features = [f for cap in caps for f in cap.features]
        self.handlers: dict[str, Command] = {}
        for cap in caps:
            self.handlers.update(cap.handlers)

    # -- dispatch ---------------------------------------------------------------------------
    def handle(self, payload: bytes) -> bytes | None:
        """The reply payload for a packet (None: no reply, e.g. after kill)."""
        if not payload:
            return b""
        if payload[:1] in b"qQv":
            name = payload
            for sep in b":,;":
                name = name.split(bytes([sep]), 1)[0]
            if payload.startswith(b"vCont?"):
                name = b"vCont?"
            args = payload[len(name):]
            args = args[1:] if args[:1] in (b":", b",", b";") else args
        else:
            name, args = payload[:1], payload[1:]
        command = self.handlers.get(name.decode("latin-1"))
        if command is None:
            return b""
        try:
            return command(args)
        except PacketError:
            return b"E01"
        except (DebugError, RegisterError):
            return b"E02"

    # -- capabilities -----------------------------------------------------------------------
    def _base(self) -> Capability:
        return Capability([], {
            "?": Command("*", lambda rest: self.last_stop),
            "g": Command("*", self._read_all), "G": Command("*", self._write_all),
            "p": Command("r", self._read_one), "P": Command("r=x", self._write_one),
            "m": Command("a,l", self._read_mem), "M": Command("a,l:x", self._write_mem),
            "X": Command("a,L:b", self._write_mem_binary),
            "c": Command("a?", self._continue), "s": Command("a?", self._step),
            "D": Command("*", self._detach), "k": Command("*", self._kill),
            "vKill": Command("*", self._vkill),
            "H": Command("*", _ignore(b"OK")), "T": Command("*", _ignore(b"OK")),
            "qAttached": Command("*", _ignore(b"1")),
            "qfThreadInfo": Command("*", _ignore(b"m01")),
            "qsThreadInfo": Command("*", _ignore(b"l")),
            "qC": Command("*", _ignore(b"QC01")), "qSupported": Command("*", self._supported),
            "vMustReplyEmpty": Command("*", _ignore(b"")), "qTStatus": Command("*", _ignore(b"")),
        })

    def _breakpoints(self) -> Capability:
        """Z0/Z1 breakpoints and Z2-Z4 watchpoints (gdb probes watchpoints with Z2)."""
        return Capability(["swbreak+", "hwbreak+"], {"Z": Command("n,a,k", self._insert),
                                                      "z": Command("n,a,k", self._remove)})

    def _description(self) -> Capability:
        return Capability(["qXfer:features:read+"], {"qXfer": Command("w:w:w:o,L", self._xfer)})

    def _supported(self, args: bytes) -> bytes:
        return ";".join(self.features).encode()

    def _no_ack(self, args: bytes) -> bytes:
        self.no_ack = True
        return b"OK"

    def _xfer(self, what: bytes, operation: bytes, annex: bytes, offset: int,
              length: int) -> bytes:
        if operation != b"read":
            return b""
        if what == b"features":
            if annex != b"target.xml":
                return b"E00"
            data = target_xml().encode()
        elif what == b"exec-file" and self._hostio is not None:
            data = self._hostio.exec_file(annex)
        else:
            return b""
        chunk = data[offset:offset + length]
        return (b"l" if offset + length >= len(data) else b"m") + chunk

    # -- registers --------------------------------------------------------------------------
    def _reg_bytes(self, index: int) -> bytes:
        reg = REGISTERS[index]
        size = reg.bits // 8
        try:
            value = read_register(self.m, reg.name)
        except RegisterError:
            return b"xx" * size
        return binascii.hexlify((value & ((1 << reg.bits) - 1)).to_bytes(size, "little"))

    def _read_all(self, args: bytes) -> bytes:
        return b"".join(self._reg_bytes(i) for i in range(len(REGISTERS)))

    def _write_all(self, args: bytes) -> bytes:
        pos = 0
        for reg in REGISTERS:
            size = reg.bits // 8 * 2
            chunk = args[pos:pos + size]
            pos += size
            if len(chunk) < size:
                break
            if b"x" in chunk:
                continue
            value = int.from_bytes(unhex(chunk), "little")
            try:
                if value != read_register(self.m, reg.name):
                    write_register(self.m, reg.name, value)
            except RegisterError:
                return b"E02"
        return b"OK"

    def _read_one(self, index: int) -> bytes:
        return self._reg_bytes(index)

    def _write_one(self, index: int, value: bytes) -> bytes:
        reg = REGISTERS[index]
        if len(value) != reg.bits // 8:
            raise PacketError(f"{reg.name} is {reg.bits // 8} bytes")
        write_register(self.m, reg.name, int.from_bytes(value, "little"))
        return b"OK"

    # -- memory -----------------------------------------------------------------------------
    def _read_mem(self, addr: int, length: int) -> bytes:
        return binascii.hexlify(self.m.debug.read_virtual(addr, length))

    def _write_mem(self, addr: int, length: int, raw: bytes) -> bytes:
        if len(raw) != length:
            raise PacketError("length does not match the data")
        self.m.debug.write_virtual(addr, raw)
        return b"OK"

    def _write_mem_binary(self, addr: int, length: int, data: bytes) -> bytes:
        if len(data) != length:
            raise PacketError("length does not match the data")
        if length:
            self.m.debug.write_virtual(addr, data)
        return b"OK"

    # -- break and watch points -------------------------------------------------------------
    _WATCH = {2: WatchKind.WRITE, 3: WatchKind.READ, 4: WatchKind.ACCESS}

    def _point_key(self, kind: int, addr: int, size: int) -> tuple[int, int, int]:
        """A breakpoint's ``kind`` field is its length in bytes (1 on x86), not part of it."""
        return kind, addr, 0 if kind in (SOFTWARE_BREAK, HARDWARE_BREAK) else size

    def _insert(self, kind: int, addr: int, size: int) -> bytes:
        """Z: inserting what gdb already has is a no-op (the protocol wants it idempotent)."""
        if kind not in (SOFTWARE_BREAK, HARDWARE_BREAK) and kind not in self._WATCH:
            return b""
        key = self._point_key(kind, addr, size)
        if key not in self._points:
            debug = self.m.debug
            self._points[key] = debug.add_watchpoint(addr, size, self._WATCH[kind], OWNER) \
                if kind in self._WATCH else debug.add_breakpoint(addr, OWNER)
        return b"OK"

    def _remove(self, kind: int, addr: int, size: int) -> bytes:
        if kind not in (SOFTWARE_BREAK, HARDWARE_BREAK) and kind not in self._WATCH:
            return b""
        handle = self._points.pop(self._point_key(kind, addr, size), None)
        if handle is not None:
            self.m.debug.remove(handle)
        return b"OK"

    def release_points(self) -> None:
        """The session ends (gdb detached, killed or hung up): give back whatever points gdb
        left set, as QEMU's stub removes all breakpoints then; the next gdb starts with none
        of its predecessor's, and the monitor's stay."""
        for handle in self._points.values():
            self.m.debug.remove(handle)
        self._points.clear()

    def _own_types(self, handles: tuple[Handle, ...]) -> list[int]:
        """The Z types of gdb's own points among ``handles`` (a stop's cause names every
        owner's)."""
        return [key[0] for key, handle in self._points.items() if handle in handles]

    # -- execution --------------------------------------------------------------------------
    def _continue(self, addr: int | None) -> bytes:
        if addr is not None:
            write_register(self.m, "eip", addr)
        return self._resume(step=False)

    def _step(self, addr: int | None) -> bytes:
        if addr is not None:
            write_register(self.m, "eip", addr)
        return self._resume(step=True)

    def _vcont(self, args: bytes) -> bytes:
        actions = [a.split(b":")[0] for a in args.split(b";") if a]
        if not actions:
            raise PacketError("vCont without an action")
        first = actions[0][:1]
        if first in b"sS":
            return self._resume(step=True)
        if first in b"cC":
            return self._resume(step=False)
        raise PacketError(f"unsupported vCont action {actions[0]!r}")

    def _backwards(self, args: bytes) -> bytes:
        """bs / bc: reverse-stepi / reverse-continue (gdb builds reverse-nexti and
        reverse-step on these)."""
        assert self._reverse is not None
        if args == b"s":
            stop = self._reverse.step_back()
        elif args == b"c":
            stop = self._reverse.continue_back()
        else:
            raise PacketError(f"unknown backward packet b{args!r}")
        self.last_stop = self._stop_reply(stop)
        return self.last_stop

    def _resume(self, step: bool) -> bytes:
        if step:
            stop = self._reverse.step() if self._reverse is not None else self.m.step()
        else:
            stop = self._run(None, interrupted=self.interrupted)
        self.last_stop = self._stop_reply(stop)
        return self.last_stop

    def _stop_reply(self, stop: Stop) -> bytes:
        """The one place a Stop becomes a stop reply (T, W), and what gdb prints with it."""
        reason, cause = stop.reason, stop.cause
        if isinstance(cause, BreakpointHit):
            # Z1 only when gdb has no Z0 there; a point only the monitor holds: swbreak
            types = self._own_types(cause.handles)
            hardware = HARDWARE_BREAK in types and SOFTWARE_BREAK not in types
            return b"T05" + THREAD + (b"hwbreak:;" if hardware else b"swbreak:;")
        if isinstance(cause, WatchHit):
            # gdb's own watchpoint's kind, when it has one there (a monitor's awatch may
            # have seen the access first)
            types = self._own_types(cause.handles)
            kind = self._WATCH[types[0]] if types else cause.kind
            return b"T05" + THREAD + f"{kind.value}:{cause.vaddr:x};".encode()
        if isinstance(cause, CatchHit):
            self._say(f"dbgvm: {stop.message}\n")
            return b"T05" + THREAD
        if reason is StopReason.REQUESTED:
            return b"T02" + THREAD
        if reason in (StopReason.STEP, StopReason.MAX_INSNS):
            return b"T05" + THREAD
        if reason is StopReason.HISTORY_START:
            return b"T05" + THREAD + b"replaylog:begin;"
        if reason is StopReason.HISTORY_END:
            self._say(f"dbgvm: {stop.message}\n")
            return b"T05" + THREAD + b"replaylog:end;"
        if reason in ENDING and self._reverse is not None:
            self._say(f"dbgvm: the recorded run ends here ({reason.value}: {stop.message})\n")
            return b"T05" + THREAD + b"replaylog:end;"
        if reason in (StopReason.DEBUG_EXIT, StopReason.POWEROFF):
            self.exited = stop
            return f"W{stop.exit_status & 0xFF:02x}".encode()
        self._say(f"dbgvm: {reason.value}: {stop.message}\n")
        if reason is StopReason.HALTED:
            self.exited = stop
            return b"W00"
        return b"T05" + THREAD

    def _say(self, text: str) -> None:
        self.output.append(b"O" + binascii.hexlify(text.encode()))

    # -- monitor, detach, kill --------------------------------------------------------------
    def _rcmd(self, raw: bytes) -> bytes:
        command = raw.decode("utf-8", "replace")
        if self._monitor is None:
            text = "dbgvm: monitor commands are not available\n"
        else:
            text = self._monitor(command, interrupted=self.interrupted, from_gdb=True)
        for start in range(0, len(text), 1024):
            self._say(text[start:start + 1024])
        return b"OK"

    def _detach(self, args: bytes) -> bytes:
        self.detached = True
        return b"OK"

    def _kill(self, args: bytes) -> None:
        """``k``: gdb expects no reply."""
        self.killed = True

    def _vkill(self, args: bytes) -> bytes:
        self.killed = True
        return b"OK"
