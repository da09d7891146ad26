"""The two debug ports of docs/design.md, section 3: 0xE9 console and 0xF4 debug-exit."""
from __future__ import annotations

from collections.abc import Callable

from .stops import StopReason

CONSOLE_PORT = 0xE9
EXIT_PORT = 0xF4


class DebugConsole:
    """Bochs/QEMU debugcon: each byte written goes to the console; reads return 0xE9."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self._sink = sink

    def port_read(self, port: int, size: int) -> int:
        return CONSOLE_PORT

    def port_write(self, port: int, size: int, value: int) -> None:
        self._sink(bytes([value & 0xFF]))


class DebugExit:
    """QEMU isa-debug-exit (iosize=1): writing V ends the run with status (V << 1) | 1."""

    def __init__(self, end_run: Callable[[StopReason, str, int], None]) -> None:
        self._end_run = end_run

    def port_read(self, port: int, size: int) -> int:
        return 0xFF

    def port_write(self, port: int, size: int, value: int) -> None:
        status = ((value & 0xFF) << 1) | 1
        self._end_run(StopReason.DEBUG_EXIT,
                      f"guest wrote to the debug-exit port: status {status}", status)
