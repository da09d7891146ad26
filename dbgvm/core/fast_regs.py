"""Register access through Unicorn's C API with preallocated buffers.

The Python binding's reg_read/reg_write pick a register class and allocate a ctypes object on
every call (~1.5 us); the trap path reads and writes a handful of 32-bit registers per trap, so
it goes straight to ``uc_reg_read``/``uc_reg_write`` (~0.4 us).
"""
from __future__ import annotations

import ctypes

from unicorn import Uc
from unicorn.unicorn_py3.unicorn import uclib


class FastRegisters:
    """32-bit general registers, EIP, EFLAGS and segment selectors of one engine."""

    def __init__(self, uc: Uc) -> None:
        self._handle = uc._uch
        self._buf = ctypes.c_uint64(0)
        self._ref = ctypes.byref(self._buf)
        self._read = uclib.uc_reg_read
        self._write = uclib.uc_reg_write

    def read(self, reg: int) -> int:
        self._buf.value = 0
        if self._read(self._handle, reg, self._ref):
            raise ValueError(f"cannot read Unicorn register {reg}")
        return self._buf.value & 0xFFFFFFFF

    def write(self, reg: int, value: int) -> None:
        self._buf.value = value & 0xFFFFFFFF
        if self._write(self._handle, reg, self._ref):
            raise ValueError(f"cannot write Unicorn register {reg}")
