"""The user code tests run on the shared camera + pipeline servers (root conftest), with one upstream bsread camera
for the whole folder and bsread cameras relaying it saved on the shared camera server (deleted after the folder)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from cam_server.client.cam_client import CamClient
from cam_server.client.pipeline_client import PipelineClient
from tests.helpers.servers import RunningServer, ServerPair
from tests.user_code.helpers import HEIGHT, WIDTH, Upstream, relay_camera

CALIBRATION = {"reference_marker": [0, 0, WIDTH, HEIGHT], "reference_marker_width": WIDTH / 10,
               "reference_marker_height": HEIGHT / 20, "angle_horizontal": 0.0, "angle_vertical": 0.0}
GEOMETRIES = {  # camera name → (mirror_x, mirror_y, rotate)
    "uc_mirror_x": (True, False, 0),
    "uc_mirror_y_rotate_1": (False, True, 1),
    "uc_all_rotate_3": (True, True, 3),
}


def merge_data(pulse_id: int) -> dict[str, Any] | None:
    """The bsread data stream: only every third pulse id has data."""
    if pulse_id % 3:
        return None
    return {"energy": pulse_id / 10, "charge": np.array([pulse_id, 2 * pulse_id], dtype=np.int32), "ignored": 1.5}


@pytest.fixture(scope="package")
def upstream() -> Iterator[Upstream]:
    with Upstream(rate=100.0, data_for=merge_data) as stream:
        yield stream


@pytest.fixture(scope="package")
def relay_cameras(server_pair: ServerPair, upstream: Upstream) -> Iterator[list[str]]:
    """The cameras relaying ``upstream`` (``uc_*``), saved on the shared camera server for this folder only."""
    cameras = {"uc_relay": relay_camera(upstream),
               "uc_calibrated": relay_camera(upstream, camera_calibration=CALIBRATION)}
    for name, (mirror_x, mirror_y, rotate) in GEOMETRIES.items():
        cameras[name] = relay_camera(upstream, mirror_x=mirror_x, mirror_y=mirror_y, rotate=rotate)
    client = CamClient(server_pair.camera.url)
    for name, config in cameras.items():
        client.set_camera_config(name, config)
    yield list(cameras)
    client.stop_all_instances()
    for name in cameras:
        client.delete_camera_config(name)


@pytest.fixture()
def cam_server(servers: ServerPair, relay_cameras: list[str]) -> RunningServer:
    return servers.camera


@pytest.fixture()
def pipeline_server(servers: ServerPair, relay_cameras: list[str]) -> RunningServer:
    return servers.pipeline


@pytest.fixture()
def pipelines(pipeline_server: RunningServer) -> Iterator[PipelineClient]:
    client = PipelineClient(pipeline_server.url)
    yield client
    client.stop_all_instances()


@pytest.fixture()
def cameras(cam_server: RunningServer) -> CamClient:
    return CamClient(cam_server.url)
