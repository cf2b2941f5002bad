"""OrderedParallelProcessor and BufferedSender with real threads."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from cam_server.pipeline.parallel import BufferedSender, OrderedParallelProcessor
from tests.helpers.procs import wait_until


def _slow_square(i: int, delay: float) -> int:
    time.sleep(delay)
    if i % 17 == 5:
        raise ValueError(f"bad item {i}")
    return i * i


def test_results_in_submission_order_under_random_delays():
    rng = random.Random(1)
    proc = OrderedParallelProcessor(4, _slow_square, max_in_flight=8)
    n = 120
    received = []

    def consume() -> None:
        for result in proc.results():
            received.append(result)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(n):
        proc.submit(1000 + i, (i, rng.uniform(0, 0.004)))
        assert proc.in_flight <= 8
    proc.close()
    consumer.join(10)
    assert not consumer.is_alive()
    assert [r.seq for r in received] == [1000 + i for i in range(n)]
    for i, r in enumerate(received):
        if i % 17 == 5:
            assert not r.ok and isinstance(r.error, ValueError) and str(r.error) == f"bad item {i}"
            with pytest.raises(ValueError, match=f"bad item {i}"):
                r.get()
        else:
            assert r.ok and r.get() == i * i


def test_window_bounds_in_flight_and_submit_times_out():
    gate = threading.Event()
    proc = OrderedParallelProcessor(2, lambda x: gate.wait(5) and x, max_in_flight=3)
    for i in range(3):
        assert proc.submit(i, (i,))
    assert proc.full
    assert proc.submit(3, (3,), timeout=0.05) is False  # window full, nobody consumed
    gate.set()
    assert [proc.get(timeout=5).value for _ in range(3)] == [0, 1, 2]
    assert proc.in_flight == 0
    proc.close()
    assert proc.get(timeout=5) is None  # closed and drained


def test_single_thread_use_with_poll_and_get():
    with OrderedParallelProcessor(2, lambda a: float(np.sum(a)), max_in_flight=2) as proc:
        out = []
        for i in range(20):
            out += [r.value for r in proc.poll()]
            if proc.full:
                out.append(proc.get(timeout=5).value)
            proc.submit(i, (np.full(10, i),))
        proc.close()
        out += [r.value for r in proc.results()]
    assert out == [10.0 * i for i in range(20)]


def test_submit_after_close_raises_and_bad_workers_rejected():
    proc = OrderedParallelProcessor(1, lambda: 1)
    proc.close()
    with pytest.raises(RuntimeError, match="closed"):
        proc.submit(0)
    with pytest.raises(ValueError, match="processing_threads must be a positive integer"):
        OrderedParallelProcessor(0, lambda: 1)


def test_buffered_sender_keeps_first_frames_until_client():
    """drop_new: the send blocks (no client); the first buffer_size frames are kept, later ones dropped."""
    client = threading.Event()
    sent = []

    def send(item):
        client.wait(5)
        sent.append(item)

    sender = BufferedSender(send, buffer_size=5)
    assert sender.put(0)
    wait_until(lambda: sender.pending == 0, 5, "first item taken by the thread (now blocked in send)")
    accepted = [sender.put(i) for i in range(1, 12)]
    assert accepted == [True] * 5 + [False] * 6
    assert sender.pending == 5 and sender.dropped == 6
    client.set()
    sender.close()
    assert sent == [0, 1, 2, 3, 4, 5]
    assert sender.sent == len(sent)


def test_buffered_sender_drop_old_keeps_newest():
    client = threading.Event()
    sent = []
    sender = BufferedSender(lambda item: (client.wait(5), sent.append(item)), buffer_size=3, overflow="drop_old")
    sender.put(0)
    wait_until(lambda: sender.pending == 0, 5, "first item taken by the thread")
    for i in range(1, 10):
        sender.put(i)
    client.set()
    sender.close()
    assert sent == [0, 7, 8, 9]
    assert sender.dropped == 6


def test_buffered_sender_block_mode_loses_nothing_and_counts_errors():
    sent = []

    def send(item):
        if item == 3:
            raise OSError("stream closed")
        time.sleep(0.001)
        sent.append(item)

    errors = []
    with BufferedSender(send, buffer_size=2, overflow="block", on_error=errors.append) as sender:
        for i in range(30):
            assert sender.put(i)
    assert sent == [i for i in range(30) if i != 3]
    assert sender.errors == 1 and str(errors[0]) == "stream closed"
    with pytest.raises(RuntimeError, match="closed"):
        sender.put(1)


def test_buffered_sender_validation():
    with pytest.raises(ValueError, match="buffer_size must be a positive integer"):
        BufferedSender(print, 0)
    with pytest.raises(ValueError, match="overflow must be"):
        BufferedSender(print, 1, overflow="x")
