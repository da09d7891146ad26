"""The hypercall bus: how a VM-friendly guest kernel calls the host.

The instruction is ``vmcall`` (0F 01 C1). Unicorn raises #UD for it, so it reaches the VMM
through the invalid-instruction trap like any other emulated instruction; at virtual CPL 0 it is
handed, with EAX/EBX/ECX/EDX, to the one handler registered here (the HAL), at virtual CPL 3 or
with no handler the guest gets its #UD as on hardware without a hypervisor. The core gives the
call no meaning of its own.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

HYPERCALL_MNEMONIC = "vmcall"
HYPERCALL_SIZE = 3


@dataclass(frozen=True)
class HypercallArgs:
    eax: int
    ebx: int
    ecx: int
    edx: int


@dataclass(frozen=True)
class HypercallResult:
    """Registers the call returns; None leaves a register as the guest had it."""

    eax: int
    ebx: int | None = None
    ecx: int | None = None
    edx: int | None = None


Handler = Callable[[HypercallArgs], HypercallResult]


class HypercallBus:
    def __init__(self) -> None:
        self.handler: Handler | None = None

    def register(self, handler: Handler) -> None:
        if self.handler is not None:
            raise ValueError("a hypercall handler is already registered")
        self.handler = handler
