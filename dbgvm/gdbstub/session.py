"""One gdb session: a table of packet handlers over a Machine.

As in the Rust ``gdbstub`` crate, each optional protocol feature is a small capability that
brings its packet handlers and its qSupported features; qSupported is derived from the
capabilities present, never kept by hand. Handlers take the packet's argument bytes and return
the reply payload; a malformed packet gets an ``E`` reply, never an exception.
"""
from __future__ import annotations

import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..core.debug import DebugError, WatchKind
from ..core.faults import StopReason
from ..core.guest_registers import RegisterError, read_register, write_register
from ..core.machine import Machine, Stop
from .target_description import REGISTERS, target_xml

Handler = Callable[[bytes], bytes | None]
THREAD = b"thread:01;"
SIGTRAP, SIGINT = 5, 2


class PacketError(ValueError):
    """A malformed or impossible request; answered with an E packet."""


def _hex_int(text: bytes) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise PacketError(f"bad hex number {text[:16]!r}") from None


def _addr_len(args: bytes) -> tuple[int, int]:
    addr, sep, length = args.partition(b",")
    if not sep:
        raise PacketError("expected ADDR,LENGTH")
    return _hex_int(addr), _hex_int(length)


def _unhex(text: bytes) -> bytes:
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise PacketError("bad hex data") from None


@dataclass
class Capability:
    """A protocol feature: its qSupported entries and its packet handlers."""

    features: list[str]
    handlers: dict[str, Handler] = field(default_factory=dict)


class Runner(Protocol):
    def __call__(self, max_insns: int | None, *,
                 interrupted: Callable[[], bool] | None = None) -> Stop: ...


class MonitorCommand(Protocol):
    """Runs a monitor command line (dbgvm.repl.commands.Monitor.run): ``interrupted`` is
    polled while the command runs the guest (`monitor continue`) and says gdb sent Ctrl-C."""

    def __call__(self, line: str, *,
                 interrupted: Callable[[], bool] | None = None) -> str: ...


class Reverse(Protocol):
    def step(self) -> Stop: ...

    def step_back(self) -> Stop: ...

    def continue_back(self) -> Stop: ...


class Session:
    """Answers packets for one connected gdb. ``wait_for_interrupt`` is polled while the
    guest runs and returns True when gdb sent Ctrl-C; ``monitor`` runs a monitor command."""

    def __init__(self, machine: Machine, *, monitor: MonitorCommand | None = None,
                 console: Callable[[str], None] | None = None,
                 run: Runner | None = None, reverse: Reverse | None = None) -> None:
        self.m = machine
        self._run: Runner = run or machine.run    # several VMs run side by side: theirs
        self._reverse = reverse                   # a replay: execution can go backwards
        self._monitor = monitor
        self.no_ack = False
        self.killed = False
        self.detached = False
        self.interrupted: Callable[[], bool] = lambda: False
        self._z_types: dict[int, set[int]] = {}       # address -> {0, 1}
        self.last_stop = b"T05" + THREAD
        self.output: list[bytes] = []                 # O packets to send before a reply
        self._console = console
        caps = [self._base(), self._breakpoints(), self._description(),
                Capability(["QStartNoAckMode+"], {"QStartNoAckMode": self._no_ack}),
                Capability(["vContSupported+"], {"vCont?": lambda a: b"vCont;c;C;s;S",
                                                 "vCont": self._vcont}),
                Capability([], {"qRcmd": self._rcmd}),
                Capability([f"PacketSize={0x4000:x}"])]
        if reverse is not None:
            caps.append(Capability(["ReverseStep+", "ReverseContinue+"],
                                   {"b": self._backwards}))
        self.features = [f for cap in caps for f in cap.features]
        self.handlers: dict[str, Handler] = {}
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
        handler = self.handlers.get(name.decode("latin-1"))
        if handler is None:
            return b""
        try:
            return handler(args)
        except PacketError:
            return b"E01"
        except (DebugError, RegisterError):
            return b"E02"

    # -- capabilities -----------------------------------------------------------------------
    def _base(self) -> Capability:
        return Capability([], {
            "?": lambda a: self.last_stop, "g": self._read_all, "G": self._write_all,
            "p": self._read_one, "P": self._write_one, "m": self._read_mem,
            "M": self._write_mem, "X": self._write_mem_binary, "c": self._continue,
            "s": self._step, "D": self._detach, "k": self._kill, "vKill": self._vkill,
            "H": lambda a: b"OK", "T": lambda a: b"OK", "qAttached": lambda a: b"1",
            "qfThreadInfo": lambda a: b"m01", "qsThreadInfo": lambda a: b"l",
            "qC": lambda a: b"QC01", "qSupported": self._supported,
            "vMustReplyEmpty": lambda a: b"", "qTStatus": lambda a: b"",
        })

    def _breakpoints(self) -> Capability:
        """Z0/Z1 breakpoints and Z2-Z4 watchpoints (gdb probes watchpoints with Z2)."""
        return Capability(["swbreak+", "hwbreak+"], {"Z": self._insert, "z": self._remove})

    def _description(self) -> Capability:
        return Capability(["qXfer:features:read+"], {"qXfer": self._xfer})

    def _supported(self, args: bytes) -> bytes:
        return ";".join(self.features).encode()

    def _no_ack(self, args: bytes) -> bytes:
        self.no_ack = True
        return b"OK"

    def _xfer(self, args: bytes) -> bytes:
        parts = args.split(b":")
        if len(parts) != 4 or parts[:2] != [b"features", b"read"]:
            return b""
        if parts[2] != b"target.xml":
            return b"E00"
        offset, length = _addr_len(parts[3])
        data = target_xml().encode()
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
            value = int.from_bytes(_unhex(chunk), "little")
            try:
                if value != read_register(self.m, reg.name):
                    write_register(self.m, reg.name, value)
            except RegisterError:
                return b"E02"
        return b"OK"

    def _index(self, text: bytes) -> int:
        index = _hex_int(text)
        if not 0 <= index < len(REGISTERS):
            raise PacketError(f"no register {index}")
        return index

    def _read_one(self, args: bytes) -> bytes:
        return self._reg_bytes(self._index(args))

    def _write_one(self, args: bytes) -> bytes:
        num, sep, value = args.partition(b"=")
        if not sep:
            raise PacketError("expected N=VALUE")
        reg = REGISTERS[self._index(num)]
        write_register(self.m, reg.name, int.from_bytes(_unhex(value), "little"))
        return b"OK"

    # -- memory -----------------------------------------------------------------------------
    def _read_mem(self, args: bytes) -> bytes:
        addr, length = _addr_len(args)
        if length > 0x4000 // 2:
            raise PacketError("read too long")
        return binascii.hexlify(self.m.debug.read_virtual(addr, length))

    def _write_mem(self, args: bytes) -> bytes:
        where, sep, data = args.partition(b":")
        addr, length = _addr_len(where)
        raw = _unhex(data)
        if not sep or len(raw) != length:
            raise PacketError("length does not match the data")
        self.m.debug.write_virtual(addr, raw)
        return b"OK"

    def _write_mem_binary(self, args: bytes) -> bytes:
        where, sep, data = args.partition(b":")
        addr, length = _addr_len(where)
        if not sep or len(data) != length:
            raise PacketError("length does not match the data")
        if length:
            self.m.debug.write_virtual(addr, data)
        return b"OK"

    # -- break and watch points -------------------------------------------------------------
    def _z_args(self, args: bytes) -> tuple[int, int, int]:
        parts = args.split(b";")[0].split(b",")
        if len(parts) != 3:
            raise PacketError("expected TYPE,ADDR,KIND")
        return _hex_int(parts[0]), _hex_int(parts[1]), _hex_int(parts[2])

    _WATCH = {2: WatchKind.WRITE, 3: WatchKind.READ, 4: WatchKind.ACCESS}

    def _insert(self, args: bytes) -> bytes:
        kind, addr, size = self._z_args(args)
        if kind in (0, 1):
            self._z_types.setdefault(addr, set()).add(kind)
            self.m.debug.add_breakpoint(addr)
        elif kind in self._WATCH:
            self.m.debug.add_watchpoint(addr, size, self._WATCH[kind])
        else:
            return b""
        return b"OK"

    def _remove(self, args: bytes) -> bytes:
        kind, addr, size = self._z_args(args)
        if kind in (0, 1):
            types = self._z_types.get(addr, set())
            types.discard(kind)
            if not types:
                self._z_types.pop(addr, None)
                self.m.debug.remove_breakpoint(addr)
        elif kind in self._WATCH:
            self.m.debug.remove_watchpoint(addr, size, self._WATCH[kind])
        else:
            return b""
        return b"OK"

    # -- execution --------------------------------------------------------------------------
    def _continue(self, args: bytes) -> bytes:
        if args:
            write_register(self.m, "eip", _hex_int(args))
        return self._resume(step=False)

    def _step(self, args: bytes) -> bytes:
        if args:
            write_register(self.m, "eip", _hex_int(args))
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
        reason = stop.reason
        if reason is StopReason.BREAKPOINT:
            kinds = self._z_types.get(stop.eip, {0})
            return b"T05" + THREAD + (b"swbreak:;" if 0 in kinds else b"hwbreak:;")
        if reason is StopReason.WATCHPOINT and self.m.debug.last_watch is not None:
            hit = self.m.debug.last_watch
            return b"T05" + THREAD + f"{hit.kind.value}:{hit.vaddr:x};".encode()
        if reason is StopReason.REQUESTED:
            return b"T02" + THREAD
        if reason in (StopReason.STEP, StopReason.MAX_INSNS, StopReason.CATCH):
            if reason is StopReason.CATCH:
                self._say(f"dbgvm: {stop.message}\n")
            return b"T05" + THREAD
        if reason is StopReason.HISTORY_START:
            return b"T05" + THREAD + b"replaylog:begin;"
        if reason is StopReason.HISTORY_END:
            return b"T05" + THREAD + b"replaylog:end;"
        if reason in (StopReason.DEBUG_EXIT, StopReason.POWEROFF):
            return f"W{stop.exit_status & 0xFF:02x}".encode()
        self._say(f"dbgvm: {reason.value}: {stop.message}\n")
        if reason is StopReason.HALTED:
            return b"W00"
        return b"T05" + THREAD

    def _say(self, text: str) -> None:
        self.output.append(b"O" + binascii.hexlify(text.encode()))

    # -- monitor, detach, kill --------------------------------------------------------------
    def _rcmd(self, args: bytes) -> bytes:
        command = _unhex(args).decode("utf-8", "replace")
        if self._monitor is None:
            text = "dbgvm: monitor commands are not available\n"
        else:
            text = self._monitor(command, interrupted=self.interrupted)
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
