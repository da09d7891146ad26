"""hal_blk, the Linux driver of the HAL block channel (/dev/halblk0): an ext2 image made on
the host with mkfs.ext2 is mounted, read and written by the real kernel.

Copy-on-write (`--disk`): what the guest reads is the host's files (their MD5 computed here,
never by dbgvm), what it writes it reads back after dropping its caches, and the image file
stays byte-identical. `--disk-writable` (with 1 GiB of RAM, so that the page cache is in high
memory): what the guest wrote is in the image afterwards, as e2fsprogs' debugfs reads it, and
e2fsck finds the file system clean.

Two Linux boots, one per mode, each through `dbgvm run --batch` with the commands on stdin
(the console echoes them, so every check below looks for text only the guest's output can
hold: a digest, a file's contents behind a `$(...)`, a size).
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
APPEND = "console=ttyS0 cryptomgr.notests"
GREETING = "hello from the host's mkfs.ext2"
DATA_SIZE = 300 * 1024 + 512        # several packets of 127 sectors, and a partial one
IMAGE_MB = 16


@dataclass(frozen=True)
class Run:
    console: str
    status: int


def _boot(kernel: Path, initrd: Path, disk: Path, commands: list[str], *extra: str,
          ram_mb: int = 128) -> Run:
    script = "".join(f"{line}\n" for line in [*commands, "poweroff"])
    done = subprocess.run([sys.executable, "-m", "dbgvm", "run", str(kernel), "--initrd",
                           str(initrd), "--append", APPEND, "-m", str(ram_mb), "--batch",
                           "--disk", str(disk), *extra],
                          input=script.encode(), capture_output=True, timeout=900, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    console = (done.stdout + done.stderr).decode("utf-8", "replace").replace("\r\n", "\n")
    return Run(console, done.returncode)


def _debugfs_cat(image: Path, name: str) -> bytes:
    done = subprocess.run(["debugfs", "-R", f"cat /{name}", str(image)], capture_output=True,
                          check=True, timeout=60)
    return done.stdout


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> tuple[Path, bytes]:
    """A 16 MiB ext2 image holding hello.txt and data.bin (random bytes)."""
    root = tmp_path_factory.mktemp("tree")
    (root / "hello.txt").write_text(GREETING + "\n")
    data = os.urandom(DATA_SIZE)
    (root / "data.bin").write_bytes(data)
    path = tmp_path_factory.mktemp("disk") / "disk.img"
    subprocess.run(["mkfs.ext2", "-q", "-d", str(root), str(path), f"{IMAGE_MB}M"],
                   check=True, capture_output=True, timeout=60)
    return path, data


MOUNT = "mkdir -p /mnt && mount -t ext2 /dev/halblk0 /mnt"


@pytest.fixture(scope="module")
def cow_run(linux_kernel, image) -> tuple[Run, bytes]:
    """Boot with --disk: read, copy a file, unmount, drop caches, read the copy back."""
    path, _ = image
    before = hashlib.sha256(path.read_bytes()).digest()
    run = _boot(linux_kernel.kernel, linux_kernel.initrd, path, [
        MOUNT,
        'echo "greeting=$(cat /mnt/hello.txt)"',
        "echo size=$(cat /sys/block/halblk0/size)",
        "md5sum /mnt/data.bin",
        "cp /mnt/data.bin /mnt/copy.bin",
        "sync",
        "umount /mnt",
        "echo 3 > /proc/sys/vm/drop_caches",
        MOUNT,
        "md5sum /mnt/copy.bin",
        "umount /mnt",
    ])
    return run, before


def test_guest_reads_the_hosts_files(cow_run, image):
    run, _ = cow_run
    _, data = image
    assert run.status == 0, run.console[-3000:]
    assert f"greeting={GREETING}\n" in run.console
    assert f"size={IMAGE_MB * 2048}\n" in run.console
    assert f"{hashlib.md5(data).hexdigest()}  /mnt/data.bin" in run.console


def test_guest_reads_back_what_it_wrote(cow_run, image):
    run, _ = cow_run
    _, data = image
    assert f"{hashlib.md5(data).hexdigest()}  /mnt/copy.bin" in run.console, \
        run.console[-3000:]


def test_copy_on_write_leaves_the_image_alone(cow_run, image):
    _, before = cow_run
    path, _ = image
    assert hashlib.sha256(path.read_bytes()).digest() == before
    assert b"copy.bin" not in subprocess.run(["debugfs", "-R", "ls /", str(path)],
                                             capture_output=True, check=True).stdout


def test_writable_disk_keeps_the_guests_files(linux_kernel, image, tmp_path):
    source, data = image
    path = tmp_path / "writable.img"
    path.write_bytes(source.read_bytes())
    # with 1 GiB of RAM the page cache is in high memory, which the driver must map
    # (kmap_local_page) to copy to and from: HighFree shows the cache took it
    run = _boot(linux_kernel.kernel, linux_kernel.initrd, path, [
        "grep HighFree /proc/meminfo",
        MOUNT,
        "cp /mnt/data.bin /mnt/copy.bin",
        "echo written by Linux > /mnt/new.txt",
        "grep HighFree /proc/meminfo",
        "umount /mnt",
    ], "--disk-writable", ram_mb=1024)
    assert run.status == 0, run.console[-3000:]
    high_free = [int(kb) for kb in re.findall(r"HighFree:\s+(\d+) kB", run.console)]
    assert len(high_free) == 2 and high_free[0] - high_free[1] >= DATA_SIZE // 1024, high_free
    assert _debugfs_cat(path, "new.txt") == b"written by Linux\n"
    assert _debugfs_cat(path, "copy.bin") == data
    check = subprocess.run(["e2fsck", "-fn", str(path)], capture_output=True, timeout=60)
    assert check.returncode == 0, check.stdout.decode()
