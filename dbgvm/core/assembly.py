"""Building a machine: the one place that creates the devices every machine has and puts them
on its buses.

The Machine (machine.py) is the run loop and the VMM; like Firecracker's VMM core it
creates no device. ``build_machine`` creates the devices of the PC motherboard minimum every
guest here gets (the 8259 pair, the 8254 and port 0x61, the virtual clock and the input queue
that are their time base and outside input, the hypercall bus) and, once the machine exists,
registers them on its port bus together with the two debug ports, whose effects (console
output, the end of a run) are the machine's. A board's PC devices (dbgvm/board/board.py) and
the HAL's (dbgvm/domains.py) are added to the machine this returns, the same way.
"""
from __future__ import annotations

from collections.abc import Callable

from .clock import VirtualClock
from .debug_ports import CONSOLE_PORT, EXIT_PORT, DebugConsole, DebugExit
from .hypercalls import HypercallBus
from .inputs import InputQueue
from .machine import DEFAULT_RAM_MB, Machine
from .pic import MASTER_PORTS, SLAVE_PORTS, Pic
from .pit import PIT_PORTS, SYSTEM_CONTROL_PORT, Pit
from .port_bus import PortBus


def _port(port: int) -> range:
    return range(port, port + 1)


def build_machine(ram_mb: int = DEFAULT_RAM_MB,
                  console: Callable[[bytes], None] | None = None) -> Machine:
    """A machine with ``ram_mb`` MiB of RAM and the core devices on its port bus.
    ``console`` receives what the guest writes to the debug console (port 0xE9); without
    one it collects in ``machine.console_output``."""
    clock = VirtualClock()
    inputs = InputQueue()
    pic = Pic()
    pit = Pit(clock.now, pic.raise_irq)         # IRQ 0 straight to the 8259
    clock.add_timer(pit)
    clock.add_timer(inputs)                     # inputs scheduled by a replay
    ports = PortBus()
    machine = Machine(ram_mb, clock=clock, inputs=inputs, pic=pic, pit=pit, ports=ports,
                      hypercalls=HypercallBus())
    # virtual time counts the instructions the machine's run loop retires
    clock.count_instructions_of(machine.current_icount)
    ports.register(MASTER_PORTS, pic)
    ports.register(SLAVE_PORTS, pic)
    ports.register(PIT_PORTS, pit)
    ports.register(_port(SYSTEM_CONTROL_PORT), pit)
    ports.register(_port(CONSOLE_PORT), DebugConsole(console or machine.console_output.extend))
    ports.register(_port(EXIT_PORT), DebugExit(machine.end_run))
    return machine
