"""Register access through Unicorn's C API with preallocated buffers.

The Python binding's reg_read/reg_write pick a register class and allocate a ctypes object on
every call (~1.5 us); the trap path reads and writes a handful of 32-bit registers per trap, so
it goes straight to ``uc_reg_read``/``uc_reg_write``. Through function pointers of its own
that declare no argument types (every argument is passed ready-made: the engine handle as a
``c_void_p``, the register number as a plain int, the buffer by reference), a call costs
~0.3 us against ~0.55 us through the binding's prototypes, whose argument conversion
(``from_param``) is half the cost.
"""
from __future__ import annotations

import ctypes

from unicorn import Uc
from unicorn.unicorn_py3.unicorn import uclib

_lib = ctypes.CDLL(uclib._name)
_reg_read = _lib.uc_reg_read        # no argtypes: see the module doc
_reg_write = _lib.uc_reg_write


class FastRegisters:
    """32-bit general registers, EIP, EFLAGS, CR2 and segment selectors of one engine."""

    def __init__(self, uc: Uc) -> None:
        self._handle = ctypes.c_void_p(ctypes.cast(uc._uch, ctypes.c_void_p).value)
        self._buf = ctypes.c_uint64(0)
        self._ref = ctypes.byref(self._buf)

    def read(self, reg: int) -> int:
        self._buf.value = 0       # a selector fills only 2 bytes of it
        if _reg_read(self._handle, reg, self._ref):
            raise ValueError(f"cannot read Unicorn register {reg}")
        return self._buf.value & 0xFFFFFFFF

    def write(self, reg: int, value: int) -> None:
        self._buf.value = value & 0xFFFFFFFF
        if _reg_write(self._handle, reg, self._ref):
            raise ValueError(f"cannot write Unicorn register {reg}")
