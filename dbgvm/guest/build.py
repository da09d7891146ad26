"""Build the bundled guest kernel on demand with the system toolchain, and cache it.

``bundled_kernel()`` compiles ``src/*.c`` with ``gcc -m32 -ffreestanding ...``, assembles
``src/*.S`` with ``as --32`` and links with ``ld -m elf_i386 -T src/link.ld``. The result is
cached in ``${XDG_CACHE_HOME:-~/.cache}/dbgvm/guest/<key>/kernel.elf`` where the key hashes
every source file, the flags and the tools' versions; a build happens in a private temporary
directory and lands with an atomic rename, so concurrent builds are safe.

The build is reproducible: the same sources, flags and tools give the same bytes whatever the
checkout's path and the build directory. The tools run in the source directory on relative
file names, and the debug information names the source directory ``/dbgvm-guest-src``
(``SOURCE_PREFIX``) instead of its real path; ``gdb_source_map()`` gives the gdb command that
points that name at this checkout's sources. Nothing else varies: no timestamps, no build-id
(ld adds none unless asked), no archive.
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE_DIR = Path(__file__).parent / "src"
SOURCE_PREFIX = "/dbgvm-guest-src"      # the source directory's name in the debug information
C_SOURCES = ("kernel.c", "hal.c", "net.c", "fs.c", "shell.c", "ulib.c")
ASM_SOURCES = ("entry.S", "ustack.S")
LINKER_SCRIPT = "link.ld"

CC = "gcc"
AS = "as"
LD = "ld"
CFLAGS = ("-m32", "-march=i686", "-ffreestanding", "-fno-pic", "-fno-pie", "-fno-stack-protector",
          "-nostdlib", "-O2", "-g", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
          "-Wno-implicit-fallthrough", "-mgeneral-regs-only", "-mno-red-zone",
          "-fno-omit-frame-pointer", "-fno-asynchronous-unwind-tables",
          "-fno-tree-loop-distribute-patterns", "-fcf-protection=none",
          "-fno-merge-constants")   # ld would merge the shell's strings into kernel pages
ASFLAGS = ("--32", "-g")
LDFLAGS = ("-m", "elf_i386", "-nostdlib", "-z", "noexecstack", "-z", "max-page-size=4096")


class GuestBuildError(RuntimeError):
    """The bundled guest cannot be built; the message is one line naming the cause."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dbgvm" / "guest"


def sources() -> list[Path]:
    """Every file the kernel is built from (sources, headers, linker script)."""
    return sorted(p for p in SOURCE_DIR.iterdir() if p.suffix in (".c", ".h", ".S", ".ld"))


@functools.lru_cache(maxsize=None)
def _tool_version(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise GuestBuildError(f"cannot build the bundled guest: '{tool}' not found on PATH "
                              "(install gcc and binutils, e.g. apt-get install gcc binutils)")
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise GuestBuildError(f"cannot build the bundled guest: '{tool}' does not run: "
                              f"{exc}") from None
    first = (proc.stdout or proc.stderr).splitlines()
    return f"{path}: {first[0] if first else ''}"


def cache_key() -> str:
    digest = hashlib.sha256()
    for tool in (CC, AS, LD):
        digest.update(_tool_version(tool).encode() + b"\0")
    for flags in (CFLAGS, ASFLAGS, LDFLAGS):
        digest.update(" ".join(flags).encode() + b"\0")
    # the prefix the debug information names the sources by is part of the build too (a
    # cache built without it named one checkout's absolute path)
    digest.update(SOURCE_PREFIX.encode() + b"\0")
    for path in sources():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def gdb_source_map(source_dir: Path | None = None) -> str:
    """The gdb command that finds the bundled guest's sources in this checkout."""
    return f"set substitute-path {SOURCE_PREFIX} {(source_dir or SOURCE_DIR).resolve()}"


def _run(argv: list[str], what: str) -> None:
    try:
        # in the source directory, on relative names: no path of this checkout gets in
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                              cwd=SOURCE_DIR.resolve(),
                              env={**os.environ, "LC_ALL": "C", "PWD": str(SOURCE_DIR.resolve())})
    except (OSError, subprocess.SubprocessError) as exc:
        raise GuestBuildError(f"cannot build the bundled guest: {what}: {exc}") from None
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()] or lines
        detail = errors[0].strip() if errors else f"exit status {proc.returncode}"
        raise GuestBuildError(f"cannot build the bundled guest: {what} failed: {detail}")


def build(out_dir: Path) -> Path:
    """Build the kernel into out_dir (objects beside it); returns out_dir/kernel.elf."""
    for tool in (CC, AS, LD):
        _tool_version(tool)
    out_dir = out_dir.resolve()
    source_dir = str(SOURCE_DIR.resolve())
    prefix_map = f"{source_dir}={SOURCE_PREFIX}"
    objects = []
    for name in C_SOURCES:
        obj = out_dir / (Path(name).stem + ".o")
        _run([CC, *CFLAGS, f"-ffile-prefix-map={prefix_map}", "-I", ".", "-c", name,
              "-o", str(obj)], f"{CC} {name}")
        objects.append(obj)
    for name in ASM_SOURCES:
        obj = out_dir / (Path(name).stem + ".o")
        _run([AS, *ASFLAGS, f"--debug-prefix-map={prefix_map}", "-I", ".", "-o", str(obj),
              name], f"{AS} {name}")
        objects.append(obj)
    kernel = out_dir / "kernel.elf"
    _run([LD, *LDFLAGS, "-T", LINKER_SCRIPT, "-o", str(kernel), *map(str, objects)],
         f"{LD} kernel.elf")
    return kernel


def bundled_kernel() -> Path:
    """Path of the bundled guest kernel, built now unless a cached build exists."""
    final = cache_root() / cache_key() / "kernel.elf"
    if final.is_file():
        return final
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="build-", dir=final.parent.parent) as tmp:
            kernel = build(Path(tmp))
            os.replace(kernel, final)       # atomic: a concurrent build lands the same bytes
    except OSError as exc:
        raise GuestBuildError(f"cannot build the bundled guest: {exc}") from None
    return final
