"""Channel 2: a disk image, copy-on-write unless the user made it writable.

Copy-on-write keeps written sectors in host memory, so the user's file is never changed; a
writable image is written in place and FLUSH fsyncs it. The file is read sector by sector on
demand (an image may be far larger than guest RAM)."""
from __future__ import annotations

import os
import struct

from .abi import MAX_PAYLOAD, BlockOp, Channel, Status
from .device import Reply, SubmitOnly

SECTOR = 512
REQUEST = struct.Struct("<II")
MAX_COUNT = (MAX_PAYLOAD - REQUEST.size) // SECTOR      # 127
FLAG_PERSISTENT = 1


class DiskError(ValueError):
    """The image cannot be used (the message is one line for the user)."""


class BlockDevice(SubmitOnly):
    channel = Channel.BLOCK
    ops = BlockOp

    def __init__(self, path: str, writable: bool = False) -> None:
        try:
            self._fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        except OSError as exc:
            raise DiskError(f"{path}: cannot open: {exc.strerror}") from None
        size = os.fstat(self._fd).st_size
        if size % SECTOR or not size:
            os.close(self._fd)
            raise DiskError(f"{path}: size {size} is not a positive multiple of {SECTOR} "
                            "bytes")
        self.path = path
        self.writable = writable
        self.sectors = size // SECTOR
        self._overlay: dict[int, bytes] = {}    # copy-on-write sectors

    def close(self) -> None:
        os.close(self._fd)

    def min_length(self, op: int) -> int:
        return {BlockOp.INFO: 12, BlockOp.READ: REQUEST.size, BlockOp.WRITE: REQUEST.size,
                BlockOp.FLUSH: 0}[BlockOp(op)]

    def submit(self, op: int, payload: bytes) -> Reply:
        op = BlockOp(op)
        if op is BlockOp.INFO:
            flags = FLAG_PERSISTENT if self.writable else 0
            return Reply(Status.OK, struct.pack("<III", self.sectors, SECTOR, flags),
                         info=f"info sectors={self.sectors}")
        if op is BlockOp.FLUSH:
            return self._flush()
        sector, count = REQUEST.unpack_from(payload)
        info = f"{op.name.lower()} sector={sector} count={count}"
        if not 1 <= count <= MAX_COUNT or len(payload) < REQUEST.size + count * SECTOR:
            return Reply(Status.BADLEN, info=info)
        if sector + count > self.sectors:
            return Reply(Status.IOERR, info=info + " (beyond the disk)")
        try:
            if op is BlockOp.READ:
                data = self._read(sector, count)
                return Reply(Status.OK, payload[:REQUEST.size] + data, info=info)
            data = payload[REQUEST.size:REQUEST.size + count * SECTOR]
            self._write(sector, data)
        except OSError as exc:
            return Reply(Status.IOERR, info=f"{info}: {exc.strerror}")
        return Reply(Status.OK, info=info)

    def _read(self, sector: int, count: int) -> bytes:
        data = bytearray(os.pread(self._fd, count * SECTOR, sector * SECTOR))
        if len(data) != count * SECTOR:
            raise OSError(0, "short read (the image shrank)")
        for s in range(sector, sector + count) if self._overlay else ():
            cached = self._overlay.get(s)
            if cached is not None:
                data[(s - sector) * SECTOR:(s - sector + 1) * SECTOR] = cached
        return bytes(data)

    def _write(self, sector: int, data: bytes) -> None:
        if self.writable:
            os.pwrite(self._fd, data, sector * SECTOR)
            return
        for i in range(len(data) // SECTOR):
            self._overlay[sector + i] = data[i * SECTOR:(i + 1) * SECTOR]

    def _flush(self) -> Reply:
        if self.writable:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                return Reply(Status.IOERR, info=f"flush: {exc.strerror}")
        return Reply(Status.OK, info="flush")
