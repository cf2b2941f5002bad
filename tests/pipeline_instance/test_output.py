"""Output stream options: create_header strategies, PUSH mode, queue_size/block, no_client_timeout."""

from __future__ import annotations

import numpy as np
import pytest

from cam_server.bsread import PULL
from tests.helpers.procs import wait_until
from tests.helpers.streams import receive, values
from tests.pipeline_instance.harness import FakeCamera, gaussian_image, pipeline


@pytest.fixture
def camera():
    with FakeCamera(rate=50) as cam:
        yield cam


def _has_width(width):
    return lambda m: values(m)["width"] == width


@pytest.mark.parametrize("strategy", ["on_change", "always"])
def test_header_rebuilt_when_channels_change(tmp_path, camera, strategy):
    with pipeline(tmp_path, camera, create_header=strategy, function="transparent") as inst:
        rx = inst.receiver()
        first = receive(rx, 4)
        assert first[0].data.format_changed  # the receiver's first header
        assert [m.data.format_changed for m in first[1:]] == [False] * 3
        inst.update(image_region_of_interest=[0, 10, 0, 10])
        changed = receive(rx, 1, _has_width(10))[0]
        assert changed.data.format_changed
        assert values(changed)["image"].shape == (10, 10)
        assert [m.data.format_changed for m in receive(rx, 3)] == [False] * 3


def test_header_once_never_rebuilt(tmp_path, camera):
    with pipeline(tmp_path, camera, create_header="once", function="transparent", abort_on_error=False) as inst:
        rx = inst.receiver()
        first = receive(rx, 3)
        assert [m.data.format_changed for m in first[1:]] == [False, False]
        inst.update(image_region_of_interest=[0, 10, 0, 10])
        # the declared image shape no longer fits: frames fail instead of changing the header
        wait_until(lambda: inst.stats()["errors"] >= 3, 10, "send errors with the old header")
        assert "declared shape [80]" in inst.info()["last_error"]
        inst.update(image_region_of_interest=None)
        later = receive(rx, 2, skip=1)
        assert all(values(m)["image"].shape == (60, 80) for m in later)
        assert not any(m.data.format_changed for m in later)


def test_push_mode_delivers_to_pull_client(tmp_path, camera):
    with pipeline(tmp_path, camera, mode="PUSH", queue_size=5, function="transparent") as inst:
        rx = inst.receiver(mode=PULL)
        messages = receive(rx, 5)
        pids = [m.data.pulse_id for m in messages]
        assert pids == sorted(pids)
        assert inst.config["block"] is True


def test_push_non_blocking_drops_when_queue_is_full(tmp_path):
    big = gaussian_image(width=1024, height=1024)  # 2 MB frames fill the socket buffers quickly
    with FakeCamera(image=big, rate=50) as cam, \
            pipeline(tmp_path, cam, mode="PUSH", block=False, queue_size=1, no_client_timeout=0,
                     function="transparent") as inst:
        rx = inst.receiver(mode=PULL, queue_size=1)  # connected, never reading
        wait_until(lambda: inst.stats()["dropped"] >= 5, 15, "full-queue drops")
        stats = inst.stats()
        assert stats["frames_out"] < stats["frames_in"]
        # reading again drains the queue and messages flow again
        assert len(receive(rx, 3)) == 3


def test_push_blocking_without_client_keeps_instance_responsive(tmp_path, camera):
    with pipeline(tmp_path, camera, mode="PUSH", block=True, no_client_timeout=0, function="transparent") as inst:
        wait_until(lambda: inst.stats()["dropped"] >= 1, 10, "a blocked send to time out")
        assert inst.stats()["frames_out"] == 0
        inst.process.stop(5)
        assert inst.process.exitcode == 0  # ended its loop itself (a terminated process has exit code -15)


def test_no_client_timeout_exits_zero_when_nobody_listens(tmp_path, camera):
    with pipeline(tmp_path, camera, no_client_timeout=1) as inst:
        assert inst.wait_exit() == 0
        assert inst.info()["last_error"] is None


def test_no_client_timeout_waits_while_a_client_is_connected(tmp_path, camera):
    with pipeline(tmp_path, camera, no_client_timeout=1, function="transparent") as inst:
        rx = inst.receiver()
        receive(rx, 1)
        wait_until(lambda: inst.stats()["frames_out"] >= 100, 10, "100 frames with the client connected")
        assert inst.process.is_alive()
        rx.disconnect()
        assert inst.wait_exit() == 0


def test_values_python_types_are_mapped(tmp_path, camera):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "types.py").write_text(
        "import numpy as np\n"
        "def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):\n"
        "    return {'i': 3, 'f': 1.5, 's': 'text', 'l': [1, 2, 3], 'n': None, 'b': True,\n"
        "            'd': {'a': 1}, 'arr': np.array([1.5, 2.5], dtype=np.float32)}\n")
    with pipeline(tmp_path, camera, function="types.py") as inst:
        message = receive(inst.receiver(), 1, skip=1)[0]
    out = values(message)
    types = {c.name: c.type for c in message.data.channels}
    assert types == {"i": "int64", "f": "float64", "s": "string", "l": "int64", "n": "float64", "b": "int64",
                     "d": "string", "arr": "float32"}
    assert out["i"] == 3 and out["f"] == 1.5 and out["s"] == "text" and out["n"] is None and out["b"] == 1
    np.testing.assert_array_equal(out["l"], [1, 2, 3])
    assert out["d"] == '{"a": 1}'


def test_buffer_size_holds_messages_until_a_client_reads(tmp_path, camera):
    with pipeline(tmp_path, camera, mode="PUSH", queue_size=1, buffer_size=20, no_client_timeout=0,
                  function="transparent") as inst:
        wait_until(lambda: inst.stats()["frames_in"] >= 40, 10, "frames while nobody reads")
        first_in = camera.pulse_id - inst.stats()["frames_in"]  # roughly the first pulse the instance saw
        messages = receive(inst.receiver(mode=PULL), 25)
        pids = [m.data.pulse_id for m in messages]
        # the oldest messages were kept: the first 20+ arrive in sequence from the instance's start
        assert pids[:20] == list(range(pids[0], pids[0] + 20))
        assert pids[0] <= first_in + 5


def test_buffer_size_drops_new_frames_while_the_buffer_is_full(tmp_path, camera):
    """Once the buffer is full the newest frames are dropped (counted), so the buffered first frames survive."""
    with pipeline(tmp_path, camera, mode="PUSH", queue_size=1, buffer_size=10, no_client_timeout=0,
                  function="transparent") as inst:
        wait_until(lambda: inst.stats()["dropped"] >= 20, 10, "frames dropped while nobody reads")
        messages = receive(inst.receiver(mode=PULL), 15)
    pids = [m.data.pulse_id for m in messages]
    assert pids[:10] == list(range(pids[0], pids[0] + 10))  # the buffered first frames, in order
    assert pids[14] - pids[0] >= 30  # then frames produced after the drops: nothing of those 20 was queued


def test_output_stream_connects_to_a_bound_receiver(tmp_path, camera):
    from cam_server.bsread import Source
    from cam_server.bsread.endpoints import BIND
    from tests.pipeline_instance.harness import unique_ipc_address

    address = unique_ipc_address("fanin")
    with Source(address=address, mode=PULL, conn_type=BIND, receive_timeout=200) as rx, \
            pipeline(tmp_path, camera, output_stream=address, mode="PUSH", function="transparent"):
        assert values(receive(rx, 2)[-1])["width"] == 80
        # (no client-count check: the bsread Sender attaches its monitor after connect(), so a fast connect's
        # EVENT_CONNECTED can be missed and the count stays 0 — reported to the bsread owner)
