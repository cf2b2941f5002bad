"""PipeQueue: objects between a server and an instance process without named semaphores."""

from __future__ import annotations

import os
import pickle
import queue
import threading

import numpy as np
import pytest

from cam_server.common.pipe_queue import PipeQueue
from cam_server.common.process import InstanceControl, process_context
from tests.common import targets


def _semaphores() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("sem.")}


def test_objects_go_to_another_process_and_back_in_order() -> None:
    ctx = process_context()
    inbox, outbox = PipeQueue(ctx), PipeQueue(ctx)
    sent = [{"n": i, "pixels": np.full(3000, i, dtype=np.uint16)} for i in range(40)]  # 6 KB each: > 1 pipe buffer
    for item in sent:
        inbox.put_nowait(item)  # 240 KB and nobody reads yet: returns all the same (the feeder waits)
    child = ctx.Process(target=targets.echo_queue, args=(inbox, outbox, len(sent)))
    child.start()
    inbox.keep("put")
    outbox.keep("get")
    try:
        back = [outbox.get(timeout=10) for _ in sent]
        child.join(10)
        assert child.exitcode == 0
        assert [item["n"] for item in back] == list(range(40))
        assert all(np.array_equal(a["pixels"], b["pixels"]) for a, b in zip(back, sent, strict=True))
        with pytest.raises(EOFError):  # the child is gone and so is every writing end: end-of-file, no wait
            outbox.get(timeout=10)
    finally:
        inbox.close()
        outbox.close()
        child.join(5)


def test_what_cannot_be_sent_fails_the_put_and_the_queue_goes_on() -> None:
    box = PipeQueue(process_context())
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        box.put_nowait(threading.Lock())
    box.put_nowait("after")
    assert box.get(5) == "after"
    box.close()


def test_a_closed_queue_takes_nothing_more() -> None:
    box = PipeQueue(process_context())
    box.put_nowait("first")
    box.flush(5)
    with pytest.raises(ValueError, match="closed"):
        box.put_nowait("late")
    assert box.get(5) == "first"
    box.close()
    with pytest.raises(ValueError, match="closed"):
        box.get(0)


def test_a_reader_that_does_not_read_costs_at_most_max_pending_objects() -> None:
    box = PipeQueue(process_context(), max_pending=3)
    blob = b"x" * 30_000  # two fill the pipe: the feeder waits with the rest pending
    for i in range(50):
        box.put_nowait((i, blob))
    assert box.overflowed >= 40
    received = [box.get(5)[0] for _ in range(50 - box.overflowed)]
    assert received == sorted(received) and received[-3:] == [47, 48, 49]  # in order; the oldest pending dropped
    with pytest.raises(queue.Empty):
        box.get(0.2)
    box.close()


def test_an_instance_control_leaves_nothing_in_dev_shm() -> None:
    # multiprocessing.Queue made three named semaphores each (6 per instance), left in /dev/shm for good when the
    # whole process group, resource tracker included, was killed with SIGKILL.
    before = _semaphores()
    control = InstanceControl(process_context())
    try:
        control.report_error("one report")
        control.send_config({"a": 1})
        assert _semaphores() == before
    finally:
        control.close()


def test_putting_to_a_reader_that_is_gone_drops_quietly() -> None:
    # A config sent to an instance that has just died: nothing raises (the server sees CONFIG_ENDED), nothing piles up.
    box = PipeQueue(process_context())
    box.keep("put")  # the only reading end is gone: the first write fails with EPIPE
    box.put_nowait("lost")
    box._feed.thread.join(5)  # the feeder ended on the broken pipe
    for i in range(100):
        box.put_nowait(i)
    assert not box._feed.pending
    box.close()
