"""The instance against the real camera server (the shared one) streaming a simulated camera."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import requests

from cam_server.client.cam_client import CamClient
from tests.helpers.servers import ServerPair
from tests.helpers.streams import receive, values
from tests.pipeline_instance.harness import pipeline

CAMERA = "pi_simulation"


@pytest.fixture(scope="module")
def cam_url(servers: ServerPair) -> Iterator[str]:
    """The shared camera server, with a small simulated camera :data:`CAMERA` (320 x 240 at 20 Hz) for this
    module."""
    client = CamClient(servers.camera.url)
    client.set_camera_config(CAMERA, {"source": "simulation", "source_type": "simulation", "mirror_x": False,
                                      "mirror_y": False, "rotate": 0, "camera_calibration": None, "size_x": 320,
                                      "size_y": 240, "frame_rate": 20})
    yield servers.camera.url
    client.delete_camera_config(CAMERA)


def test_simulation_camera_through_the_instance(tmp_path, cam_url):
    with pipeline(tmp_path, cam_server_url=cam_url, camera_name=CAMERA,
                  image_region_of_interest=[60, 200, 70, 100]) as inst:
        messages = receive(inst.receiver(), 3, timeout=20)
        out = values(messages[-1])
        assert out["image"].shape == (100, 200) and out["image"].dtype == np.uint16
        np.testing.assert_array_equal(out["x_axis"], np.arange(60, 260, dtype=np.float32))
        # the simulated beam core (centre of the 320x240 frame, saturated at 0.9 * 65535) lies inside this ROI
        assert out["max_value"] == 58981
        assert 100 < out["x_fit_mean"] < 200 and 90 < out["y_fit_mean"] < 150
        pids = [m.data.pulse_id for m in messages]
        assert pids == sorted(pids)


def test_reconnects_after_the_camera_instance_was_stopped(tmp_path, cam_url):
    with pipeline(tmp_path, cam_server_url=cam_url, camera_name=CAMERA, camera_timeout=1.0,
                  function="transparent") as inst:
        rx = inst.receiver()
        before = receive(rx, 2, timeout=20)[-1].data.pulse_id
        assert requests.delete(f"{cam_url}/api/v1/cam/{CAMERA}", timeout=10).json()["state"] == "ok"
        # a new camera instance restarts its pulse ids at 0
        message = receive(rx, 1, lambda m: m.data.pulse_id < before, timeout=20)[0]
        assert values(message)["width"] == 320
        assert inst.process.is_alive()
