"""Per-message gates and output filtering: paused, pid_range, downsampling, max_frame_rate, records,
include/exclude, enforce_pid."""

from __future__ import annotations

import pytest

from tests.helpers.procs import wait_until
from tests.helpers.streams import receive, values
from tests.pipeline_instance.harness import FakeCamera, pipeline


@pytest.fixture
def camera():
    with FakeCamera(rate=50, start_pulse_id=1000) as cam:
        yield cam


def _wait_client(inst):
    wait_until(lambda: inst.stats()["clients"] >= 1, 10, "the receiver to connect")


def test_downsampling_passes_one_of_n(tmp_path, camera):
    with pipeline(tmp_path, camera, downsampling=2) as inst:
        pids = [m.data.pulse_id for m in receive(inst.receiver(), 4, skip=1)]
    assert [b - a for a, b in zip(pids, pids[1:], strict=False)] == [2, 2, 2]


def test_max_frame_rate_limits_output(tmp_path, camera):
    with pipeline(tmp_path, camera, max_frame_rate=4) as inst:
        pids = [m.data.pulse_id for m in receive(inst.receiver(), 3, skip=1)]
        assert inst.stats()["dropped"] > 0
    # 50 Hz in, at most 4 Hz out: about 12 camera frames between outputs (1 without the limit); the margin
    # absorbs a stalled camera thread on a loaded machine
    assert min(b - a for a, b in zip(pids, pids[1:], strict=False)) >= 4


def test_paused_drops_everything_until_resumed(tmp_path, camera):
    with pipeline(tmp_path, camera, paused=True) as inst:
        rx = inst.receiver()
        wait_until(lambda: inst.stats()["dropped"] >= 10, 10, "paused frames to be dropped")
        assert rx.receive() is None and inst.stats()["frames_out"] == 0
        inst.update(paused=False)
        assert len(receive(rx, 2)) == 2


def test_pid_range_start_zero_disables_then_range_is_sent_and_instance_finishes(tmp_path, camera):
    with pipeline(tmp_path, camera, pid_range=[0, 0]) as inst:
        rx = inst.receiver()
        wait_until(lambda: inst.stats()["dropped"] >= 5, 10, "frames dropped while start_pid is 0")
        assert inst.stats()["frames_out"] == 0
        start = camera.pulse_id + 10
        inst.update(pid_range=[start, start + 9])
        assert inst.wait_exit() == 0
        pids = [m.data.pulse_id for m in receive(rx, 10)]
        assert pids == list(range(start, start + 10))
        assert rx.receive() is None
        assert inst.info()["last_error"] is None


def test_records_finishes_after_n_messages(tmp_path, camera):
    with pipeline(tmp_path, camera, records=5, paused=True) as inst:
        rx = inst.receiver()
        _wait_client(inst)
        inst.update(paused=False)
        assert inst.wait_exit() == 0
        messages = receive(rx, 5)
        assert rx.receive() is None
        pids = [m.data.pulse_id for m in messages]
        assert pids == list(range(pids[0], pids[0] + 5))
        assert inst.stats()["frames_out"] == 5


def test_include_keeps_listed_names_in_order_with_missing_as_empty(tmp_path, camera):
    with pipeline(tmp_path, camera, include=["x_fit_mean", "width", "not_produced"]) as inst:
        out = values(receive(inst.receiver(), 1, skip=1)[0])
    assert list(out) == ["x_fit_mean", "width", "not_produced"]
    assert out["not_produced"] is None and out["width"] == 80


def test_exclude_removes_names(tmp_path, camera):
    with pipeline(tmp_path, camera, exclude=["image", "processing_parameters"]) as inst:
        out = values(receive(inst.receiver(), 1, skip=1)[0])
    assert "image" not in out and "processing_parameters" not in out and "x_fit_mean" in out


@pytest.mark.parametrize("enforce", [True, False])
def test_enforce_pid_drops_pulse_ids_going_back(tmp_path, camera, enforce):
    with pipeline(tmp_path, camera, enforce_pid=enforce, max_frame_rate=None) as inst:
        rx = inst.receiver()
        before = receive(rx, 3, skip=1)
        last = before[-1].data.pulse_id
        camera.pulse_id = 10  # the camera restarts its pulse ids
        if enforce:
            wait_until(lambda: camera.pulse_id > 30, 10, "the camera to send low pulse ids")
            later = [m for m in (rx.receive() for _ in range(5)) if m is not None]
            assert all(m.data.pulse_id > last for m in later)
            assert not later or all(m.data.pulse_id >= 1000 for m in later)
            assert inst.stats()["dropped"] >= 10
        else:
            low = [m.data.pulse_id for m in receive(rx, 30) if m.data.pulse_id < last]
            assert low and min(low) < 100
