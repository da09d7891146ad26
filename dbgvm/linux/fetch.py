"""Getting Debian 12's i386 kernel and busybox with apt, and building the initramfs.

The kernel is the newest ``linux-image-6.1.0-<abi>-686-unsigned`` the apt lists offer (the
ABI number is never written down here: Debian bumps it with security updates and removes the
old packages), busybox is ``busybox-static``. Only the two files needed are taken out of the
packages, into ``$XDG_CACHE_HOME/dbgvm/linux/``; once there, fetching again costs nothing
unless a newer kernel is asked for. Every problem is a one-line :class:`FetchError`.
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

KERNEL_SEARCH = r"^linux-image-6\.1\.0-[0-9]+-686-unsigned$"
_KERNEL_NAME = re.compile(r"linux-image-(6\.1\.0-([0-9]+)-686)-unsigned")
BUSYBOX_PACKAGE = "busybox-static"
ARCH = "i386"
INITRD_NAME = "initrd-busybox.img"

Log = Callable[[str], None]


class FetchError(Exception):
    """The kernel or busybox cannot be had; the message is one line."""


@dataclass(frozen=True)
class LinuxFiles:
    """What `dbgvm linux fetch` provides."""
    kernel: Path              # the bzImage
    initrd: Path              # the busybox initramfs (gzip'd newc cpio)
    busybox: Path
    release: str              # e.g. "6.1.0-50-686"


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
    """The kernel and initramfs, from the cache or (when absent, or ``update``) from apt."""
    cache = cache_dir()
    found = None if update else cached(cache)
    if found is None:
        cache.mkdir(parents=True, exist_ok=True)
        _enable_i386(log)
        _apt_update(log)
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
    initrd = cache / INITRD_NAME
    try:
        image = build_initramfs(cache / "busybox")
    except InitramfsError as exc:
        raise FetchError(str(exc)) from None
    if not initrd.is_file() or initrd.read_bytes() != image:
        log(f"building {initrd}")
        _write(initrd, image)
    return LinuxFiles(kernel, initrd, cache / "busybox", release)


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


def _take(package: str, members: dict[str, Path], cache: Path, log: Log) -> None:
    """Download ``package`` for i386 and copy the named files out of it."""
    with tempfile.TemporaryDirectory(dir=cache, prefix="download-") as tmp:
        log(f"downloading {package}:{ARCH}")
        _run(["apt-get", "download", f"{package}:{ARCH}"], cwd=Path(tmp))
        debs = sorted(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise FetchError(f"apt-get download {package}:{ARCH} gave {len(debs)} files")
        log(f"extracting {', '.join(m.lstrip('./') for m in members)} from {debs[0].name}")
        wanted = dict(members)
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[0])],
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
            raise FetchError(f"{debs[0].name}: dpkg-deb cannot read it")
        if wanted:
            raise FetchError(f"{debs[0].name}: has no {', '.join(wanted)}")


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` whole, so that an interrupted fetch leaves no half file behind."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
