"""The kernel's own modules the initramfs carries: what mounting an ext4 (or ext2) image needs.

Debian builds ext4 as a module (CONFIG_EXT4_FS=m, which also serves ext2:
CONFIG_EXT4_USE_FOR_EXT2) with its dependencies as modules too. The package carries no
modules.dep (depmod writes it when the package is installed), and the initramfs has no
modprobe: the list below is in load order, and fetching checks it against each module's own
``depends=`` field, so that a new kernel that needs another module is a clear error rather
than an ext4 that fails to load in the guest.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

# paths below /lib/modules/<release>/kernel/, in the order init loads them
KERNEL_MODULES = (
    "lib/crc16.ko",
    # ext4 and jbd2 ask the crypto API for "crc32c" (softdep pre: crypto-crc32c); without
    # modprobe in the initramfs the algorithm must be there before they load
    "crypto/crc32c_generic.ko",
    "fs/mbcache.ko",
    "fs/jbd2/jbd2.ko",
    "fs/ext4/ext4.ko",
)


class ModuleOrderError(Exception):
    """A module needs one that is not loaded before it; the message is one line."""


def modinfo(path: Path) -> dict[str, str]:
    """The ``key=value`` strings of a module's .modinfo section (the last of each key)."""
    try:
        with path.open("rb") as stream:
            section = ELFFile(stream).get_section_by_name(".modinfo")
            data = section.data() if section is not None else b""
    except (OSError, ELFError) as exc:
        raise ModuleOrderError(f"{path.name}: not a readable kernel module ({exc})") from None
    fields = {}
    for item in data.split(b"\0"):
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep:
            fields[key] = value
    return fields


def check_order(paths: Sequence[Path]) -> None:
    """Each module's dependencies are earlier in ``paths``."""
    loaded: set[str] = set()
    for path in paths:
        info = modinfo(path)
        missing = [name for name in filter(None, info.get("depends", "").split(","))
                   if name not in loaded]
        if missing:
            raise ModuleOrderError(f"{path.name} needs {', '.join(missing)} loaded before "
                                   f"it: add it to KERNEL_MODULES in {__name__}")
        loaded.add(info.get("name", path.stem).replace("-", "_"))
