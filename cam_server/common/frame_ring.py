"""A ring of shared-memory frame slots: the camera instance writes each image once, local pipelines read in place.

Why: at 5.5 MP and 100 Hz, moving every frame through a socket twice (camera → kernel → pipeline) costs more than
the processing. A camera instance on the same host as its pipelines writes each image into the next slot of a file
in ``/dev/shm`` and announces it (slot and sequence number, see ``camera/instance.py``); a reader maps the file
read-only and processes the image as a read-only numpy view of the slot, without a copy.

**Seqlock.** Each slot has two sequence numbers: ``begin`` is written before the pixels, ``end`` after them. A frame
``seq`` is complete while ``end == seq`` and not yet being overwritten while ``begin == seq``. A reader checks both
before it uses the slot (:meth:`RingReader.lease`) and ``begin`` again *after* it is done (:meth:`Lease.valid`):
a frame overwritten meanwhile is dropped (and counted by the caller), never used. The writer never waits for readers:
a slow reader loses frames, it cannot hold the camera back. (x86 keeps plain stores in order; a very large copy may
use non-temporal stores, which are fenced at the end of the copy: the window in which pixels could become visible
before ``begin`` is nanoseconds wide against the milliseconds a reader uses a slot.)

**Files.** ``/dev/shm/cam_server-<server pid>-<instance id>-<writer pid>-<generation>``: the owner can be told by
its name. A frame larger than the slots makes the writer start a new generation (a new file; the old one is
unlinked, readers that still map it keep their mapping until they move on). The writer unlinks its file when it
closes; :func:`remove_stale_rings` removes the files of writers that died (kill -9) — the camera server calls it at
start and whenever one of its instances ends.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import re
import struct
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SHM_FOLDER = "/dev/shm"
PREFIX = "cam_server-"
MAGIC = b"CSRING01"
HEADER = struct.Struct("<8sQQQQ")  # magic, slot count, slot size (bytes), data offset, writer pid
LATEST_OFFSET = 48  # uint64: the sequence number of the last complete frame
TABLE_OFFSET = 64  # the slot table (begin, end: uint64 each) follows the file header
PAGE = mmap.PAGESIZE
DEFAULT_SLOTS = 8
# <prefix><server pid>-<instance id>-<writer pid>-<generation>; the instance id may itself contain '-'.
_NAME = re.compile(rf"^{re.escape(PREFIX)}(\d+)-(.+)-(\d+)-(\d+)$")


def ring_base(server_pid: int, instance_id: str, writer_pid: int) -> str:
    """The name of a writer's rings without the generation (what a camera server hands out)."""
    return f"{PREFIX}{server_pid}-{instance_id.replace('/', '_')}-{writer_pid}"


def ring_path(base: str, generation: int) -> str:
    return os.path.join(SHM_FOLDER, f"{base}-{generation}")


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


class RingWriter:
    """The writing side (one per camera instance; one writer thread). Created empty: the file appears with the
    first frame, sized to it."""

    def __init__(self, base: str, slots: int = DEFAULT_SLOTS) -> None:
        if slots < 2:
            raise ValueError(f"a frame ring needs at least 2 slots, not {slots}")
        self.base = base
        self.slots = slots
        self.generation = 0  # 0: no file yet
        self.seq = 0  # sequence number of the last frame written (the first is 1)
        self.slot_size = 0
        self._mmap: mmap.mmap | None = None
        self._table: np.ndarray | None = None  # (slots, 2) uint64: begin, end
        self._data: np.ndarray | None = None  # (slots, slot_size) uint8
        self._latest: np.ndarray | None = None  # (1,) uint64

    @property
    def path(self) -> str | None:
        return ring_path(self.base, self.generation) if self.generation else None

    def _create(self, frame_bytes: int) -> None:
        """A new generation with slots of at least ``frame_bytes``; the previous file is unlinked."""
        old = self.path
        self._release()
        slot_size = _round_up(max(frame_bytes, 1), PAGE)
        data_offset = _round_up(TABLE_OFFSET + 16 * self.slots, PAGE)
        size = data_offset + slot_size * self.slots
        self.generation += 1
        path = self.path
        assert path is not None
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.ftruncate(fd, size)
            self._mmap = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._mmap[:HEADER.size] = HEADER.pack(MAGIC, self.slots, slot_size, data_offset, os.getpid())
        self._table = np.ndarray((self.slots, 2), np.uint64, self._mmap, TABLE_OFFSET)
        self._data = np.ndarray((self.slots, slot_size), np.uint8, self._mmap, data_offset)
        self._latest = np.ndarray((1,), np.uint64, self._mmap, LATEST_OFFSET)
        self.slot_size = slot_size
        if old is not None:
            _unlink(old)
        log.info("frame ring %s: %d slots of %d bytes", path, self.slots, slot_size)

    def write(self, image: np.ndarray) -> tuple[int, int]:
        """Copy ``image`` into the next slot; returns (slot, sequence number). The only copy of the frame."""
        nbytes = image.nbytes
        if nbytes > self.slot_size:
            self._create(nbytes)
        table, data, latest = self._table, self._data, self._latest
        assert table is not None and data is not None and latest is not None
        seq = self.seq + 1
        slot = seq % self.slots
        table[slot, 0] = seq  # begin: readers of the frame that was here see it is going
        np.copyto(data[slot, :nbytes].view(image.dtype).reshape(image.shape), image, casting="no")
        table[slot, 1] = seq  # end: complete
        latest[0] = seq
        self.seq = seq
        return slot, seq

    def _release(self) -> None:
        self._table = self._data = self._latest = None
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:  # a view still exists: the mapping goes with it
                pass
            self._mmap = None

    def close(self) -> None:
        """Unmap and unlink the file (readers keep their mapping until they let go)."""
        path = self.path
        self._release()
        if path is not None:
            _unlink(path)


class Lease:
    """One frame of a ring as a reader holds it: :meth:`valid` says whether it is still that frame."""

    __slots__ = ("_table", "slot", "seq")

    def __init__(self, table: np.ndarray, slot: int, seq: int) -> None:
        self._table = table
        self.slot = slot
        self.seq = seq

    def valid(self) -> bool:
        """False once the writer has started to overwrite the slot (call it after the last use of the pixels)."""
        return int(self._table[self.slot, 0]) == self.seq


class RingReader:
    """A read-only mapping of one ring generation (reader side)."""

    def __init__(self, base: str, generation: int) -> None:
        self.base = base
        self.generation = generation
        path = ring_path(base, generation)
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size < PAGE:
                raise OSError(errno.EINVAL, f"{path}: not a frame ring ({size} bytes)")
            self._mmap = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)
        magic, slots, slot_size, data_offset, _ = HEADER.unpack_from(self._mmap, 0)
        if magic != MAGIC or data_offset + slots * slot_size > size:
            raise OSError(errno.EINVAL, f"{path}: not a frame ring")
        self.slots, self.slot_size, self._data_offset = int(slots), int(slot_size), int(data_offset)
        self._table = np.ndarray((self.slots, 2), np.uint64, self._mmap, TABLE_OFFSET)
        self._table.flags.writeable = False
        self._latest = np.ndarray((1,), np.uint64, self._mmap, LATEST_OFFSET)

    def behind(self, lease: Lease) -> int:
        """How many frames the writer has written after the leased one (at ``slots`` the slot is reused)."""
        return int(self._latest[0]) - lease.seq

    def lease(self, slot: int, seq: int) -> Lease | None:
        """The frame ``seq`` in ``slot`` if it is complete and not being overwritten, else None."""
        if not 0 <= slot < self.slots:
            return None
        table = self._table
        if int(table[slot, 1]) != seq or int(table[slot, 0]) != seq:
            return None
        return Lease(table, slot, seq)

    def image(self, lease: Lease, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray | None:
        """The leased slot as a read-only array of ``dtype`` and ``shape`` (None if that does not fit a slot)."""
        dtype = np.dtype(dtype)
        if dtype.itemsize * int(np.prod(shape)) > self.slot_size:
            return None
        return np.ndarray(shape, dtype, self._mmap, self._data_offset + lease.slot * self.slot_size)

    def contains(self, array: Any) -> bool:
        """Whether ``array`` may be a view of this ring's memory (then it must be copied before it leaves)."""
        if not isinstance(array, np.ndarray) or array.nbytes == 0:
            return False
        base = array
        while isinstance(base.base, np.ndarray):
            base = base.base
        return base.base is self._mmap


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def parse_ring_name(name: str) -> tuple[int, str, int, int] | None:
    """(server pid, instance id, writer pid, generation) of a ring file name, None for other names."""
    match = _NAME.match(name)
    if match is None:
        return None
    return int(match[1]), match[2], int(match[3]), int(match[4])


def list_rings(folder: str = SHM_FOLDER) -> list[str]:
    """Our ring files in ``folder`` (names only)."""
    try:
        return sorted(n for n in os.listdir(folder) if parse_ring_name(n) is not None)
    except OSError:
        return []


def remove_stale_rings(folder: str = SHM_FOLDER) -> list[str]:
    """Unlink the rings whose writer process is gone (killed before it could unlink them); returns their names."""
    removed = []
    for name in list_rings(folder):
        parsed = parse_ring_name(name)
        if parsed is not None and not pid_alive(parsed[2]):
            _unlink(os.path.join(folder, name))
            removed.append(name)
    if removed:
        log.info("removed %d stale frame rings: %s", len(removed), ", ".join(removed))
    return removed


def host_id() -> str:
    """Who shares our shared memory: the same machine, boot, ``/dev/shm`` and temporary folder (ipc sockets), and
    network namespace.

    A pipeline uses a camera's ring only when the camera server reports the same id: a container with its own
    ``/dev/shm`` or ``/tmp`` differs by the mounts' device and inode even on the same kernel; one with a network of
    its own (and the test hosts of tests/cluster_hosts, network namespaces) is another host, whose frames come
    over the network as they would from another machine.
    """
    import tempfile

    parts = []
    for path in ("/etc/machine-id", "/proc/sys/kernel/random/boot_id"):
        try:
            with open(path) as file:
                parts.append(file.read().strip())
        except OSError:
            parts.append("")
    for folder in (SHM_FOLDER, tempfile.gettempdir()):
        try:
            st = os.stat(folder)
            parts.append(f"{st.st_dev}:{st.st_ino}")
        except OSError:
            parts.append("")
    try:
        parts.append(os.readlink("/proc/self/ns/net"))
    except OSError:
        parts.append("")
    return "/".join(parts)
