"""Channel 2: a disk image, copy-on-write unless the user made it writable.

Copy-on-write keeps written sectors in an overlay, so the user's file is never changed; a
writable image is written in place and FLUSH fsyncs it. The file is read sector by sector on
demand (an image may be far larger than guest RAM).

The overlay's data is on disk, not in host memory (a guest writing every sector of a large
image must not exhaust the host's memory): a temporary file, deleted when closed (or when
dbgvm ends, however it ends), holds written sectors in slots, appended as sectors are first
written. In memory there is only an index, sector -> slot, in chunks of 4096 sectors (4 bytes
a sector of the chunks written to: 8 MiB for every sector of a 1 GiB image).

Snapshots (reverse execution: the device's saved state is part of each) keep the index, not
the data: a saved index shares the live index's chunks (a chunk is copied when it is next
written) and saving *freezes* every slot written so far: a sector whose slot is frozen is
written to a new slot, so the data a snapshot refers to never changes, and restoring one is
restoring its index. A snapshot costs memory in proportion to the chunks written since the
previous one, and the file grows by the sectors rewritten after a snapshot (without
snapshots, it holds each written sector once: it is never larger than the image)."""
from __future__ import annotations

import errno
import os
import struct
import tempfile
from array import array
from dataclasses import dataclass

from .abi import MAX_PAYLOAD, BlockOp, Channel, Status
from .device import Reply, SubmitOnly

SECTOR = 512
REQUEST = struct.Struct("<II")
MAX_COUNT = (MAX_PAYLOAD - REQUEST.size) // SECTOR      # 127
FLAG_PERSISTENT = 1


class DiskError(ValueError):
    """The image cannot be used (the message is one line for the user)."""


CHUNK = 4096                    # sectors per index chunk (2 MiB of disk)
MAX_SLOTS = (1 << 32) - 1       # index entries are 32-bit (slot + 1; 0: not written)


class OverlayFile:
    """The temporary file holding written sectors, one per slot. Shared by the live index
    and every saved one: slots below ``frozen`` belong to some snapshot and are never
    written again (it only grows: going back in time keeps every slot)."""

    def __init__(self) -> None:
        self._file = None
        self.slots = 0
        self.frozen = 0

    @property
    def fd(self) -> int:
        if self._file is None:      # created at the first write: reading costs no file
            self._file = tempfile.TemporaryFile(prefix="dbgvm-cow-")
        return self._file.fileno()

    def allocate(self, count: int) -> int:
        """``count`` consecutive new slots: the first one."""
        if self.slots + count > MAX_SLOTS:
            raise OSError(errno.ENOSPC, "the copy-on-write overlay is full")
        first = self.slots
        self.slots += count
        return first

    def freeze(self) -> None:
        self.frozen = self.slots

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(frozen=True)
class OverlayState:
    """A saved index: chunk number -> slot + 1 per sector. The arrays are shared with the
    live index, which copies a chunk before writing to it again (it owns none once saved),
    so they never change."""

    chunks: tuple[tuple[int, array], ...]


class Overlay:
    """Which sectors were written, and the slot holding each: the copy-on-write state of a
    disk. Saving it shares the index chunks and freezes the slots written so far."""

    NOT_SAVED = frozenset({"file", "owned"})    # shared by all; follows from the saving

    def __init__(self, file: OverlayFile) -> None:
        self.file = file
        self.chunks: dict[int, array] = {}          # chunk number -> slot + 1 per sector
        self._owned: set[int] = set()               # chunks no saved index shares

    def save(self) -> OverlayState:
        self._owned = set()
        self.file.freeze()
        return OverlayState(tuple(self.chunks.items()))

    def restore(self, state: OverlayState) -> None:
        """The saved index again; its slots are all frozen (they were when it was saved)."""
        self.chunks = dict(state.chunks)
        self._owned = set()

    def __len__(self) -> int:
        """How many sectors were written."""
        return sum(CHUNK - chunk.count(0) for chunk in self.chunks.values())

    def slots(self, sector: int, count: int) -> list[int] | None:
        """The slot of each sector (-1: not written), or None when none was written."""
        found = None
        for s in range(sector, sector + count):
            chunk = self.chunks.get(s // CHUNK)
            slot = chunk[s % CHUNK] - 1 if chunk is not None else -1
            if slot >= 0 and found is None:
                found = [-1] * (s - sector)
            if found is not None:
                found.append(slot)
        return found

    def _writable_chunk(self, number: int) -> array:
        chunk = self.chunks.get(number)
        if chunk is None:
            chunk = array("I", bytes(4 * CHUNK))
        elif number not in self._owned:
            chunk = array("I", chunk)               # shared with a snapshot: copy it first
        self.chunks[number] = chunk
        self._owned.add(number)
        return chunk

    def write(self, sector: int, data: bytes) -> None:
        count = len(data) // SECTOR
        slots = []
        new = []
        for s in range(sector, sector + count):
            chunk = self.chunks.get(s // CHUNK)
            slot = chunk[s % CHUNK] - 1 if chunk is not None else -1
            if slot < self.file.frozen:             # not written, or a snapshot's: a new slot
                slot = -1
                new.append(len(slots))
            slots.append(slot)
        first = self.file.allocate(len(new)) if new else 0
        for offset, index in enumerate(new):
            slots[index] = first + offset
        fd = self.file.fd
        for start, slot, run in _runs(slots):
            if os.pwrite(fd, data[start * SECTOR:(start + run) * SECTOR],
                         slot * SECTOR) != run * SECTOR:
                raise OSError(errno.ENOSPC, "short write to the copy-on-write overlay")
        # the index names the new slots only once their data is there (a full file
        # system: IOERR, and the sectors read as before)
        for index in new:
            s = sector + index
            self._writable_chunk(s // CHUNK)[s % CHUNK] = slots[index] + 1


def _runs(slots: list[int]) -> list[tuple[int, int, int]]:
    """(index, slot, length) of each run of consecutive slots (-1 entries left out)."""
    runs: list[tuple[int, int, int]] = []
    for index, slot in enumerate(slots):
        if slot < 0:
            continue
        if runs and runs[-1][0] + runs[-1][2] == index and runs[-1][1] + runs[-1][2] == slot:
            runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((index, slot, 1))
    return runs


@dataclass(frozen=True)
class BlockState:
    overlay: OverlayState


class BlockDevice(SubmitOnly):
    channel = Channel.BLOCK
    ops = BlockOp
    # the image and the overlay file: fixed while the VM exists (a writable image is written
    # in place and does not go back in time; it is the user's own file)
    NOT_SAVED = frozenset({"fd", "path", "writable", "sectors", "store"})

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
        self._store = OverlayFile()
        self._overlay = Overlay(self._store)     # copy-on-write sectors (their index)

    def save(self) -> BlockState:
        return BlockState(self._overlay.save())

    def restore(self, state: BlockState) -> None:
        self._overlay.restore(state.overlay)

    def close(self) -> None:
        os.close(self._fd)
        self._store.close()

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
        slots = self._overlay.slots(sector, count) if self._overlay.chunks else None
        for start, slot, run in _runs(slots or []):
            written = os.pread(self._store.fd, run * SECTOR, slot * SECTOR)
            if len(written) != run * SECTOR:
                raise OSError(0, "short read of the copy-on-write overlay")
            data[start * SECTOR:(start + run) * SECTOR] = written
        return bytes(data)

    def _write(self, sector: int, data: bytes) -> None:
        if self.writable:
            os.pwrite(self._fd, data, sector * SECTOR)
            return
        self._overlay.write(sector, data)

    def _flush(self) -> Reply:
        if self.writable:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                return Reply(Status.IOERR, info=f"flush: {exc.strerror}")
        return Reply(Status.OK, info="flush")
