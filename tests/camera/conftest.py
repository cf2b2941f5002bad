"""A real camera server process shared by the tests of a module, with small, fast test cameras."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cam_server.client.cam_client import CamClient
from tests.helpers.servers import EXAMPLE_CONFIG, RunningServer, camera_server

TEST_CAMERA = {
    "name": "test_camera",
    "source": "simulation",
    "source_type": "simulation",
    "mirror_x": True,
    "mirror_y": False,
    "rotate": 0,
    "camera_calibration": None,
    "alias": ["tc"],
    "group": ["test", "simulated_small"],
    "size_x": 64,
    "size_y": 48,
    "frame_rate": 20,
    "image_type": "static_beam",
}


def write_config_dir(folder: Path, test_camera: dict | None = None) -> Path:
    """The bundled example cameras plus ``test_camera`` (default :data:`TEST_CAMERA`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in (EXAMPLE_CONFIG / "camera_config").glob("*.json"):
        shutil.copy(path, folder / path.name)
    (folder / "test_camera.json").write_text(json.dumps(test_camera or TEST_CAMERA, indent=2))
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("camera_server")
    with camera_server(tmp, config_dir=write_config_dir(tmp / "configs")) as running:
        yield running


@pytest.fixture()
def client(server: RunningServer) -> Iterator[CamClient]:
    cam = CamClient(server.url)
    yield cam
    cam.stop_all_instances()
