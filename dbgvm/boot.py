"""What a run boots: a Linux kernel on a PC board, or a Multiboot/ELF kernel on the core alone.

One place decides, for `dbgvm run` and for a replay of a recorded run alike, so that both build
the same machine from the same kernel, command line and initrd.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .board.board import Board
from .core.loader import BootImage, LoadError, Module, load
from .linux.boot import is_linux_kernel, load_linux
from .linux.panic import PanicPoints
from .linux.syscalls import I386_SYSCALLS


@dataclass(frozen=True)
class Boot:
    """The image to load, the PC board a Linux kernel needs (None: the core's devices only)
    and, for Linux, one line saying what boots (the final command line included)."""

    image: BootImage
    board: Board | None
    banner: str | None
    syscall_names: Mapping[int, str] = field(default_factory=dict)   # for `syscall` events
    panic_points: PanicPoints | None = None       # Linux: where it panics or oopses


def prepare_boot(kernel: str, append: str, modules: tuple[Module, ...], ram_mb: int,
                 boot_decompressor: bool = False, data: bytes | None = None) -> Boot:
    """Lay out ``kernel`` (its bytes are ``data`` when given: a replay's kernel is carried by
    its trace, and ``kernel`` is then only its recorded name). Raises LoadError."""
    if is_linux_kernel(kernel, data):
        if len(modules) > 1:
            raise LoadError("Linux takes one --initrd (concatenate cpio archives into one)")
        initrd = modules[0] if modules else None
        linux = load_linux(kernel, ram_mb << 20, append, initrd.data if initrd else None,
                           initrd_name=initrd.path if initrd else "initrd",
                           boot_decompressor=boot_decompressor, data=data)
        return Boot(linux.image, Board(), linux.describe(), I386_SYSCALLS,
                    PanicPoints.of(linux.image.symbols))
    if boot_decompressor:
        raise LoadError(f"{kernel}: --boot-decompressor needs a Linux bzImage")
    return Boot(load(kernel, ram_mb << 20, append, modules, data=data), None, None)
