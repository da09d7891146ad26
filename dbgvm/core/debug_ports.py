"""The two debug ports of docs/design.md, section 3: 0xE9 console and 0xF4 debug-exit."""
from __future__ import annotations

from collections.abc import Callable

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

    def __init__(self, request_exit: Callable[[int], None]) -> None:
        self._request_exit = request_exit

    def port_read(self, port: int, size: int) -> int:
        return 0xFF

    def port_write(self, port: int, size: int, value: int) -> None:
        self._request_exit(((value & 0xFF) << 1) | 1)
