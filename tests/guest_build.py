"""Build the test guests from their sources with the system toolchain, cached by content.

Assembly guests: ``as --32`` then ``ld -m elf_i386`` with tests/guests/link.ld. The cache key is
a hash of every input (source, the shared include, the linker script), so editing any of them
rebuilds; nothing built is ever committed.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

GUESTS = Path(__file__).parent / "guests"
SHARED = ("common.inc", "link.ld")


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    path = base / "dbgvm" / "test-guests"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build(name: str) -> Path:
    """Path of the ELF built from tests/guests/NAME.S."""
    source = GUESTS / f"{name}.S"
    digest = hashlib.sha256()
    for path in (source, *(GUESTS / s for s in SHARED)):
        digest.update(path.read_bytes())
    out = cache_dir() / f"{name}-{digest.hexdigest()[:16]}.elf"
    if out.exists():
        return out
    obj = out.with_suffix(f".{os.getpid()}.o")     # builds in parallel processes never mix
    subprocess.run(["as", "--32", "-I", str(GUESTS), "-o", str(obj), str(source)], check=True,
                   capture_output=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    subprocess.run(["ld", "-m", "elf_i386", "--no-warn-rwx-segments", "-T",
                    str(GUESTS / "link.ld"), "-o", str(tmp), str(obj)], check=True,
                   capture_output=True)
    tmp.rename(out)
    obj.unlink()
    return out


LINUX_PROGRAMS = GUESTS / "linux"
LINUX_TEXT = "0x06000000"       # away from where static busybox and the vDSO are mapped
LINUX_LINK = ["ld", "-m", "elf_i386", "-static", "--build-id=none",
              f"-Ttext-segment={LINUX_TEXT}"]


def build_linux_program(name: str) -> Path:
    """Path of the static i386 Linux program built from tests/guests/linux/NAME.S (no libc:
    ``as --32``, then ``ld -m elf_i386 -static`` with ld's default script). Cached by the
    hash of the source and the link command, like the test guests."""
    source = LINUX_PROGRAMS / f"{name}.S"
    digest = hashlib.sha256(source.read_bytes())
    digest.update(" ".join(LINUX_LINK).encode())
    out = cache_dir() / f"linux-{name}-{digest.hexdigest()[:16]}"
    if out.exists():
        return out
    obj = out.with_suffix(f".{os.getpid()}.o")     # builds in parallel processes never mix
    subprocess.run(["as", "--32", "-o", str(obj), str(source)], check=True,
                   capture_output=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    subprocess.run([*LINUX_LINK, "-o", str(tmp), str(obj)], check=True, capture_output=True)
    tmp.rename(out)
    obj.unlink()
    return out
