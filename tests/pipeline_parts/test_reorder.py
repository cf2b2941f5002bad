"""PidReorderBuffer: ordering of interleaved producers, late/duplicate drops, pass-through."""

from __future__ import annotations

import random
import threading

import pytest

from cam_server.pipeline.types.reorder import PidReorderBuffer

pytestmark = pytest.mark.unit


def test_pass_through_emits_immediately_in_arrival_order():
    buf = PidReorderBuffer(0)
    assert buf.push(5, "a") == ["a"]
    assert buf.push(3, "b") == ["b"]  # size 0 never reorders nor drops
    assert buf.flush() == []
    assert buf.dropped == 0 and buf.emitted == 2


def test_reorders_within_window_and_flushes_rest():
    buf = PidReorderBuffer(3)
    out = []
    for pid in [2, 1, 4, 3, 6, 5, 7]:
        out += buf.push(pid, f"p{pid}")
    assert out == ["p1", "p2", "p3", "p4"]
    assert len(buf) == 3
    assert buf.flush() == ["p5", "p6", "p7"]
    assert buf.last_emitted == 7


def test_late_and_duplicate_items_are_dropped_and_counted():
    buf = PidReorderBuffer(2)
    out = []
    for pid in [10, 11, 12, 13]:
        out += buf.push(pid, pid)
    assert out == [10, 11]
    assert buf.push(9, 9) == []  # older than the last emitted
    assert buf.push(11, 11) == []  # equal to an emitted one
    assert buf.push(13, 13) == []  # duplicate of a waiting one
    assert (buf.late, buf.duplicates, buf.dropped) == (2, 1, 3)
    assert buf.flush() == [12, 13]


def test_three_interleaved_producers_give_sorted_output():
    """Three worker threads each produce every third pulse id with random jitter; the buffer restores order."""
    buf = PidReorderBuffer(30)
    out: list[int] = []
    lock = threading.Lock()

    def producer(k: int) -> None:
        rng = random.Random(k)
        pids = list(range(k, 3000, 3))
        # local reordering by up to 3 positions inside one producer, like a worker with a small queue
        for i in range(0, len(pids), 4):
            block = pids[i:i + 4]
            rng.shuffle(block)
            for pid in block:
                ready = buf.push(pid, pid)
                with lock:
                    out.extend(ready)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.extend(buf.flush())
    assert out == sorted(out)
    assert len(out) + buf.dropped == 3000
    assert len(set(out)) == len(out)


def test_invalid_size_rejected():
    with pytest.raises(ValueError, match="pid_buffer must be a non-negative integer"):
        PidReorderBuffer(-1)


def test_lagging_producer_within_window_loses_nothing():
    """Producer 2 lags 20 pulse ids behind the others: a 64-item buffer still emits everything in order."""
    buf = PidReorderBuffer(64)
    streams = [list(range(k, 600, 3)) for k in range(3)]
    arrivals = []
    for i in range(len(streams[0]) + 10):
        for k in range(3):
            j = i - 7 if k == 2 else i  # 7 items * 3 = 21 pulse ids late
            if 0 <= j < len(streams[k]):
                arrivals.append(streams[k][j])
    out = []
    for pid in arrivals:
        out += buf.push(pid, pid)
    out += buf.flush()
    assert out == list(range(600))
    assert buf.dropped == 0
