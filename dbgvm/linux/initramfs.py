"""The busybox initramfs: a newc cpio writer and the archive built from ``initramfs/``.

The archive is reproducible (same busybox and sources, same bytes): entries are sorted,
inode numbers sequential, times 0, owners as the list says, and the gzip header carries no
time, so a recorded run's initrd can be rebuilt and compared. The content is described in
the kernel's own gen_init_cpio list format so that it reads familiar.
"""
from __future__ import annotations

import gzip
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

NEWC_MAGIC = b"070701"
MODULES_DIR = "lib/modules"
LOAD_LIST = f"{MODULES_DIR}/load-order"     # module names, one a line, as init loads them
TRAILER = "TRAILER!!!"


class InitramfsError(Exception):
    """The file list or a file it names is wrong; the message is one line."""


@dataclass(frozen=True)
class Entry:
    """One archive member; ``mode`` includes the file type bits."""
    name: str                 # without a leading '/'
    mode: int
    data: bytes = b""         # file contents, or a symlink's target
    uid: int = 0
    gid: int = 0
    rdev: tuple[int, int] = (0, 0)


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _header(ino: int, entry: Entry, nlink: int, name: bytes) -> bytes:
    fields = (ino, entry.mode, entry.uid, entry.gid, nlink, 0, len(entry.data), 0, 0,
              entry.rdev[0], entry.rdev[1], len(name), 0)
    return NEWC_MAGIC + b"".join(b"%08X" % value for value in fields)


def write_cpio(entries: Iterable[Entry]) -> bytes:
    """A newc archive of ``entries`` in name order (a directory before what it holds)."""
    out = bytearray()
    for ino, entry in enumerate(sorted(entries, key=lambda e: e.name), start=1):
        name = entry.name.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        out += _pad4(_header(ino, entry, nlink, name) + name) + _pad4(entry.data)
    trailer = TRAILER.encode() + b"\0"
    out += _pad4(_header(0, Entry(TRAILER, 0), 1, trailer) + trailer)
    return bytes(out)


_TYPES = {"dir": (stat.S_IFDIR, 5), "nod": (0, 8), "slink": (stat.S_IFLNK, 6),
          "file": (stat.S_IFREG, 6)}


def parse_file_list(text: str, base: Path, variables: dict[str, str],
                    list_name: str) -> list[Entry]:
    """Entries from a gen_init_cpio list: file locations are relative to ``base`` and may
    name ``${VARIABLES}``."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        where = f"{list_name}:{number}"
        kind = words[0]
        if kind not in _TYPES or len(words) != _TYPES[kind][1]:
            raise InitramfsError(f"{where}: expected one of dir/nod/slink/file with its "
                                 f"fields, got {line.strip()!r}")
        try:
            uid, gid = int(words[-2]), int(words[-1])
            if kind == "dir":
                entries.append(Entry(words[1].lstrip("/"), stat.S_IFDIR | int(words[2], 8),
                                     uid=uid, gid=gid))
            elif kind == "nod":
                dev_type = {"c": stat.S_IFCHR, "b": stat.S_IFBLK}[words[5]]
                entries.append(Entry(words[1].lstrip("/"), dev_type | int(words[2], 8),
                                     uid=uid, gid=gid, rdev=(int(words[6]), int(words[7]))))
            elif kind == "slink":
                entries.append(Entry(words[1].lstrip("/"), stat.S_IFLNK | int(words[3], 8),
                                     words[2].encode(), uid, gid))
            else:
                location = base / Template(words[2]).substitute(variables)
                entries.append(Entry(words[1].lstrip("/"), stat.S_IFREG | int(words[3], 8),
                                     location.read_bytes(), uid, gid))
        except (ValueError, KeyError) as exc:
            raise InitramfsError(f"{where}: bad field in {line.strip()!r}: {exc}") from None
        except OSError as exc:
            raise InitramfsError(f"{where}: {exc.filename}: {exc.strerror}") from None
    return entries


def module_entries(modules: Sequence[tuple[str, bytes]]) -> list[Entry]:
    """``/lib/modules/NAME.ko`` for each module and the list init loads them from."""
    entries = [Entry(f"{MODULES_DIR}/{name}.ko", stat.S_IFREG | 0o644, data)
               for name, data in modules]
    order = "".join(f"{name}\n" for name, _ in modules).encode()
    return entries + [Entry(LOAD_LIST, stat.S_IFREG | 0o644, order)]


def build_initramfs(busybox: Path, modules: Sequence[tuple[str, bytes]] = ()) -> bytes:
    """The gzip-compressed initramfs: the repository's init and file list, ``busybox`` (a
    static i386 build) and kernel ``modules`` (name and bytes, in the order init loads
    them)."""
    source = resources.files(__package__) / "initramfs"
    with resources.as_file(source) as directory:
        listing = directory / "files"
        try:
            text = listing.read_text(encoding="utf-8")
        except OSError as exc:
            raise InitramfsError(f"{listing}: {exc.strerror}") from None
        entries = parse_file_list(text, directory, {"BUSYBOX": str(busybox)}, str(listing))
    entries += module_entries(modules)
    return gzip.compress(write_cpio(entries), compresslevel=9, mtime=0)
