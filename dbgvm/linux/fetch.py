"""Getting Debian 12's i386 kernel, its headers and busybox with apt; building the initramfs.

The kernel is the newest ``linux-image-6.1.0-<abi>-686-unsigned`` the apt lists offer (the
ABI number is never written down here: Debian bumps it with security updates and removes the
old packages), busybox is ``busybox-static``. Only the files needed are taken out of the
packages, into ``$XDG_CACHE_HOME/dbgvm/linux/``: the bzImage, the in-tree modules that mount
an ext4 image (KERNEL_MODULES), busybox, and the kernel's header tree, against which dbgvm's
own drivers are built (modules.py). Once there, fetching again costs nothing unless a newer
kernel is asked for. Every problem is a one-line :class:`FetchError`.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .initramfs import InitramfsError, build_initramfs
from .kernel_modules import KERNEL_MODULES, ModuleOrderError, check_order
from .modules import KernelHeaders, ModuleBuildError, build_modules

KERNEL_SEARCH = r"^linux-image-6\.1\.0-[0-9]+-686-unsigned$"
_KERNEL_NAME = re.compile(r"linux-image-(6\.1\.0-([0-9]+)-686)-unsigned")
BUSYBOX_PACKAGE = "busybox-static"
ARCH = "i386"
# the headers of the 686 flavour include the -common tree; linux-kbuild holds the host tools
# (modpost, fixdep), hence the host's own architecture
HEADER_PACKAGES = ("linux-headers-{release}:i386", "linux-headers-6.1.0-{abi}-common",
                   "linux-kbuild-6.1")
IDENTITY = "dbgvm-packages"     # in the header tree: the package files it was made of

Log = Callable[[str], None]


class FetchError(Exception):
    """The kernel or busybox cannot be had; the message is one line."""


@dataclass(frozen=True)
class LinuxFiles:
    """What `dbgvm linux fetch` provides."""
    kernel: Path              # the bzImage
    initrd: Path              # the busybox initramfs (gzip'd newc cpio) with the modules
    busybox: Path
    release: str              # e.g. "6.1.0-50-686"
    headers: KernelHeaders | None = None


def cache_dir() -> Path:
    """Where the files are kept: ``$XDG_CACHE_HOME/dbgvm/linux``, ~/.cache by default."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dbgvm" / "linux"


def newest_kernel_package(search_output: str) -> str | None:
    """The package with the highest ABI number among `apt-cache search` result lines."""
    found = []
    for line in search_output.splitlines():
        match = _KERNEL_NAME.fullmatch(line.split(" - ", 1)[0].strip())
        if match:
            found.append((int(match.group(2)), match.group(0)))
    return max(found)[1] if found else None


def kernel_release(package: str) -> str:
    """``linux-image-6.1.0-50-686-unsigned`` → ``6.1.0-50-686``."""
    match = _KERNEL_NAME.fullmatch(package)
    if match is None:
        raise FetchError(f"{package}: not a Debian 6.1 686 kernel package name")
    return match.group(1)


def cached(cache: Path) -> tuple[Path, str] | None:
    """The newest kernel in the cache and its release, if busybox is there too."""
    if not (cache / "busybox").is_file():
        return None
    kernels = []
    for path in cache.glob("vmlinuz-6.1.0-*-686"):
        match = re.fullmatch(r"vmlinuz-(6\.1\.0-([0-9]+)-686)", path.name)
        if match:
            kernels.append((int(match.group(2)), path, match.group(1)))
    return max(kernels)[1:] if kernels else None


def fetch(log: Log, *, update: bool = False) -> LinuxFiles:
    """The kernel, its headers and modules, and the initramfs, from the cache or (when
    absent, or ``update``) from apt."""
    cache = cache_dir()
    found = None if update else cached(cache)
    apt_ready = False
    if found is None:
        cache.mkdir(parents=True, exist_ok=True)
        _prepare_apt(log)
        apt_ready = True
        package = newest_kernel_package(_run(["apt-cache", "search", "--names-only",
                                              KERNEL_SEARCH]))
        if package is None:
            raise FetchError(f"no package matching {KERNEL_SEARCH} in the apt lists (a Debian "
                             f"12 bookworm source with i386 is needed)")
        release = kernel_release(package)
        _take(package, {f"./boot/vmlinuz-{release}": cache / f"vmlinuz-{release}"}, cache, log)
        _take(BUSYBOX_PACKAGE, {"./bin/busybox": cache / "busybox"}, cache, log)
        found = (cache / f"vmlinuz-{release}", release)
    kernel, release = found
    modules_dir = cache / f"modules-{release}"
    headers_dir = cache / f"headers-{release}"
    if not (modules_dir.is_dir() and headers_dir.is_dir()) and not apt_ready:
        _prepare_apt(log)
    if not modules_dir.is_dir():
        _take_kernel_modules(release, modules_dir, cache, log)
    if not headers_dir.is_dir():
        _take_headers(release, headers_dir, cache, log)
    headers = KernelHeaders(headers_dir, release, (headers_dir / IDENTITY).read_text())
    try:
        drivers = build_modules(headers, cache, log)
    except ModuleBuildError as exc:
        raise FetchError("\n".join(filter(None, (str(exc), exc.output)))) from None
    modules = [(path.stem, (modules_dir / path.name).read_bytes())
               for path in map(Path, KERNEL_MODULES)] + drivers.ordered()
    initrd = cache / f"initrd-{release}.img"
    try:
        image = build_initramfs(cache / "busybox", modules)
    except InitramfsError as exc:
        raise FetchError(str(exc)) from None
    if not initrd.is_file() or initrd.read_bytes() != image:
        log(f"building {initrd}")
        _write(initrd, image)
    return LinuxFiles(kernel, initrd, cache / "busybox", release, headers)


def _prepare_apt(log: Log) -> None:
    _enable_i386(log)
    _apt_update(log)


def _take_kernel_modules(release: str, directory: Path, cache: Path, log: Log) -> None:
    """The in-tree modules init loads (KERNEL_MODULES), from the kernel's package."""
    with tempfile.TemporaryDirectory(dir=cache, prefix="modules-") as tmp:
        staged = Path(tmp) / "modules"
        staged.mkdir()
        base = f"./lib/modules/{release}/kernel/"
        _take(f"linux-image-{release}-unsigned",
              {base + path: staged / Path(path).name for path in KERNEL_MODULES}, cache, log)
        try:
            check_order([staged / Path(path).name for path in KERNEL_MODULES])
        except ModuleOrderError as exc:
            raise FetchError(str(exc)) from None
        staged.replace(directory)


def _take_headers(release: str, directory: Path, cache: Path, log: Log) -> None:
    """The header tree modules are built against: the three packages extracted into one
    tree (their relative symlinks then resolve), the flavour's Makefile pointed at the
    extracted -common tree instead of /usr/src."""
    abi = release.split("-")[1]
    with tempfile.TemporaryDirectory(dir=cache, prefix="headers-") as tmp:
        staged = Path(tmp) / "tree"
        names = []
        for package in HEADER_PACKAGES:
            deb = _download(package.format(release=release, abi=abi), Path(tmp), log)
            _run(["dpkg-deb", "-x", str(deb), str(staged)])
            names.append(deb.name)
        makefile = staged / "usr" / "src" / f"linux-headers-{release}" / "Makefile"
        common = f"/usr/src/linux-headers-6.1.0-{abi}-common/"
        try:
            text = makefile.read_text()
        except OSError as exc:
            raise FetchError(f"{makefile.name} of linux-headers-{release}: "
                             f"{exc.strerror}") from None
        if common not in text:
            raise FetchError(f"linux-headers-{release}: its Makefile does not include "
                             f"{common}")
        # the tree's final place: the rewritten path must hold after the rename below
        makefile.write_text(text.replace(common, f"{directory}{common}"))
        (staged / IDENTITY).write_text(" ".join(names))
        staged.replace(directory)


def _privileged(command: list[str]) -> list[str] | None:
    """``command`` as root: as is when we are root, through sudo when it needs no password."""
    if os.geteuid() == 0:
        return command
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"],
                                               capture_output=True).returncode == 0:
        return ["sudo", "-n", *command]
    return None


def _run(command: list[str], cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise FetchError(f"{command[0]} not found: fetching needs Debian's apt and "
                         f"dpkg") from None
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        raise FetchError(f"{' '.join(command)}: {detail}")
    return proc.stdout


def _enable_i386(log: Log) -> None:
    native = _run(["dpkg", "--print-architecture"]).split()
    foreign = _run(["dpkg", "--print-foreign-architectures"]).split()
    if ARCH in native + foreign:
        return
    command = _privileged(["dpkg", "--add-architecture", ARCH])
    if command is None:
        raise FetchError(f"apt does not offer {ARCH} packages and enabling them needs root: "
                         f"run `sudo dpkg --add-architecture {ARCH} && sudo apt-get update`, "
                         f"then fetch again")
    log(f"enabling {ARCH} packages: {' '.join(command)}")
    _run(command)


def _apt_update(log: Log) -> None:
    """Refresh the package lists. A failure is only reported: some index files may fail
    while a mirror syncs ('File has unexpected size'), and the lists already there may
    well hold the packages; the search afterwards decides."""
    command = _privileged(["apt-get", "update"])
    if command is None:
        log("not root and no password-less sudo: using the apt lists as they are")
        return
    log(f"updating the package lists: {' '.join(command)}")
    try:
        _run(command)
    except FetchError as exc:
        log(f"warning: {exc}")


def _download(package: str, directory: Path, log: Log) -> Path:
    """``apt-get download`` ``package`` (``name`` or ``name:arch``) into ``directory``."""
    before = set(directory.glob("*.deb"))
    log(f"downloading {package}")
    _run(["apt-get", "download", package], cwd=directory)
    debs = sorted(set(directory.glob("*.deb")) - before)
    if len(debs) != 1:
        raise FetchError(f"apt-get download {package} gave {len(debs)} files")
    return debs[0]


def _take(package: str, members: dict[str, Path], cache: Path, log: Log) -> None:
    """Download ``package`` for i386 and copy the named files out of it."""
    with tempfile.TemporaryDirectory(dir=cache, prefix="download-") as tmp:
        deb = _download(f"{package}:{ARCH}", Path(tmp), log)
        log(f"extracting {len(members)} files from {deb.name}" if len(members) > 3 else
            f"extracting {', '.join(m.lstrip('./') for m in members)} from {deb.name}")
        wanted = dict(members)
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)],
                              stdout=subprocess.PIPE) as proc:
            assert proc.stdout is not None
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for info in tar:
                    if info.isfile() and info.name in wanted:
                        member = tar.extractfile(info)
                        assert member is not None
                        _write(wanted.pop(info.name), member.read())
            proc.stdout.read()
        if proc.returncode != 0:
            raise FetchError(f"{deb.name}: dpkg-deb cannot read it")
        if wanted:
            raise FetchError(f"{deb.name}: has no {', '.join(wanted)}")


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` whole, so that an interrupted fetch leaves no half file behind."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
