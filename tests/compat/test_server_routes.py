"""Server-level routes PSI's clients call on both servers: version, config names and the log ring (real servers)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from cam_server import __version__
from cam_server.client.cam_client import CamClient
from cam_server.client.pipeline_client import PipelineClient
from cam_server.common.log_ring import LogRing, install_log_ring
from tests.helpers.servers import TEST_CAMERA, RunningServer, camera_server, pipeline_server, write_config_dir

LOG_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}$")


@dataclass
class Servers:
    camera: RunningServer
    pipeline: RunningServer


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    tmp = tmp_path_factory.mktemp("server_routes")
    with camera_server(tmp, config_dir=write_config_dir(tmp / "configs")) as cam, \
            pipeline_server(tmp, cam.url) as pipe:
        yield Servers(cam, pipe)


@pytest.fixture
def cam(servers: Servers) -> Iterator[CamClient]:
    client = CamClient(servers.camera.url)
    yield client
    client.stop_all_instances()


@pytest.fixture
def pipe(servers: Servers) -> PipelineClient:
    return PipelineClient(servers.pipeline.url)


def test_version_on_both_servers(servers: Servers, cam: CamClient, pipe: PipelineClient) -> None:
    assert cam.get_version() == __version__ and pipe.get_version() == __version__
    for url in (f"{servers.camera.url}/api/v1/cam/version", f"{servers.pipeline.url}/api/v1/pipeline/version"):
        response = requests.get(url, timeout=10)
        assert response.status_code == 200
        assert response.json() == {"state": "ok", "status": "Version.", "version": __version__}


def test_config_names_on_both_servers(cam: CamClient, pipe: PipelineClient) -> None:
    assert cam.get_config_names() == ["simulation", "test_camera"]
    pipelines = pipe.get_config_names()
    assert pipelines == pipe.get_pipelines() and "simulation_sp" in pipelines
    cam.set_camera_config("names_cam", {**TEST_CAMERA, "alias": [], "group": []})
    pipe.save_pipeline_config("names_pipe", {"camera_name": "simulation"})
    try:
        assert cam.get_config_names() == ["names_cam", "simulation", "test_camera"]
        assert "names_pipe" in pipe.get_config_names()
    finally:
        cam.delete_camera_config("names_cam")
        pipe.delete_pipeline_config("names_pipe")
    assert "names_cam" not in cam.get_config_names() and "names_pipe" not in pipe.get_config_names()


def test_fixed_route_names_are_not_camera_names(servers: Servers, cam: CamClient) -> None:
    for name in ("version", "config_names"):
        response = requests.post(f"{servers.camera.url}/api/v1/cam/{name}/config",
                                 json={**TEST_CAMERA, "alias": [], "group": []}, timeout=10)
        assert response.status_code == 400
        assert response.json() == {"state": "error", "status": f"Invalid camera name '{name}': reserved by the "
                                                               "REST API."}
    assert cam.get_cameras() == ["simulation", "test_camera"]


def test_camera_server_logs(servers: Servers, cam: CamClient) -> None:
    stream = cam.get_instance_stream("test_camera")  # the manager logs "camera test_camera started (pid N) on ..."
    pid = cam.get_server_info()["active_instances"]["test_camera"]["pid"]
    logs = cam.get_logs()
    assert all(isinstance(r, list) and len(r) == 4 and LOG_TIME.match(r[0]) for r in logs)
    assert logs[0][1:3] == ["cam_server.cli.camera_server", "INFO"]  # the first record: the server's start
    assert logs[0][3].startswith("camera server on 127.0.0.1:")
    started = [r for r in logs if r[1] == "cam_server.camera.manager" and r[3].startswith("camera test_camera started")]
    assert started[-1][2:] == ["INFO", f"camera test_camera started (pid {pid}) on {stream}"]
    assert [r[0] for r in logs] == sorted(r[0] for r in logs)  # newest last

    response = requests.get(f"{servers.camera.url}/api/v1/logs/txt", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert lines == cam.get_logs(txt=True).splitlines()[:len(lines)]
    first = logs[0]
    assert lines[0] == f"{first[0]} INFO cam_server.cli.camera_server: {first[3]}"
    assert f"INFO cam_server.camera.manager: camera test_camera started (pid {pid}) on {stream}" in response.text


def test_pipeline_server_logs(servers: Servers, pipe: PipelineClient) -> None:
    logs = pipe.get_logs()
    assert logs[0][1:3] == ["cam_server.cli.pipeline_server", "INFO"]
    assert logs[0][3].startswith("pipeline server on 127.0.0.1:") and LOG_TIME.match(logs[0][0])
    text = pipe.get_logs(txt=True)
    assert isinstance(text, str) and text.splitlines()[0] == f"{logs[0][0]} INFO {logs[0][1]}: {logs[0][3]}"
    body = requests.get(f"{servers.pipeline.url}/api/v1/logs", timeout=10).json()
    assert body["state"] == "ok" and body["logs"][0] == logs[0]


@pytest.mark.unit
def test_log_ring_is_bounded_one_line_per_record_and_installed_once() -> None:
    ring = LogRing(capacity=3)
    logger = logging.getLogger("tests.compat.ring")
    logger.addHandler(ring)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        for i in range(5):
            logger.info("record %d", i)
        logger.debug("below the level: not kept")
        try:
            raise KeyError("k")
        except KeyError:
            logger.exception("failed\nsecond line")
    finally:
        logger.removeHandler(ring)
    records = ring.records()
    assert [r[1:] for r in records] == [["tests.compat.ring", "INFO", "record 3"],
                                        ["tests.compat.ring", "INFO", "record 4"],
                                        ["tests.compat.ring", "ERROR", "failed\nsecond line (KeyError: 'k')"]]
    lines = ring.text().splitlines()
    assert len(lines) == 3 and lines[2].endswith("ERROR tests.compat.ring: failed\\nsecond line (KeyError: 'k')")

    root = logging.getLogger()
    before = list(root.handlers)
    try:
        installed = install_log_ring()
        assert install_log_ring() is installed
        assert [h for h in root.handlers if isinstance(h, LogRing)] == [installed]
    finally:
        root.handlers[:] = before
