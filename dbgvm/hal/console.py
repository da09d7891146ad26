"""Channel 1: the guest console. Output goes to a sink (the terminal, or the monitor's output
pane); input waits here until the guest has posted a buffer for it."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .abi import Channel, ConsoleOp, Status
from .device import Deliver, Reply

MAX_WRITE = 4096


def _preview(data: bytes, limit: int = 60) -> str:
    text = data.decode("utf-8", "replace")
    text = text if len(text) <= limit else text[:limit] + "..."
    return repr(text)


@dataclass(frozen=True)
class ConsoleState:
    input: bytes                      # typed, not yet taken by a guest buffer
    eof: bool                         # the host's end of input, seen
    eof_sent: bool                    # ... and handed to the guest
    guest_reads: bool


class ConsoleDevice:
    channel = Channel.CONSOLE
    ops = ConsoleOp
    rx_capacity = 1
    NOT_SAVED = frozenset({"sink", "claim", "deliver"})     # wiring

    def __init__(self, sink: Callable[[bytes], None],
                 claim: Callable[[], bytes] = lambda: b"") -> None:
        """``claim``: takes the input typed so far that waits elsewhere (a UART nobody
        opened), which is the guest's once it reads the HAL console."""
        self._sink = sink
        self._claim = claim
        self._input = bytearray()
        self._eof = False
        self._eof_sent = False
        self._deliver: Deliver | None = None
        # the guest posted a buffer once: it reads its console here (Linux's hal_console
        # with console=hvc0), so a board's UART no longer gets the typed input
        self.guest_reads = False

    def save(self) -> ConsoleState:
        return ConsoleState(bytes(self._input), self._eof, self._eof_sent, self.guest_reads)

    def restore(self, state: ConsoleState) -> None:
        self._input = bytearray(state.input)
        self._eof, self._eof_sent = state.eof, state.eof_sent
        self.guest_reads = state.guest_reads

    def min_length(self, op: int) -> int:
        return 0

    def submit(self, op: int, payload: bytes) -> Reply:
        if op != ConsoleOp.WRITE:
            return Reply(Status.NOOP, info="console: INPUT/EOF are host-to-guest only")
        if len(payload) > MAX_WRITE:
            return Reply(Status.BADLEN, info=f"write of {len(payload)} bytes > {MAX_WRITE}")
        self._sink(payload)
        return Reply(Status.OK, info=_preview(payload))

    def describe(self, op: int, payload: bytes) -> str:
        return _preview(payload) if payload else "end of input"

    def attach(self, deliver: Deliver) -> None:
        self._deliver = deliver

    # -- input (an external input: the caller applies it at a quantum boundary) ----------
    def feed(self, data: bytes) -> None:
        """Keystrokes or piped bytes from the host; an empty ``data`` is end of input."""
        if not data:
            self._eof = True
        else:
            self._input += data
        self._pass_on()

    def rx_posted(self) -> None:
        if not self.guest_reads:
            self.guest_reads = True
            self._input[:0] = self._claim()
        self._pass_on()

    def _pass_on(self) -> None:
        assert self._deliver is not None
        while self._input:
            taken = self._deliver(Channel.CONSOLE, ConsoleOp.INPUT, bytes(self._input))
            if taken is None:
                return
            del self._input[:taken]
        if self._eof and not self._eof_sent:
            self._eof_sent = self._deliver(Channel.CONSOLE, ConsoleOp.EOF, b"") is not None

    @property
    def waiting_input(self) -> int:
        """Bytes typed that no guest buffer has taken yet."""
        return len(self._input)
