"""A 16550A UART (COM1: ports 0x3F8-0x3FF, IRQ 4) connected to the host console.

Registers follow the National Semiconductor PC16550D datasheet closely enough for Linux's 8250
driver to identify the chip as a 16550A (drivers/tty/serial/8250/8250_port.c, autoconfig: the
IER write/read-back, the loopback test, IIR bits 6-7 after enabling the FIFOs, the 16550A
variant probes, the THRE re-assert test in serial8250_do_startup).

Transmission is instantaneous: a byte written to THR leaves at once, so THR and the transmitter
are always empty (LSR THRE and TEMT set). As on a real 16550 once its byte has gone, writing THR
clears the THRE interrupt and it becomes pending again; the interrupt output is evaluated after
each register access as a whole, so a run of THR writes is one rising edge at most, not an
interrupt per byte (the 8259 in this VM is edge-triggered).

Reception: bytes from the host wait in an unbounded buffer (host input is never lost) and move
into the 16-byte receive FIFO (one byte, RBR, with the FIFOs disabled) whenever there is room
and the guest asserts RTS outside loopback: the host end honours RTS/CTS flow control. Linux
raises RTS when a tty opens the port (after its startup sequence has cleared the FIFOs and
drained RBR), so input typed before a getty runs waits for it instead of being discarded.
The receive-data interrupt is pending whenever the FIFO holds a byte (the FCR trigger level is
stored but not applied, so there is no character-timeout indication); Linux reads LSR.DR until
it is clear on either, so the difference is invisible to it.

On a PC the UART's interrupt output reaches the 8259 only through the OUT2 gate (MCR bit 3),
and not in loopback, where the chip forces its modem outputs inactive.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

COM1_PORTS = range(0x3F8, 0x400)
COM1_IRQ = 4
FIFO_SIZE = 16

# IER
IER_RDA, IER_THRE, IER_RLS, IER_MSR = 0x01, 0x02, 0x04, 0x08
# IIR: no interrupt, then the interrupt identifications from the highest priority down
IIR_NONE, IIR_RLS, IIR_RDA, IIR_THRE, IIR_MSR = 0x01, 0x06, 0x04, 0x02, 0x00
IIR_FIFOS = 0xC0
# FCR
FCR_ENABLE, FCR_CLEAR_RX = 0x01, 0x02    # bit 2 clears the transmit FIFO, always empty
# LCR
LCR_DLAB = 0x80
# MCR
MCR_DTR, MCR_RTS, MCR_OUT1, MCR_OUT2, MCR_LOOP = 0x01, 0x02, 0x04, 0x08, 0x10
# LSR
LSR_DR, LSR_OE, LSR_THRE, LSR_TEMT = 0x01, 0x02, 0x20, 0x40
# MSR
MSR_DCTS, MSR_DDSR, MSR_TERI, MSR_DDCD = 0x01, 0x02, 0x04, 0x08
MSR_CTS, MSR_DSR, MSR_RI, MSR_DCD = 0x10, 0x20, 0x40, 0x80
# what the host console presents on the modem inputs: a connected terminal (as QEMU does)
HOST_MODEM_INPUTS = MSR_CTS | MSR_DSR | MSR_DCD


@dataclass
class UartRegisters:
    """Every register and buffer, as the device works on them."""

    ier: int = 0
    lcr: int = 0
    mcr: int = 0
    scr: int = 0
    dll: int = 0x0C                     # 9600 baud from the 1.8432 MHz clock
    dlm: int = 0
    fcr: int = 0                        # FIFO enable and trigger bits as last written
    lsr_errors: int = 0                 # OE only: a host line has no parity/framing errors
    msr_deltas: int = 0
    thre_pending: bool = False
    irq_out: bool = False               # the interrupt output as the 8259 last saw it
    rx_fifo: bytearray = field(default_factory=bytearray)
    host_input: bytearray = field(default_factory=bytearray)    # not yet in the FIFO


@dataclass(frozen=True)
class UartState:
    """The registers and buffers as a snapshot keeps them (the same fields)."""

    ier: int
    lcr: int
    mcr: int
    scr: int
    dll: int
    dlm: int
    fcr: int
    lsr_errors: int
    msr_deltas: int
    thre_pending: bool
    irq_out: bool
    rx_fifo: bytes
    host_input: bytes


class Uart16550:
    # wiring, and where the chip sits: fixed when the board is built
    NOT_SAVED = frozenset({"console", "raise_irq", "base", "irq"})

    def __init__(self, console: Callable[[bytes], None], raise_irq: Callable[[int], None],
                 base: int = COM1_PORTS.start, irq: int = COM1_IRQ) -> None:
        self._console = console
        self._raise_irq = raise_irq
        self.base = base
        self.irq = irq
        self.registers = UartRegisters()

    def save(self) -> UartState:
        r = self.registers            # a field missing from UartState fails here
        return UartState(**vars(r) | {"rx_fifo": bytes(r.rx_fifo),
                                      "host_input": bytes(r.host_input)})

    def restore(self, state: UartState) -> None:
        self.registers = UartRegisters(**vars(state) | {
            "rx_fifo": bytearray(state.rx_fifo), "host_input": bytearray(state.host_input)})

    @property
    def ports(self) -> range:
        return range(self.base, self.base + 8)

    # -- the host side ---------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Bytes from the host console (an empty ``data``, end of input, has no line
        signal on a serial port and is ignored)."""
        self.registers.host_input += data
        self._refill()
        self._update_irq()

    def take_waiting_input(self) -> bytes:
        """Host input still waiting to enter the FIFO, taken away: the guest reads its
        console elsewhere (the HAL console) and never opened this port."""
        waiting = bytes(self.registers.host_input)
        self.registers.host_input.clear()
        return waiting

    @property
    def has_unread_input(self) -> bool:
        """Host input the guest has not read yet (in the FIFO or still waiting)."""
        return bool(self.registers.rx_fifo or self.registers.host_input)

    @property
    def accepting_input(self) -> bool:
        """Would host input move into the FIFO now (RTS asserted, not in loopback)?"""
        mcr = self.registers.mcr
        return bool(mcr & MCR_RTS) and not mcr & MCR_LOOP

    # -- derived register values -----------------------------------------------------------
    @property
    def _fifo_enabled(self) -> bool:
        return bool(self.registers.fcr & FCR_ENABLE)

    def _capacity(self) -> int:
        return FIFO_SIZE if self._fifo_enabled else 1

    def _modem_inputs(self, mcr: int) -> int:
        """MSR bits 4-7: the modem inputs, or in loopback the MCR outputs wired back."""
        if not mcr & MCR_LOOP:
            return HOST_MODEM_INPUTS
        return ((MSR_CTS if mcr & MCR_RTS else 0) | (MSR_DSR if mcr & MCR_DTR else 0) |
                (MSR_RI if mcr & MCR_OUT1 else 0) | (MSR_DCD if mcr & MCR_OUT2 else 0))

    def _lsr(self) -> int:
        s = self.registers
        return (LSR_DR if s.rx_fifo else 0) | s.lsr_errors | LSR_THRE | LSR_TEMT

    def _interrupt_id(self) -> int:
        """The highest-priority pending interrupt (datasheet table 4)."""
        s = self.registers
        if s.ier & IER_RLS and s.lsr_errors:
            return IIR_RLS
        if s.ier & IER_RDA and s.rx_fifo:
            return IIR_RDA
        if s.ier & IER_THRE and s.thre_pending:
            return IIR_THRE
        if s.ier & IER_MSR and s.msr_deltas:
            return IIR_MSR
        return IIR_NONE

    def _update_irq(self) -> None:
        s = self.registers
        level = (self._interrupt_id() != IIR_NONE and bool(s.mcr & MCR_OUT2)
                 and not s.mcr & MCR_LOOP)
        if level and not s.irq_out:
            self._raise_irq(self.irq)
        s.irq_out = level

    # -- data paths ------------------------------------------------------------------------
    def _refill(self) -> None:
        """Move waiting host input into the FIFO while there is room and RTS allows it."""
        s = self.registers
        if not self.accepting_input:
            return
        room = self._capacity() - len(s.rx_fifo)
        if room > 0 and s.host_input:
            s.rx_fifo += s.host_input[:room]
            del s.host_input[:room]

    def _receive_looped(self, byte: int) -> None:
        """A byte transmitted in loopback arrives at the receiver; a full receiver overruns
        (FIFO mode: the new byte is lost; otherwise it overwrites RBR)."""
        s = self.registers
        if len(s.rx_fifo) < self._capacity():
            s.rx_fifo.append(byte)
            return
        s.lsr_errors |= LSR_OE
        if not self._fifo_enabled:
            s.rx_fifo[-1] = byte

    def _transmit(self, byte: int) -> None:
        s = self.registers
        if s.mcr & MCR_LOOP:
            self._receive_looped(byte)
        else:
            self._console(bytes([byte]))
        s.thre_pending = True             # the byte has left: THR is empty again

    # -- port interface --------------------------------------------------------------------
    def port_read(self, port: int, size: int) -> int:
        value = self._read(port - self.base)
        self._update_irq()
        return value

    def _read(self, offset: int) -> int:
        s = self.registers
        dlab = s.lcr & LCR_DLAB
        if offset == 0:
            if dlab:
                return s.dll
            if not s.rx_fifo:
                return 0
            byte = s.rx_fifo.pop(0)
            self._refill()
            return byte
        if offset == 1:
            return s.dlm if dlab else s.ier
        if offset == 2:
            iid = self._interrupt_id()
            if iid == IIR_THRE:
                s.thre_pending = False    # reading IIR reporting THRE acknowledges it
            return iid | (IIR_FIFOS if self._fifo_enabled else 0)
        if offset == 3:
            return s.lcr
        if offset == 4:
            return s.mcr
        if offset == 5:
            value = self._lsr()
            s.lsr_errors = 0
            return value
        if offset == 6:
            value = self._modem_inputs(s.mcr) | s.msr_deltas
            s.msr_deltas = 0
            return value
        return s.scr

    def port_write(self, port: int, size: int, value: int) -> None:
        self._write(port - self.base, value & 0xFF)
        self._update_irq()

    def _write(self, offset: int, value: int) -> None:
        s = self.registers
        dlab = s.lcr & LCR_DLAB
        if offset == 0:
            if dlab:
                s.dll = value
            else:
                s.thre_pending = False
                self._transmit(value)
        elif offset == 1:
            if dlab:
                s.dlm = value
                return
            changed = (s.ier ^ value) & 0x0F
            s.ier = value & 0x0F
            if changed & IER_THRE:
                # THR is always empty: enabling THRE makes it pending (Linux kicks
                # transmission this way), disabling forgets it
                s.thre_pending = bool(s.ier & IER_THRE)
        elif offset == 2:
            self._write_fcr(value)
        elif offset == 3:
            s.lcr = value
        elif offset == 4:
            self._write_mcr(value & 0x1F)
        elif offset == 7:
            s.scr = value
        # LSR and MSR writes (factory test) are ignored

    def _write_fcr(self, value: int) -> None:
        s = self.registers
        if (value ^ s.fcr) & FCR_ENABLE or value & (FCR_ENABLE | FCR_CLEAR_RX) == \
                FCR_ENABLE | FCR_CLEAR_RX:
            s.rx_fifo.clear()             # changing the FIFO mode clears both FIFOs
        # the other bits are only programmed together with FCR0 (datasheet, FCR)
        s.fcr = value & (FCR_ENABLE | 0xC0) if value & FCR_ENABLE else 0
        self._refill()

    def _write_mcr(self, value: int) -> None:
        s = self.registers
        before = self._modem_inputs(s.mcr)
        after = self._modem_inputs(value)
        changed = before ^ after
        s.msr_deltas |= ((MSR_DCTS if changed & MSR_CTS else 0) |
                         (MSR_DDSR if changed & MSR_DSR else 0) |
                         (MSR_TERI if before & MSR_RI and not after & MSR_RI else 0) |
                         (MSR_DDCD if changed & MSR_DCD else 0))
        s.mcr = value
        self._refill()
