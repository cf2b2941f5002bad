"""One camera server + pipeline server (both with a user scripts folder) and one upstream bsread camera for the
whole folder: starting servers is the slow part, the tests only create instances."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from cam_server.client.cam_client import CamClient
from cam_server.client.pipeline_client import PipelineClient
from tests.user_code.helpers import (
    HEIGHT,
    WIDTH,
    Server,
    Upstream,
    camera_server_with_scripts,
    pipeline_server_with_scripts,
    relay_camera,
)

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
def servers(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[tuple[Server, Server]]:
    tmp = tmp_path_factory.mktemp("user_code")
    cameras = {"uc_relay": relay_camera(upstream),
               "uc_calibrated": relay_camera(upstream, camera_calibration=CALIBRATION)}
    for name, (mirror_x, mirror_y, rotate) in GEOMETRIES.items():
        cameras[name] = relay_camera(upstream, mirror_x=mirror_x, mirror_y=mirror_y, rotate=rotate)
    with camera_server_with_scripts(tmp, cameras) as cam, pipeline_server_with_scripts(tmp, cam.url) as pipe:
        yield cam, pipe


@pytest.fixture()
def cam_server(servers: tuple[Server, Server]) -> Server:
    return servers[0]


@pytest.fixture()
def pipeline_server(servers: tuple[Server, Server]) -> Server:
    return servers[1]


@pytest.fixture()
def pipelines(pipeline_server: Server) -> Iterator[PipelineClient]:
    client = PipelineClient(pipeline_server.url)
    yield client
    client.stop_all_instances()


@pytest.fixture()
def cameras(cam_server: Server) -> CamClient:
    return CamClient(cam_server.url)
