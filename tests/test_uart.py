"""16550A UART against the PC16550D datasheet and Linux's 8250 probing sequences."""
from __future__ import annotations

import pytest

from dbgvm.board.uart import Uart16550

BASE = 0x3F8
RBR = THR = DLL = BASE
IER = DLM = BASE + 1
IIR = FCR = BASE + 2
LCR, MCR, LSR, MSR, SCR = BASE + 3, BASE + 4, BASE + 5, BASE + 6, BASE + 7


class Rig:
    def __init__(self) -> None:
        self.out = bytearray()
        self.irqs: list[int] = []
        self.uart = Uart16550(self.out.extend, self.irqs.append)

    def r(self, port: int) -> int:
        return self.uart.port_read(port, 1)

    def w(self, port: int, value: int) -> None:
        self.uart.port_write(port, 1, value)


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_linux_autoconfig_identifies_a_16550a(rig):
    # existence test: IER reads back what was written (upper nibble always 0)
    rig.w(IER, 0)
    assert rig.r(IER) & 0x0F == 0
    rig.w(IER, 0x0F)
    assert rig.r(IER) & 0x0F == 0x0F
    rig.w(IER, 0)
    # loopback test: MCR LOOP|OUT2|RTS -> MSR DCD|CTS
    rig.w(MCR, 0x10 | 0x0A)
    assert rig.r(MSR) & 0xF0 == 0x90
    rig.w(MCR, 0)
    # EFR write through LCR 0xBF, then FIFO enable: IIR bits 7:6 == 3 means 16550A
    rig.w(LCR, 0xBF)
    rig.w(FCR, 0)
    rig.w(LCR, 0)
    rig.w(FCR, 0x01)
    assert rig.r(IIR) >> 6 == 3
    # autoconfig_16550a variant probes must all fail: no EFR under DLAB (reads IIR, not 0)
    rig.w(LCR, 0x80)
    assert rig.r(IIR) != 0
    rig.w(LCR, 0xBF)
    assert rig.r(IIR) != 0
    # not a National SuperIO: IIR bit 4 does not follow MCR LOOP under LCR 0xE0
    rig.w(LCR, 0xE0)
    assert rig.r(IIR) & 0x10 == 0
    # not a TI16750: IIR bit 5 stays clear with FCR 64-byte mode, with or without DLAB
    rig.w(LCR, 0)
    rig.w(FCR, 0x21)
    assert rig.r(IIR) >> 5 == 6
    rig.w(LCR, 0x80)
    rig.w(FCR, 0x21)
    assert rig.r(IIR) >> 5 == 6
    rig.w(LCR, 0)
    # not an XScale: IER bit 6 (UUE) cannot be set
    rig.w(IER, 0x40)
    assert rig.r(IER) & 0x40 == 0
    rig.w(IER, 0)
    # scratch register holds a byte
    rig.w(SCR, 0xA5)
    assert rig.r(SCR) == 0xA5


def test_size_fifo_in_loopback_counts_16_bytes(rig):
    """Linux's size_fifo(): 256 bytes sent in loopback, as many come back as the RX FIFO
    holds (16 on a 16550A); the rest overrun."""
    rig.w(FCR, 0x07)
    rig.w(MCR, 0x10)
    rig.w(LCR, 0x80)
    rig.w(DLL, 1)
    rig.w(DLM, 0)
    rig.w(LCR, 0x03)
    for value in range(256):
        rig.w(THR, value)
    assert rig.out == b""                         # loopback: nothing leaves the chip
    received = []
    while rig.r(LSR) & 0x01 and len(received) < 256:
        received.append(rig.r(RBR))
    assert received == list(range(16))


def test_overrun_sets_oe_once_and_lsr_read_clears_it(rig):
    rig.w(MCR, 0x10)                              # FIFOs off: RBR holds one byte
    rig.w(THR, 1)
    rig.w(THR, 2)
    lsr = rig.r(LSR)
    assert lsr & 0x03 == 0x03                     # DR and OE
    assert rig.r(LSR) & 0x02 == 0
    assert rig.r(RBR) == 2                        # non-FIFO overrun overwrites RBR


def test_iir_priority_order(rig):
    rig.w(FCR, 0x01)
    rig.w(MCR, 0x10)                              # loopback
    rig.w(IER, 0x0F)                              # all four sources
    # THRE is pending (enabled with THR empty); now add MSR, RDA and RLS conditions
    rig.w(MCR, 0x10 | 0x02)                       # RTS -> CTS changes: DCTS
    for value in range(17):                       # 16 in the FIFO, the 17th overruns
        rig.w(THR, value)
    assert rig.r(IIR) == 0xC6                     # receiver line status first
    rig.r(LSR)                                    # clears OE
    assert rig.r(IIR) == 0xC4                     # then received data available
    for _ in range(16):
        rig.r(RBR)
    assert rig.r(IIR) == 0xC2                     # then THR empty (reading IIR clears it)
    assert rig.r(IIR) == 0xC0                     # then modem status
    assert rig.r(MSR) & 0x01                      # DCTS, cleared by the read
    assert rig.r(IIR) == 0xC1                     # nothing pending
    rig.w(FCR, 0x00)
    assert rig.r(IIR) == 0x01                     # FIFOs off: bits 7:6 clear


def test_thre_rearm_as_serial8250_do_startup_tests_it(rig):
    rig.w(IER, 0x02)
    iir1 = rig.r(IIR)
    rig.w(IER, 0)
    rig.w(IER, 0x02)
    iir2 = rig.r(IIR)
    rig.w(IER, 0)
    assert iir1 & 0x0F == 0x02 and iir2 & 0x0F == 0x02    # re-asserted: no UART_BUG_THRE
    rig.w(IER, 0x02)
    assert rig.r(IIR) & 0x0F == 0x02
    assert rig.r(IIR) & 0x0F == 0x01              # acknowledged by the first read
    rig.w(THR, ord("x"))                          # the byte leaves: THR empty again
    assert rig.r(IIR) & 0x0F == 0x02
    assert rig.out == b"x"
    lsr = rig.r(LSR)
    assert lsr & 0x60 == 0x60                     # THRE and TEMT


def test_thr_writes_raise_a_bounded_number_of_edges(rig):
    rig.w(MCR, 0x08)                              # OUT2: interrupts reach the PIC
    rig.w(IER, 0x02)
    assert rig.irqs == [4]
    for _ in range(1000):
        rig.w(THR, 0x41)
    assert rig.irqs == [4]                        # the output stayed high: no new edge
    assert bytes(rig.out) == b"A" * 1000
    # an interrupt handler's pattern: IIR read (acknowledge) then a burst of 16 bytes
    for _ in range(10):
        assert rig.r(IIR) & 0x0F == 0x02
        for _ in range(16):
            rig.w(THR, 0x42)
    assert len(rig.irqs) == 11                    # one edge per acknowledged burst
    rig.w(IER, 0)                                 # stop_tx: no further interrupts
    rig.w(THR, 0x43)
    assert rig.r(IIR) & 0x0F == 0x01
    assert len(rig.irqs) == 11


def test_out2_gates_the_interrupt_line(rig):
    rig.w(IER, 0x02)
    assert rig.irqs == []                         # pending, but OUT2 is low
    assert rig.r(IIR) & 0x0F == 0x02              # ... and still reported
    rig.w(IER, 0)
    rig.w(IER, 0x02)
    rig.w(MCR, 0x08)
    assert rig.irqs == [4]
    rig.w(MCR, 0x18)                              # loopback disconnects the output too
    rig.r(IIR)
    rig.w(IER, 0)
    rig.w(IER, 0x02)
    assert rig.irqs == [4]


def test_receive_data_interrupt_and_rts_flow_control(rig):
    rig.w(MCR, 0x08)                              # OUT2, RTS low
    rig.w(IER, 0x01)
    rig.uart.feed(b"hi")
    assert rig.r(LSR) & 0x01 == 0                 # held back until the guest raises RTS
    assert rig.uart.has_unread_input and not rig.uart.accepting_input
    rig.w(MCR, 0x0A)
    assert rig.irqs == [4]
    assert rig.r(IIR) == 0x04
    assert rig.r(RBR) == ord("h")
    assert rig.r(RBR) == ord("i")
    assert rig.r(IIR) == 0x01
    assert not rig.uart.has_unread_input


def test_ten_kilobytes_of_input_are_never_lost(rig):
    data = bytes((i * 7 + i // 256) & 0xFF for i in range(10240))
    rig.w(FCR, 0xC1)
    rig.w(MCR, 0x0B)                              # DTR, RTS, OUT2
    rig.uart.feed(data[:5000])
    rig.uart.feed(data[5000:])
    got = bytearray()
    while rig.r(LSR) & 0x01:
        got.append(rig.r(RBR))
    assert bytes(got) == data
    assert rig.r(LSR) & 0x02 == 0                 # host input never overruns


def test_rx_fifo_holds_at_most_16_bytes(rig):
    rig.w(FCR, 0x01)
    rig.w(MCR, 0x02)
    rig.uart.feed(bytes(range(40)))
    assert len(rig.uart.registers.rx_fifo) == 16
    rig.w(FCR, 0x03)                              # clear RX: refilled from waiting input
    assert rig.r(RBR) == 16


def test_divisor_latch_does_not_disturb_ier_or_thr(rig):
    rig.w(IER, 0x05)
    rig.w(LCR, 0x83)
    rig.w(DLL, 0x01)
    rig.w(DLM, 0x00)
    assert (rig.r(DLL), rig.r(DLM)) == (0x01, 0x00)
    rig.w(LCR, 0x03)
    assert rig.r(IER) == 0x05
    assert rig.r(LCR) == 0x03
    assert rig.out == b""


def test_msr_reports_a_connected_terminal_outside_loopback(rig):
    assert rig.r(MSR) == 0xB0                     # DCD, DSR, CTS; no deltas
