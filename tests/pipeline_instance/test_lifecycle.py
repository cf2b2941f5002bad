"""Instance life: live config updates, camera timeout and reconnection, stop, store type, processing threads."""

from __future__ import annotations

import time

import numpy as np

from tests.helpers.procs import wait_until
from tests.helpers.streams import receive, values
from tests.pipeline_instance.harness import PULL, FakeCamera, FakeCameraServer, gaussian_image, pipeline


def test_live_config_applies_within_a_couple_of_frames(tmp_path):
    with FakeCamera(rate=50) as camera, pipeline(tmp_path, camera, function="transparent") as inst:
        rx = inst.receiver()
        receive(rx, 2)
        inst.update(image_region_of_interest=[0, 16, 0, 8])
        sent_at = camera.pulse_id
        changed = receive(rx, 1, lambda m: values(m)["width"] == 16)[0]
        # the camera pulse id when the update was sent vs the first frame processed with it: the config is
        # polled before every message, so this is 1-2 frames (50 Hz camera); the margin is for loaded machines
        assert changed.data.pulse_id - sent_at <= 10
        assert values(changed)["image"].shape == (8, 16)


def test_stop_request_exits_zero(tmp_path):
    with FakeCamera(rate=50) as camera, pipeline(tmp_path, camera) as inst:
        receive(inst.receiver(), 1)
        inst.process.stop(5)
        assert inst.process.exitcode == 0


def test_camera_timeout_reconnects_to_the_stream_from_the_camera_server(tmp_path):
    first = FakeCamera(rate=50, start_pulse_id=0).start()
    second = FakeCamera(rate=50, start_pulse_id=100000)
    try:
        with FakeCameraServer(second.address) as server, \
                pipeline(tmp_path, first, cam_server_url=server.url, camera_timeout=1.0,
                         function="transparent") as inst:
            rx = inst.receiver()
            assert receive(rx, 2)[0].data.pulse_id < 100000
            first.stop()  # camera restarted elsewhere: the camera server now gives the second address
            second.start()
            message = receive(rx, 1, lambda m: m.data.pulse_id >= 100000, timeout=15)[0]
            assert values(message)["width"] == 80
            assert server.requests >= 1
            assert inst.process.is_alive()
    finally:
        first.stop()
        second.stop()


def test_camera_timeout_gives_up_when_camera_server_unreachable_past_camera_server_timeout(tmp_path):
    camera = FakeCamera(rate=50).start()
    try:
        with pipeline(tmp_path, camera, camera_timeout=1.0, camera_server_timeout=1.0) as inst:
            receive(inst.receiver(), 1)
            camera.stop()
            assert inst.wait_exit() == 1
            error = inst.info()["last_error"]
            assert "Cannot reach camera server" in error and "camera_server_timeout 1 s" in error
    finally:
        camera.stop()


def test_camera_timeout_disabled_keeps_waiting(tmp_path):
    camera = FakeCamera(rate=50).start()
    try:
        with pipeline(tmp_path, camera, camera_timeout=0, no_client_timeout=0) as inst:
            wait_until(lambda: inst.stats()["frames_in"] >= 2, 10, "frames")
            camera.stop()
            time.sleep(2.5)  # longer than a 1 s camera timeout would allow
            assert inst.process.is_alive()
    finally:
        camera.stop()


def test_initial_camera_stream_is_requested_from_the_camera_server(tmp_path):
    with FakeCamera(rate=50) as camera, FakeCameraServer(camera.address) as server, \
            pipeline(tmp_path, cam_server_url=server.url, function="transparent") as inst:
        assert values(receive(inst.receiver(), 1)[0])["width"] == 80
        assert server.requests == 1


def test_input_stream_instead_of_camera(tmp_path):
    with FakeCamera(rate=50) as camera, \
            pipeline(tmp_path, camera_name=None, input_stream=camera.address, function="transparent") as inst:
        assert values(receive(inst.receiver(), 1)[0])["height"] == 60


def test_store_pipeline_forwards_camera_channels(tmp_path):
    with FakeCamera(rate=50, extra={"extra_value": 1.5}) as camera, \
            pipeline(tmp_path, camera, pipeline_type="store", exclude=["timestamp"]) as inst:
        message = receive(inst.receiver(PULL), 1, skip=1)[0]  # store pipelines PUSH by default
    out = values(message)
    assert list(out) == ["width", "height", "image", "x_axis", "y_axis", "extra_value", "fake:FPICTURE"]
    np.testing.assert_array_equal(out["image"], gaussian_image())
    np.testing.assert_array_equal(out["fake:FPICTURE"], gaussian_image())
    assert out["extra_value"] == 1.5


def test_processing_threads_keep_order_and_results(tmp_path):
    with FakeCamera(rate=100) as camera, pipeline(tmp_path, camera, processing_threads=2) as inst:
        messages = receive(inst.receiver(), 20, skip=1)
    pids = [m.data.pulse_id for m in messages]
    assert pids == sorted(pids) and len(set(pids)) == 20
    assert all(values(m)["max_value"] == 4100 for m in messages)


def test_processing_threads_deliver_failing_frames_in_order_without_abort(tmp_path):
    """A frame whose function raises is counted and skipped in its place; the others keep their order."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "fail_some.py").write_text(
        "import time\n"
        "def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):\n"
        "    time.sleep(0.002 * ((pulse_id * 7) % 5))  # later frames often finish first\n"
        "    if pulse_id % 4 == 1:\n"
        "        raise ValueError(f'bad frame {pulse_id}')\n"
        "    return {'pid': pulse_id}\n")
    with FakeCamera(rate=100) as camera, pipeline(tmp_path, camera, processing_threads=3, abort_on_error=False,
                                                  function="fail_some.py") as inst:
        messages = receive(inst.receiver(), 20, skip=1)
        stats, info = inst.stats(), inst.info()
    pids = [m.data.pulse_id for m in messages]
    assert pids == sorted(set(pids)) and len(pids) == 20
    assert all(pid % 4 != 1 for pid in pids)
    assert all(values(m)["pid"] == m.data.pulse_id for m in messages)
    assert stats["errors"] >= 1
    assert "Processing function failed at pulse id" in info["last_error"]
    assert "ValueError: bad frame" in info["last_error"]


def test_unknown_pipeline_type_has_a_clear_error():
    import pytest

    from cam_server.common.errors import CamServerError
    from cam_server.pipeline.instance.main import pipeline_type

    with pytest.raises(CamServerError, match="pipeline_type 'nope' is not supported .supported: processing, "):
        pipeline_type("nope")


def test_processing_threads_with_records_and_abort(tmp_path):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "fail_late.py").write_text(
        "def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):\n"
        "    if parameters.get('fail'):\n"
        "        raise RuntimeError('late failure')\n"
        "    return {'pulse': pulse_id}\n")
    with FakeCamera(rate=100) as camera:
        with pipeline(tmp_path, camera, processing_threads=2, records=5, paused=True) as inst:
            rx = inst.receiver()
            wait_until(lambda: inst.stats()["clients"] >= 1, 10, "the receiver")
            inst.update(paused=False)
            assert inst.wait_exit() == 0
            assert len(receive(rx, 5)) == 5 and rx.receive() is None
        with pipeline(tmp_path, camera, processing_threads=2, function="fail_late.py") as inst:
            receive(inst.receiver(), 2)
            inst.update(fail=True)
            assert inst.wait_exit() == 2
            assert "RuntimeError: late failure" in inst.info()["last_error"]


def test_abort_on_timeout_stops_instead_of_reconnecting(tmp_path):
    camera = FakeCamera(rate=50).start()
    try:
        with FakeCameraServer(camera.address) as server, \
                pipeline(tmp_path, camera, cam_server_url=server.url, camera_timeout=1.0,
                         abort_on_timeout=True) as inst:
            receive(inst.receiver(), 1)
            camera.stop()
            assert inst.wait_exit() == 1
            assert "abort_on_timeout" in inst.info()["last_error"]
            assert server.requests == 0
    finally:
        camera.stop()


def test_live_change_of_input_stream_reconnects(tmp_path):
    with FakeCamera(rate=50, start_pulse_id=0) as first, FakeCamera(rate=50, start_pulse_id=500000) as second, \
            pipeline(tmp_path, camera_name=None, input_stream=first.address, function="transparent") as inst:
        rx = inst.receiver()
        assert receive(rx, 1)[0].data.pulse_id < 500000
        inst.update(input_stream=second.address)
        receive(rx, 1, lambda m: m.data.pulse_id >= 500000)


def test_start_fails_clearly_when_camera_server_is_down_and_camera_server_timeout_is_0(tmp_path):
    # no camera stream given and nothing listening at cam_server_url
    with pipeline(tmp_path, camera_server_timeout=0) as inst:
        assert inst.wait_exit() == 1
        error = inst.info()["last_error"]
        assert "Cannot reach camera server" in error and "'fake'" in error


def test_start_waits_for_the_camera_server_by_default(tmp_path):
    with pipeline(tmp_path, no_client_timeout=0) as inst:
        wait_until(lambda: inst.stats()["state"] == "waiting for camera server", 10, "the wait")
        assert inst.stats()["waiting_since"] > 0 and inst.process.is_alive()
        error = inst.info()["last_error"]
        assert "Cannot reach camera server" in error and "waiting for the camera server" in error


def test_stream_timeout_applies_to_a_plain_input_stream(tmp_path):
    camera = FakeCamera(rate=50).start()
    try:
        with pipeline(tmp_path, camera_name=None, input_stream=camera.address, function="transparent",
                      camera_timeout=None, stream_timeout=1.0, abort_on_timeout=True) as inst:
            receive(inst.receiver(), 1)
            camera.stop()
            assert inst.wait_exit() == 1  # camera_timeout is disabled: stream_timeout ended it
            assert "abort_on_timeout" in inst.info()["last_error"]
    finally:
        camera.stop()
