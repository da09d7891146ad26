"""The bundled VM-friendly guest kernel (C and assembly in ``src/``, docs/guest.md).

``bundled_kernel()`` returns the path of the kernel ELF, building it on demand with the system
gcc/as/ld and caching it; it raises :class:`GuestBuildError` (one-line message) when it cannot.
"""
from .build import GuestBuildError, bundled_kernel

__all__ = ["GuestBuildError", "bundled_kernel"]
