"""PipeQueue: objects between a server and an instance process without named semaphores."""

from __future__ import annotations

import os
import queue

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
    child = ctx.Process(target=targets.echo_queue, args=(inbox, outbox, len(sent)))
    child.start()
    try:
        for item in sent:
            inbox.put_nowait(item)  # returns at once: nobody reads the 240 KB until the child runs
        back = [outbox.get(timeout=10) for _ in sent]
        child.join(10)
        assert child.exitcode == 0
        assert [item["n"] for item in back] == list(range(40))
        assert all(np.array_equal(a["pixels"], b["pixels"]) for a, b in zip(back, sent, strict=True))
        with pytest.raises(queue.Empty):
            outbox.get_nowait()
    finally:
        inbox.close()
        outbox.close()
        child.join(5)


def test_a_closed_queue_takes_nothing_more() -> None:
    box = PipeQueue(process_context())
    box.put_nowait("first")
    box.flush(5)
    with pytest.raises(ValueError, match="closed"):
        box.put_nowait("late")
    assert box.get(5) == "first"
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
