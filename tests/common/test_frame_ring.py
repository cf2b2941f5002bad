"""The shared-memory frame ring (common/frame_ring.py): write/read, wrap-around, torn and overwritten frames
detected, dtype/shape, new generations, stale rings removed."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from cam_server.common.frame_ring import (
    RingReader,
    RingWriter,
    host_id,
    list_rings,
    parse_ring_name,
    remove_stale_rings,
    ring_base,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def writer() -> Iterator[RingWriter]:
    ring = RingWriter(ring_base(os.getpid(), f"test-{uuid.uuid4().hex[:8]}", os.getpid()), slots=3)
    yield ring
    ring.close()


def _read(writer: RingWriter, slot: int, seq: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    reader = RingReader(writer.base, writer.generation)
    lease = reader.lease(slot, seq)
    assert lease is not None
    image = reader.image(lease, dtype, shape)
    assert image is not None
    return image


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
def test_image_read_in_place_as_written(writer: RingWriter, dtype: type) -> None:
    image = (np.arange(48 * 64) % 251).astype(dtype).reshape(48, 64)
    slot, seq = writer.write(image)
    view = _read(writer, slot, seq, image.dtype, image.shape)
    np.testing.assert_array_equal(view, image)
    assert view.dtype == image.dtype and not view.flags.writeable
    assert os.path.basename(writer.path or "") in list_rings()


def test_non_contiguous_image_is_written_as_its_values(writer: RingWriter) -> None:
    image = np.arange(100, dtype=np.uint16).reshape(10, 10)[:, ::-1].T  # a transposed, mirrored view
    slot, seq = writer.write(image)
    np.testing.assert_array_equal(_read(writer, slot, seq, image.dtype, image.shape), image)


def test_wrap_around_reuses_slots_and_invalidates_old_leases(writer: RingWriter) -> None:
    reader = None
    leases = []
    for value in range(1, 8):  # 7 frames through 3 slots
        slot, seq = writer.write(np.full((4, 5), value, np.uint16))
        assert seq == value and slot == value % 3
        reader = reader or RingReader(writer.base, writer.generation)
        lease = reader.lease(slot, seq)
        assert lease is not None and lease.valid()
        leases.append(lease)
    assert [lease.valid() for lease in leases] == [False] * 4 + [True] * 3
    assert reader is not None and [reader.behind(lease) for lease in leases] == [6, 5, 4, 3, 2, 1, 0]
    assert reader is not None and reader.lease(1, 1) is None  # seq 1 is gone from slot 1 (now seq 7)
    lease = reader.lease(1, 7)
    assert lease is not None
    assert int(reader.image(lease, np.dtype(np.uint16), (4, 5))[0, 0]) == 7  # type: ignore[index]


def test_torn_frame_is_never_leased(writer: RingWriter) -> None:
    slot, seq = writer.write(np.zeros((8, 8), np.uint8))
    reader = RingReader(writer.base, writer.generation)
    assert reader.lease(slot, seq) is not None
    # A writer in the middle of the next frame of that slot: begin written, end not yet.
    table = writer._table
    assert table is not None
    table[slot, 0] = seq + 3
    assert reader.lease(slot, seq) is None and reader.lease(slot, seq + 3) is None
    table[slot, 1] = seq + 3
    assert reader.lease(slot, seq + 3) is not None


def test_slow_reader_never_uses_an_overwritten_frame(writer: RingWriter) -> None:
    """A writer thread at full speed while the reader "processes" a frame in place: a frame whose slot the writer
    reused meanwhile is detected after use, never taken as good; a frame left alone is exactly the frame it was
    announced as (all pixels = its sequence number). The writer runs only in the rounds meant to overwrite (so the
    outcome of each round is known, whatever the machine's load), and then concurrently with the reading."""
    announced: list[tuple[int, int]] = []
    go, stop, busy = threading.Event(), threading.Event(), threading.Lock()

    def write() -> None:
        while not stop.is_set():
            if go.wait(0.01):
                with busy:
                    announced.append(writer.write(np.full((256, 256), writer.seq + 1, np.uint32)))

    def pause() -> None:
        go.clear()
        with busy:  # a write in progress has finished
            pass

    thread = threading.Thread(target=write)
    thread.start()
    accepted = overwritten = 0
    try:
        go.set()
        wait_for = time.monotonic() + 10
        while not announced and time.monotonic() < wait_for:
            time.sleep(0.001)
        pause()
        reader = RingReader(writer.base, writer.generation)
        for round_ in range(10):
            slot, seq = announced[-1]
            lease = reader.lease(slot, seq)
            assert lease is not None  # the newest frame, nothing written since
            image = reader.image(lease, np.dtype(np.uint32), (256, 256))
            assert image is not None
            overwrite = round_ % 2 == 1
            if overwrite:  # the writer goes on during the processing, past the ring's 3 slots
                written = len(announced)
                go.set()
                deadline = time.monotonic() + 10
                while len(announced) < written + 4 and time.monotonic() < deadline:
                    low, high = int(image.min()), int(image.max())  # the "processing", torn or not
            low, high = int(image.min()), int(image.max())
            pause()
            if not lease.valid():
                overwritten += 1
                continue
            assert not overwrite, "a frame overwritten during its use was taken as good"
            assert low == high == seq
            accepted += 1
    finally:
        stop.set()
        go.set()
        thread.join()
    assert accepted == 5 and overwritten == 5


def test_larger_frame_starts_a_new_generation(writer: RingWriter) -> None:
    first_slot, first_seq = writer.write(np.zeros((4, 4), np.uint8))
    first = writer.path
    reader = RingReader(writer.base, writer.generation)
    slot, seq = writer.write(np.ones((200, 300), np.uint16))  # more than a page
    assert writer.generation == 2 and first is not None and not os.path.exists(first)
    np.testing.assert_array_equal(_read(writer, slot, seq, np.dtype(np.uint16), (200, 300)), 1)
    assert reader.lease(first_slot, first_seq) is not None  # the old mapping stays readable until the reader lets go


def test_image_that_does_not_fit_a_slot_is_refused(writer: RingWriter) -> None:
    slot, seq = writer.write(np.zeros((4, 4), np.uint8))
    reader = RingReader(writer.base, writer.generation)
    lease = reader.lease(slot, seq)
    assert lease is not None and reader.image(lease, np.dtype(np.float64), (100, 100)) is None
    assert reader.lease(99, seq) is None


def test_views_of_the_ring_are_recognised(writer: RingWriter) -> None:
    image = np.arange(64, dtype=np.uint16).reshape(8, 8)
    slot, seq = writer.write(image)
    reader = RingReader(writer.base, writer.generation)
    lease = reader.lease(slot, seq)
    assert lease is not None
    view = reader.image(lease, image.dtype, image.shape)
    assert reader.contains(view) and reader.contains(view[2:, ::2]) and reader.contains(view.T)
    assert not reader.contains(view.copy()) and not reader.contains(image) and not reader.contains(3)


def test_closed_writer_removes_its_file(writer: RingWriter) -> None:
    writer.write(np.zeros((2, 2), np.uint8))
    path = writer.path
    assert path is not None and os.path.exists(path)
    writer.close()
    assert not os.path.exists(path)


def test_stale_rings_of_dead_writers_are_removed(writer: RingWriter) -> None:
    dead_pid = subprocess.Popen(["true"])  # noqa: S603,S607 - a pid that has ended
    dead_pid.wait()
    stale = RingWriter(ring_base(1, "stale-camera", dead_pid.pid), slots=2)
    stale.write(np.zeros((2, 2), np.uint8))
    live = writer
    live.write(np.zeros((2, 2), np.uint8))
    stale_name = os.path.basename(stale.path or "")
    assert parse_ring_name(stale_name) == (1, "stale-camera", dead_pid.pid, 1)
    assert stale_name in remove_stale_rings()
    assert stale_name not in list_rings() and os.path.basename(live.path or "") in list_rings()
    stale.close()


def test_host_id_is_stable_and_names_the_mounts() -> None:
    import os

    assert host_id() == host_id()
    parts = host_id().split("/")
    assert len(parts) == 5 and parts[-1] == os.readlink("/proc/self/ns/net")  # another network: another host
