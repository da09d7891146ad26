"""A cascaded pair of 8259A programmable interrupt controllers (edge-triggered).

Enough of the 8259A for PC kernels: ICW1-ICW4 initialisation, OCW1 masks, OCW2 non-specific
and specific EOI, OCW3 IRR/ISR reads, fixed priorities (IRQ 0 highest), auto-EOI, and the slave
cascaded on master IRQ 2.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

MASTER_PORTS = range(0x20, 0x22)
SLAVE_PORTS = range(0xA0, 0xA2)
CASCADE_LINE = 2


@dataclass(frozen=True)
class ChipState:
    """A saved Chip: the same fields."""

    irr: int
    isr: int
    imr: int
    vector_base: int
    init_step: int
    single: bool
    needs_icw4: bool
    auto_eoi: bool
    read_isr: bool


@dataclass(frozen=True)
class PicState:
    master: ChipState
    slave: ChipState


@dataclass
class Chip:
    """One 8259A. Fields mirror the chip's registers."""

    irr: int = 0
    isr: int = 0
    imr: int = 0xFF
    vector_base: int = 0
    init_step: int = 0      # 0: ready; 2, 3, 4: expecting ICW2, ICW3, ICW4
    single: bool = False
    needs_icw4: bool = False
    auto_eoi: bool = False
    read_isr: bool = False

    def save(self) -> ChipState:
        return ChipState(**vars(self))      # a field missing from ChipState fails here

    def restore(self, state: ChipState) -> None:
        for f in fields(state):
            setattr(self, f.name, getattr(state, f.name))

    def write_command(self, value: int) -> None:
        if value & 0x10:                         # ICW1
            self.imr = self.isr = self.irr = 0
            self.read_isr = False
            self.single = bool(value & 2)
            self.needs_icw4 = bool(value & 1)
            self.auto_eoi = False
            self.init_step = 2
        elif value & 0x08:                       # OCW3
            if value & 2:
                self.read_isr = bool(value & 1)
        else:                                    # OCW2
            command = value >> 5
            if command in (1, 5):                # non-specific EOI (optionally rotating)
                highest = self._highest(self.isr)
                if highest is not None:
                    self.isr &= ~(1 << highest)
            elif command in (3, 7):              # specific EOI
                self.isr &= ~(1 << (value & 7))

    def write_data(self, value: int) -> None:
        if self.init_step == 2:
            self.vector_base = value & 0xF8
            self.init_step = 0 if self.single and not self.needs_icw4 else (
                4 if self.single else 3)
        elif self.init_step == 3:
            self.init_step = 4 if self.needs_icw4 else 0
        elif self.init_step == 4:
            self.auto_eoi = bool(value & 2)
            self.init_step = 0
        else:
            self.imr = value

    def read_command(self) -> int:
        return self.isr if self.read_isr else self.irr

    @staticmethod
    def _highest(bits: int) -> int | None:
        for line in range(8):
            if bits & (1 << line):
                return line
        return None

    def pending_line(self) -> int | None:
        """The line that would interrupt now: requested, unmasked, above anything in service."""
        line = self._highest(self.irr & ~self.imr)
        if line is None:
            return None
        in_service = self._highest(self.isr)
        if in_service is not None and in_service <= line:
            return None
        return line

    def acknowledge(self, line: int) -> int:
        self.irr &= ~(1 << line)
        if not self.auto_eoi:
            self.isr |= 1 << line
        return self.vector_base + line


class Pic:
    """The master/slave pair, as a port device and as the interrupt source of the CPU."""

    def __init__(self) -> None:
        self.master = Chip()
        self.slave = Chip()

    def save(self) -> PicState:
        return PicState(self.master.save(), self.slave.save())

    def restore(self, state: PicState) -> None:
        self.master.restore(state.master)
        self.slave.restore(state.slave)

    def _chip(self, port: int) -> Chip:
        return self.master if port in MASTER_PORTS else self.slave

    def port_read(self, port: int, size: int) -> int:
        chip = self._chip(port)
        return chip.read_command() if port & 1 == 0 else chip.imr

    def port_write(self, port: int, size: int, value: int) -> None:
        chip = self._chip(port)
        value &= 0xFF
        if port & 1 == 0:
            chip.write_command(value)
        else:
            chip.write_data(value)
        self._update_cascade()

    def raise_irq(self, line: int) -> None:
        """An edge on IRQ ``line`` (0-15)."""
        if line >= 8:
            self.slave.irr |= 1 << (line - 8)
            self._update_cascade()
        else:
            self.master.irr |= 1 << line

    def _update_cascade(self) -> None:
        if self.slave.pending_line() is not None:
            self.master.irr |= 1 << CASCADE_LINE
        else:
            self.master.irr &= ~(1 << CASCADE_LINE)

    def masked(self, line: int) -> bool:
        """Can an edge on ``line`` never reach the CPU under the current masks?"""
        if line >= 8:
            return bool(self.slave.imr & (1 << (line - 8))) or bool(
                self.master.imr & (1 << CASCADE_LINE))
        return bool(self.master.imr & (1 << line))

    def pending(self) -> bool:
        return self.master.pending_line() is not None

    def acknowledge(self) -> tuple[int, int] | None:
        """INTA: the (vector, IRQ line) to deliver now, or None."""
        line = self.master.pending_line()
        if line is None:
            return None
        if line == CASCADE_LINE:
            slave_line = self.slave.pending_line()
            self.master.acknowledge(line)
            if slave_line is None:
                return None
            vector = self.slave.acknowledge(slave_line)
            self._update_cascade()
            return vector, slave_line + 8
        return self.master.acknowledge(line), line
