"""The guest's executable, served to gdb: ``qXfer:exec-file:read`` and the ``vFile:`` packets.

gdb connected without a file asks ``qXfer:exec-file:read`` which file the target runs; with
its default sysroot (``target:``) it then reads that file through the target with the host
I/O packets (gdb's manual, "Host I/O Packets" and "struct stat" in the File-I/O section):
``vFile:setfs``, ``vFile:open``, ``vFile:pread``, ``vFile:fstat``, ``vFile:close``. So
``gdb -ex 'target remote :1234'`` alone loads symbols, as it does from gdbserver.

Only the one served file can be opened, read-only: any other name (gdb's own probe, "just
probing", included) is ENOENT, a write or create is EACCES. The file is opened once when
the stub starts and read through that descriptor, so renaming or replacing the path
afterwards exposes nothing else. Replies are ``F`` results, ``F-1,errno`` on failure with
gdb's File-I/O errno values; a malformed argument is EINVAL.
"""
from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

from . import rsp
from .params import Command, PacketError

# gdb's File-I/O errno values (not the host's)
EPERM, ENOENT, EBADF, EACCES, EINVAL, EMFILE = 1, 2, 9, 13, 22, 24
O_ACCMODE = 3                # O_RDONLY 0, O_WRONLY 1, O_RDWR 2
O_WRITING = 0x8 | 0x200 | 0x400 | 0x800      # O_APPEND, O_CREAT, O_TRUNC, O_EXCL
MAX_OPEN = 16                # descriptors one gdb may hold at once
FIRST_FD = 3
REPLY_BUDGET = rsp.MAX_PACKET - 32           # a pread reply, escaped, stays a normal packet


class ServedFile:
    """The one host file gdb may read; ``path`` is what qXfer:exec-file answers (absolute)
    and what vFile:open must name, byte for byte."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(Path(path).resolve())
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            info = os.fstat(self._fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(0, "not a regular file", self.path)
        except OSError:
            os.close(self._fd)
            raise
        self.size = info.st_size
        self.mtime = int(info.st_mtime)

    def read(self, offset: int, count: int) -> bytes:
        if offset >= self.size:
            return b""
        return os.pread(self._fd, min(count, self.size - offset), offset)

    def stat_bytes(self) -> bytes:
        """gdb's ``struct stat``: 64 bytes, big-endian; the fields a host should not tell
        (device, inode, owner) are 0."""
        mode = stat.S_IFREG | 0o444
        return struct.pack(">7I3Q3I", 0, 0, mode, 1, 0, 0, 0, self.size, 4096,
                           (self.size + 511) // 512, self.mtime & 0xFFFFFFFF,
                           self.mtime & 0xFFFFFFFF, self.mtime & 0xFFFFFFFF)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _error(errno: int) -> bytes:
    return f"F-1,{errno:x}".encode()


def fit_escaped(data: bytes, budget: int = REPLY_BUDGET) -> bytes:
    """The longest prefix of ``data`` whose escaped form (rsp.escape) fits ``budget``."""
    while True:
        excess = len(data) + sum(data.count(c) for c in b"$#}*") - budget
        if excess <= 0:
            return data
        data = data[:len(data) - excess]


class HostIO:
    """One gdb session's view: its open descriptors on the served file."""

    def __init__(self, served: ServedFile) -> None:
        self.served = served
        self._open: set[int] = set()
        self._commands = {
            "setfs": Command("n", self._setfs),
            "open": Command("x,n,n", self._open_file),
            "pread": Command("n,n,o", self._pread),
            "fstat": Command("n", self._fstat),
            "close": Command("n", self._close),
        }

    def exec_file(self, annex: bytes) -> bytes:
        """qXfer:exec-file:read's object; the annex (a pid, or empty) names our one
        process whatever it says, but must be a number when given."""
        if annex and not all(c in b"0123456789abcdefABCDEF" for c in annex):
            raise PacketError("the annex is a process id")
        return self.served.path.encode()

    def vfile(self, args: bytes) -> bytes:
        """``vFile:OPERATION:ARGS``; an operation we do not have gets the empty reply
        (gdb then knows that packet is unsupported)."""
        operation, _, rest = args.partition(b":")
        command = self._commands.get(operation.decode("latin-1"))
        if command is None:
            return b""
        try:
            reply = command(rest)
        except PacketError:
            return _error(EINVAL)
        return reply if reply is not None else b""

    def _setfs(self, pid: int) -> bytes:
        return b"F0"            # one filesystem: whichever process gdb names

    def _open_file(self, name: bytes, flags: int, mode: int) -> bytes:
        if name != self.served.path.encode():
            return _error(ENOENT)
        if flags & O_ACCMODE or flags & O_WRITING:
            return _error(EACCES)
        if len(self._open) >= MAX_OPEN:
            return _error(EMFILE)
        fd = next(n for n in range(FIRST_FD, FIRST_FD + MAX_OPEN + 1) if n not in self._open)
        self._open.add(fd)
        return f"F{fd:x}".encode()

    def _pread(self, fd: int, count: int, offset: int) -> bytes:
        if fd not in self._open:
            return _error(EBADF)
        data = fit_escaped(self.served.read(offset, min(count, REPLY_BUDGET)))
        return f"F{len(data):x};".encode() + data

    def _fstat(self, fd: int) -> bytes:
        if fd not in self._open:
            return _error(EBADF)
        data = self.served.stat_bytes()
        return f"F{len(data):x};".encode() + data

    def _close(self, fd: int) -> bytes:
        if fd not in self._open:
            return _error(EBADF)
        self._open.discard(fd)
        return b"F0"
