"""Building dbgvm's own Linux drivers (``drivers/*.c``) as modules of the booted kernel.

Every ``.c`` in ``drivers/`` is one module (the Kbuild file says so with a wildcard), built with
the host's gcc against the Debian headers `dbgvm linux fetch` extracted. Builds are cached
under a key made of the sources, the headers' package versions and the compiler's version, so
a second build costs nothing. The result is reproducible: the same sources give the same
``.ko`` bytes from any checkout and any cache path (sources are copied into a build directory
whose paths are mapped away with ``-ffile-prefix-map``, and debug information is stripped),
which keeps the initramfs reproducible too.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

# gcc as the Debian headers call it (.kernelvariables: CC = gcc-12): the kernel's own compiler
COMPILER = "gcc-12"
# the order init loads the HAL drivers in (console first: its messages then show on hvc0);
# drivers not named here follow in name order
LOAD_ORDER = ("hal_console", "hal_blk", "hal_net")
_SOURCE_SUFFIXES = (".c", ".h")
_KBUILD = "Kbuild"
# what the compiler and kbuild see instead of the real paths, so that they leave no trace
_MAPPED_BUILD = "dbgvm-drivers"
_MAPPED_HEADERS = "/"


class ModuleBuildError(Exception):
    """The drivers did not build; ``args[0]`` is one line, ``output`` what the compiler said."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


@dataclass(frozen=True)
class KernelHeaders:
    """An extracted Debian header tree (the -686, -common and linux-kbuild packages)."""
    root: Path          # the extraction root: usr/src/..., usr/lib/linux-kbuild-6.1
    release: str        # e.g. 6.1.0-50-686
    identity: str       # the package file names, versions included

    @property
    def build_dir(self) -> Path:
        """What ``make -C`` is given: the flavour's header directory."""
        return self.root / "usr" / "src" / f"linux-headers-{self.release}"


@dataclass(frozen=True)
class BuiltModules:
    directory: Path                 # the cache directory holding the .ko files
    modules: Mapping[str, bytes]    # module name (without .ko) to its bytes

    def ordered(self) -> list[tuple[str, bytes]]:
        """(name, bytes) in the order init loads the modules."""
        first = [name for name in LOAD_ORDER if name in self.modules]
        names = first + sorted(set(self.modules) - set(first))
        return [(name, self.modules[name]) for name in names]


def driver_sources() -> dict[str, bytes]:
    """The driver directory's sources and Kbuild, by file name."""
    sources = {}
    for item in resources.files(__package__).joinpath("drivers").iterdir():
        if item.is_file() and (item.name == _KBUILD or item.name.endswith(_SOURCE_SUFFIXES)):
            sources[item.name] = item.read_bytes()
    return sources


def compiler_version() -> str:
    try:
        proc = subprocess.run([COMPILER, "--version"], capture_output=True, text=True)
    except FileNotFoundError:
        raise ModuleBuildError(f"{COMPILER} not found: building the guest drivers needs the "
                               f"compiler Debian's kernel was built with (apt-get install "
                               f"{COMPILER} make)") from None
    return (proc.stdout.splitlines() or ["?"])[0]


def build_key(sources: Mapping[str, bytes], headers: KernelHeaders, compiler: str) -> str:
    digest = hashlib.sha256()
    for name in sorted(sources):
        digest.update(b"%d:%s\0%d:" % (len(name), name.encode(), len(sources[name])))
        digest.update(sources[name])
    digest.update(f"\0{headers.release}\0{headers.identity}\0{compiler}".encode())
    return digest.hexdigest()[:24]


def build_modules(headers: KernelHeaders, cache: Path,
                  log: Callable[[str], None] = lambda text: None) -> BuiltModules:
    """The drivers built for ``headers`` (from ``cache/drivers/<key>`` when built before)."""
    sources = driver_sources()
    key = build_key(sources, headers, compiler_version())
    done = cache / "drivers" / key
    if not done.is_dir():
        names = sorted(name[:-2] for name in sources if name.endswith(".c"))
        log(f"building the guest drivers {', '.join(names)} for Linux {headers.release}")
        done.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=done.parent, prefix="build-") as tmp:
            built = compile_modules(sources, headers, Path(tmp))
            staged = Path(tmp) / "out"
            staged.mkdir()
            for name, data in built.items():
                (staged / f"{name}.ko").write_bytes(data)
            staged.replace(done)
    modules = {path.stem: path.read_bytes() for path in sorted(done.glob("*.ko"))}
    return BuiltModules(done, modules)


def compile_modules(sources: Mapping[str, bytes], headers: KernelHeaders,
                    work: Path) -> dict[str, bytes]:
    """Build ``sources`` in ``work`` (any directory: its path leaves no trace in the
    result); the stripped modules by name."""
    build = work / _MAPPED_BUILD
    build.mkdir()
    for name, data in sources.items():
        (build / name).write_bytes(data)
    prefix_maps = (f"-ffile-prefix-map={build}={_MAPPED_BUILD} "
                   f"-ffile-prefix-map={headers.root}/={_MAPPED_HEADERS}")
    command = ["make", "-s", "-C", str(headers.build_dir), f"M={build}",
               f"KCFLAGS={prefix_maps}", "modules"]
    try:
        proc = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError:
        raise ModuleBuildError("make not found: building the guest drivers needs make and "
                               f"{COMPILER} (apt-get install make {COMPILER})") from None
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).replace(str(build) + "/", "")
        errors = [line for line in output.splitlines() if "error" in line.lower()]
        first = errors[0] if errors else "make failed"
        raise ModuleBuildError(f"building the guest drivers failed: {first}", output.strip())
    built = {}
    for name in sorted(n[:-2] for n in sources if n.endswith(".c")):
        module = build / f"{name}.ko"
        if not module.is_file():
            raise ModuleBuildError(f"building the guest drivers gave no {name}.ko")
        _strip(module)
        built[name] = module.read_bytes()
    return built


def _strip(module: Path) -> None:
    """Drop debug information (paths, and most of the size), as Debian strips its own."""
    tool = shutil.which("strip")
    if tool is None:
        raise ModuleBuildError("strip not found: building the guest drivers needs binutils")
    proc = subprocess.run([tool, "--strip-debug", str(module)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModuleBuildError(f"strip {module.name}: {proc.stderr.strip()}")
