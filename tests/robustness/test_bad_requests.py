"""Bad requests against real camera + pipeline servers: each gets a clear 4xx JSON envelope and changes no file.

Regression tests for what fuzzing (schemathesis) and hand-written probes found: 500s on deep JSON, huge numbers,
``scale=inf`` and camera names that are camera-server routes; a trailing or encoded ``/`` redirected to "stop all";
unlimited bodies; NaN/Infinity and out-of-range values saved into config files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from tests.helpers.servers import RunningServer, camera_server, pipeline_server

CAM = "/api/v1/cam"
PIPE = "/api/v1/pipeline"
JSON = {"content-type": "application/json"}
SIM_CAMERA = {"source": "simulation", "source_type": "simulation", "size_x": 64, "size_y": 48, "frame_rate": 10}


@dataclass
class Servers:
    camera: RunningServer
    pipeline: RunningServer

    def files(self) -> dict[str, str]:
        """Digest of every config file of both servers (to prove a failed request wrote nothing)."""
        paths = [*self.camera.base.rglob("*"), *self.pipeline.base.rglob("*")]
        return {str(p): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(paths) if p.is_file()}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    tmp = tmp_path_factory.mktemp("robustness")
    with camera_server(tmp) as cam, pipeline_server(tmp, cam.url) as pipe:
        yield Servers(cam, pipe)


def send(servers: Servers, method: str, path: str, body: bytes | str | None = None, **kwargs) -> requests.Response:
    url = (servers.camera.url if path.startswith(CAM) else servers.pipeline.url) + path
    headers = JSON if body is not None else None
    return requests.request(method, url, data=body, headers=headers, timeout=30, allow_redirects=False, **kwargs)


def assert_error(response: requests.Response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["state"] == "error"
    assert message in body["status"], body["status"]


CONFIG_ROUTES = [f"{CAM}/simulation/config", f"{CAM}/new_camera/config", PIPE, f"{PIPE}/simulation_sp/config",
                 f"{PIPE}/new_pipeline/config"]


@pytest.mark.parametrize("path", CONFIG_ROUTES)
@pytest.mark.parametrize(("body", "status", "message"), [
    ("[" * 100_000 + "]" * 100_000, 400, "Request body is nested too deeply"),  # was 500 RecursionError
    ('{"camera_name": "simulation", "x": NaN}', 400, "NaN is not a JSON value"),  # was saved, then unreadable
    ('{"camera_name": "simulation", "x": -Infinity}', 400, "-Infinity is not a JSON value"),
    ('{"x": "' + "a" * 2_000_000 + '"}', 413, "Request body too large"),  # was accepted and saved (any size)
    ("[1, 2]", 400, "Request body must be a JSON object, not an array"),
    ("null", 400, "Request body must be a JSON object, not null"),
])
def test_bad_bodies_are_refused_and_write_nothing(servers, path, body, status, message):
    before = servers.files()
    assert_error(send(servers, "POST", path, body), status, message)
    assert servers.files() == before


@pytest.mark.parametrize(("key", "value", "message"), [
    ("port", True, "'port': must be a number, not True"),  # pydantic read true as port 1
    ("size_x", True, "'size_x': must be a number, not True"),
    ("frame_rate", "NaN", "'frame_rate': Input should be a finite number"),
    ("no_client_timeout", "Infinity", "'no_client_timeout': Input should be a finite number"),
    ("size_y", 10**50, "'size_y': Input should be less than or equal to 65536"),
    ("queue_size", 10**40, "'queue_size': Input should be less than or equal to 1000000"),
    ("connection_timeout", "abc", "'connection_timeout' must be a positive number of seconds, not 'abc'"),
    ("camera_calibration", {"angle_horizontal": "NaN"},
     "'camera_calibration.angle_horizontal': Input should be a finite number"),
    ("camera_calibration", {"reference_marker": [0, 0, True, 100]},
     "'camera_calibration.reference_marker': must be a number"),
])
def test_bad_camera_config_values_are_refused(servers, key, value, message):
    before = servers.files()
    response = send(servers, "POST", f"{CAM}/simulation/config", json.dumps({**SIM_CAMERA, key: value}))
    assert_error(response, 400, "Invalid camera config 'simulation': " + message)
    assert servers.files() == before


@pytest.mark.parametrize(("key", "value", "message"), [
    ("image_threshold", 10**400, "'image_threshold': must be a finite number, not 1000000000"),  # was 500
    ("max_frame_rate", -(10**400), "'max_frame_rate': must be a finite number"),  # was 500
    ("rotation", {"angle": 5, "mode": 10**400}, "'rotation.mode': must be one of reflect"),  # was 500
    ("rotation", {"angle": True}, "'rotation.angle': must be a number, not True"),
    ("stream_timeout", "NaN", "'stream_timeout': Input should be a finite number"),
    ("queue_size", True, "'queue_size': must be a number, not True"),
    ("downsampling", 1e308, "'downsampling': must be an integer >= 0 (at most 2147483647 in size)"),
    ("processing_threads", 10**6, "'processing_threads': must be an integer >= 0 (at most 256 in size)"),
    ("image_slices", {"number_of_slices": True}, "'image_slices.number_of_slices': must be a number, not True"),
    ("input_stream", "localhost:9000", "'input_stream': must be a stream address like tcp://host:port"),
    ("bsread_address", "tcp://host:99999", "'bsread_address': must be a stream address"),
])
@pytest.mark.parametrize("path", [PIPE, f"{PIPE}/simulation_sp/config"])
def test_bad_pipeline_config_values_are_refused(servers, path, key, value, message):
    before = servers.files()
    response = send(servers, "POST", path, json.dumps({"camera_name": "simulation", key: value}))
    assert_error(response, 400, "Invalid pipeline config: " + message)
    assert servers.files() == before
    assert requests.get(f"{servers.pipeline.url}{PIPE}/info", timeout=10).json()["info"]["active_instances"] == {}


@pytest.mark.parametrize("camera", ["info", "aliases", "groups", "script"])
def test_camera_server_routes_are_not_cameras_for_the_pipeline_server(servers, camera):
    # Was 500 "KeyError: 'stream'": the camera server answered its fixed route, which has no stream address.
    message = f"Camera '{camera}' does not exist on the camera server."
    assert_error(send(servers, "POST", f"{PIPE}/camera/{camera}/background"), 404, message)
    assert_error(send(servers, "POST", PIPE, json.dumps({"camera_name": camera})), 404, message)


@pytest.mark.parametrize("query", ["scale=inf", "scale=-1", "scale=nan", "min_value=nan", "max_value=-inf"])
def test_bad_image_options_are_refused_before_waiting_for_a_frame(servers, query):
    # scale=inf was 500 (OverflowError); min/max NaN rendered garbage. "nocamera" proves no frame is awaited.
    name = query.split("=")[0]
    assert_error(send(servers, "GET", f"{CAM}/nocamera/image?{query}"), 400, f"Invalid {name}")


def test_trailing_or_encoded_slash_does_not_stop_every_instance(servers):
    # Was a 307 redirect to the collection route: DELETE /api/v1/cam/%2F stopped every camera instance.
    assert requests.get(f"{servers.camera.url}{CAM}/simulation", timeout=30).json()["state"] == "ok"
    for path in (f"{CAM}/", f"{CAM}/%2F", f"{PIPE}/", f"{PIPE}/%2F"):
        response = send(servers, "DELETE", path)
        assert_error(response, 404, "is not a route of this server (see /docs). Names cannot contain '/'")
    info = requests.get(f"{servers.camera.url}{CAM}/info", timeout=10).json()["info"]
    assert "simulation" in info["active_instances"]
    requests.delete(f"{servers.camera.url}{CAM}/simulation", timeout=30)


def test_unknown_routes_and_methods_say_what_was_asked(servers):
    assert_error(send(servers, "GET", f"{CAM}/simulation/nothing"), 404,
                 f"Not Found: GET {CAM}/simulation/nothing is not a route of this server")
    assert_error(send(servers, "PATCH", f"{PIPE}/simulation_sp/config"), 405,
                 f"Method PATCH is not allowed on {PIPE}/simulation_sp/config; use")


def test_script_upload_larger_than_the_limit_is_refused_unread(servers):
    response = send(servers, "PUT", f"{PIPE}/script/big/script_bytes", b"#" * (5 * 1024 * 1024))
    assert_error(response, 413, "Request body too large: 5242880 bytes (at most 4194304)")


def test_servers_stay_healthy(servers):
    assert requests.get(f"{servers.camera.url}{CAM}", timeout=10).json()["cameras"] == ["simulation"]
    assert requests.get(f"{servers.pipeline.url}{PIPE}", timeout=10).json()["pipelines"] == ["simulation_sp"]
    assert "Internal error" not in servers.camera.log_text() + servers.pipeline.log_text()
