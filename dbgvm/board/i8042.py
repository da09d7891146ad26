"""An i8042 PS/2 controller with both ports present and nothing plugged into either.

Linux's i8042 driver (drivers/input/serio/i8042.c) finds no PNP node and probes the ports
directly; what it does then must end without a timeout and without an error message:
the output buffer starts empty (i8042_flush), the configuration byte reads back stably
(0x20/0x60), self-test answers 0x55 (0xAA), the AUX loopback echoes bytes as AUX data (0xD3:
the mux probe and i8042_check_aux), raising IRQ 12 when the configuration byte enables it
(the AUX interrupt delivery test), and the interface tests pass (0xA9/0xAB). A byte sent to
either device finds nobody: the controller answers 0xFE with the time-out bit set, as real
controllers do, so atkbd and psmouse give up at their first command instead of waiting.

The controller is infinitely fast: the input buffer is never full, and a command's reply is in
the output buffer as soon as the command is written. Pulsing output line 0 (command 0xFE, or
an output-port write clearing bit 0) is the CPU reset line: it calls ``reset``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

DATA_PORT, STATUS_PORT = 0x60, 0x64
KBD_IRQ, AUX_IRQ = 1, 12

# status register
STR_OBF, STR_SYS, STR_CMD, STR_UNLOCKED, STR_AUXDATA, STR_TIMEOUT = (
    0x01, 0x04, 0x08, 0x10, 0x20, 0x40)
# configuration byte ("command byte", CTR)
CTR_KBDINT, CTR_AUXINT, CTR_SYS, CTR_KBDDIS, CTR_AUXDIS, CTR_XLATE = (
    0x01, 0x02, 0x04, 0x10, 0x20, 0x40)
CTR_DEFAULT = CTR_XLATE | CTR_SYS | CTR_KBDINT     # as a PC BIOS leaves it
OUTPUT_PORT_DEFAULT = 0x01 | 0x02                  # reset line inactive, A20 enabled

SELF_TEST_OK = 0x55
INTERFACE_OK = 0x00
NO_DEVICE = 0xFE

# commands written to port 0x64
READ_CTR, WRITE_CTR = 0x20, 0x60
AUX_DISABLE, AUX_ENABLE, AUX_TEST = 0xA7, 0xA8, 0xA9
SELF_TEST, KBD_TEST, KBD_DISABLE, KBD_ENABLE = 0xAA, 0xAB, 0xAD, 0xAE
READ_OUTPUT_PORT, WRITE_OUTPUT_PORT = 0xD0, 0xD1
WRITE_KBD_OUTPUT, WRITE_AUX_OUTPUT, WRITE_AUX = 0xD2, 0xD3, 0xD4
PULSE_OUTPUT = 0xF0                                # 0xF0-0xFF: low nibble clear bits pulse


@dataclass(frozen=True)
class Byte:
    """A byte in the output buffer and the status bits that come with it."""

    value: int
    aux: bool = False
    timeout: bool = False


@dataclass
class I8042Registers:
    """The controller's registers and output buffer, as the device works on them."""

    ctr: int = CTR_DEFAULT
    output_port: int = OUTPUT_PORT_DEFAULT
    last_was_command: bool = False
    expecting: int | None = None        # the command whose data byte comes next on 0x60
    kbd_irq: bool = False               # the interrupt lines as the 8259 last saw them
    aux_irq: bool = False
    output: list[Byte] = field(default_factory=list)


@dataclass(frozen=True)
class I8042State:
    """The registers as a snapshot keeps them (the same fields)."""

    ctr: int
    output_port: int
    last_was_command: bool
    expecting: int | None
    kbd_irq: bool
    aux_irq: bool
    output: tuple[Byte, ...]


class I8042:
    NOT_SAVED = frozenset({"raise_irq", "reset"})     # wiring

    def __init__(self, raise_irq: Callable[[int], None], reset: Callable[[], None]) -> None:
        self._raise_irq = raise_irq
        self._reset = reset
        self.registers = I8042Registers()

    def save(self) -> I8042State:
        r = self.registers            # a field missing from I8042State fails here
        return I8042State(**vars(r) | {"output": tuple(r.output)})

    def restore(self, state: I8042State) -> None:
        self.registers = I8042Registers(**vars(state) | {"output": list(state.output)})

    def _push(self, value: int, *, aux: bool = False, timeout: bool = False) -> None:
        self.registers.output.append(Byte(value, aux, timeout))

    def _update_irq(self) -> None:
        """IRQ 1 or 12 is high while the byte in the output buffer is from that port and the
        configuration byte enables its interrupt; a rising edge interrupts."""
        s = self.registers
        head = s.output[0] if s.output else None
        kbd = head is not None and not head.aux and bool(s.ctr & CTR_KBDINT)
        aux = head is not None and head.aux and bool(s.ctr & CTR_AUXINT)
        if kbd and not s.kbd_irq:
            self._raise_irq(KBD_IRQ)
        if aux and not s.aux_irq:
            self._raise_irq(AUX_IRQ)
        s.kbd_irq, s.aux_irq = kbd, aux

    # -- port interface --------------------------------------------------------------------
    def port_read(self, port: int, size: int) -> int:
        s = self.registers
        if port == STATUS_PORT:
            status = (STR_UNLOCKED | (STR_SYS if s.ctr & CTR_SYS else 0) |
                      (STR_CMD if s.last_was_command else 0))
            if s.output:
                head = s.output[0]
                status |= STR_OBF | (STR_AUXDATA if head.aux else 0) | (
                    STR_TIMEOUT if head.timeout else 0)
            return status
        if not s.output:
            return 0                      # reading an empty buffer: its stale content
        value = s.output.pop(0).value
        s.kbd_irq = s.aux_irq = False     # the buffer emptied: the next byte is a new edge
        self._update_irq()
        return value

    def port_write(self, port: int, size: int, value: int) -> None:
        value &= 0xFF
        s = self.registers
        s.last_was_command = port == STATUS_PORT
        if port == STATUS_PORT:
            s.expecting = None
            self._command(value)
        else:
            self._data(value)
        self._update_irq()

    def _data(self, value: int) -> None:
        s = self.registers
        command, s.expecting = s.expecting, None
        if command == WRITE_CTR:
            s.ctr = value
        elif command == WRITE_OUTPUT_PORT:
            s.output_port = value
            if not value & 0x01:
                self._reset()
        elif command == WRITE_KBD_OUTPUT:
            self._push(value)
        elif command == WRITE_AUX_OUTPUT:
            self._push(value, aux=True)
        elif command == WRITE_AUX:
            self._push(NO_DEVICE, aux=True, timeout=True)
        else:                             # a byte for the keyboard, which is not there
            self._push(NO_DEVICE, timeout=True)

    def _command(self, command: int) -> None:
        s = self.registers
        replies = {READ_CTR: s.ctr, AUX_TEST: INTERFACE_OK, SELF_TEST: SELF_TEST_OK,
                   KBD_TEST: INTERFACE_OK, READ_OUTPUT_PORT: s.output_port}
        bits = {AUX_DISABLE: (CTR_AUXDIS, True), AUX_ENABLE: (CTR_AUXDIS, False),
                KBD_DISABLE: (CTR_KBDDIS, True), KBD_ENABLE: (CTR_KBDDIS, False)}
        if command in replies:
            self._push(replies[command])
        elif command in bits:
            bit, on = bits[command]
            s.ctr = s.ctr | bit if on else s.ctr & ~bit
        elif command in (WRITE_CTR, WRITE_OUTPUT_PORT, WRITE_KBD_OUTPUT, WRITE_AUX_OUTPUT,
                         WRITE_AUX):
            s.expecting = command
        elif command >= PULSE_OUTPUT and not command & 0x01:
            self._reset()                 # pulse the reset line
        # anything else: not implemented by this controller, ignored
