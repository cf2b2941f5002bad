"""Bad requests to the camera and pipeline apps: each gets a clear 4xx JSON envelope and changes no file.

Regression tests for what fuzzing (schemathesis) and hand-written probes found: 500s on deep JSON, huge numbers,
``scale=inf`` and camera names that are camera-server routes; unlimited bodies; NaN/Infinity and out-of-range values
saved into config files. None of these requests starts an instance, so both apps run in this process
(``apps``, :mod:`tests.helpers.apps`); a trailing or encoded ``/`` that stopped every instance is tested against running
instances in test_stop_routes.py.
"""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from tests.helpers.apps import LocalApps

pytestmark = pytest.mark.unit

CAM = "/api/v1/cam"
PIPE = "/api/v1/pipeline"
JSON = {"content-type": "application/json"}
SIM_CAMERA = {"source": "simulation", "source_type": "simulation", "size_x": 64, "size_y": 48, "frame_rate": 10}


def files(apps: LocalApps) -> dict[str, str]:
    """Digest of every config file of both apps (to prove a failed request wrote nothing)."""
    paths = [*apps.camera.base.rglob("*"), *apps.pipeline.base.rglob("*")]
    return {str(p): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(paths) if p.is_file()}


def send(apps: LocalApps, method: str, path: str, body: bytes | str | None = None, **kwargs) -> httpx.Response:
    app = apps.camera if path.startswith(CAM) else apps.pipeline
    headers = JSON if body is not None else None
    return app.http.request(method, path, content=body, headers=headers, follow_redirects=False, **kwargs)


def assert_error(response: httpx.Response, status: int, message: str) -> None:
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
def test_bad_bodies_are_refused_and_write_nothing(apps, path, body, status, message):
    before = files(apps)
    assert_error(send(apps, "POST", path, body), status, message)
    assert files(apps) == before


@pytest.mark.parametrize(("key", "value", "message"), [
    ("port", True, "'port': must be a number, not True"),  # pydantic read true as port 1
    ("size_x", True, "'size_x': must be a number, not True"),
    ("frame_rate", "NaN", "'frame_rate': must be a number, not 'NaN'"),  # a string is no number (nor "5")
    ("no_client_timeout", "Infinity", "'no_client_timeout': must be a number, not 'Infinity'"),
    ("size_y", 10**50, "'size_y': Input should be less than or equal to 65536"),
    ("queue_size", 10**40, "'queue_size': Input should be less than or equal to 1000000"),
    ("connection_timeout", "abc", "'connection_timeout' must be a positive number of seconds up to 3600, "
                                  "not 'abc'"),
    ("connection_timeout", 1e9, "'connection_timeout' must be a positive number of seconds up to 3600, "
                                "not 1000000000.0"),
    ("camera_calibration", {"angle_horizontal": "NaN"},
     "'camera_calibration.angle_horizontal': must be a number, not 'NaN'"),
    ("camera_calibration", {"reference_marker": [0, 0, True, 100]},
     "'camera_calibration.reference_marker': must be a number"),
])
def test_bad_camera_config_values_are_refused(apps, key, value, message):
    before = files(apps)
    response = send(apps, "POST", f"{CAM}/simulation/config", json.dumps({**SIM_CAMERA, key: value}))
    assert_error(response, 400, "Invalid camera config 'simulation': " + message)
    assert files(apps) == before


@pytest.mark.parametrize(("key", "value", "message"), [
    ("image_threshold", 10**400, "'image_threshold': must be a finite number, not 1000000000"),  # was 500
    ("max_frame_rate", -(10**400), "'max_frame_rate': must be a finite number"),  # was 500
    ("rotation", {"angle": 5, "mode": 10**400}, "'rotation.mode': must be one of reflect"),  # was 500
    ("rotation", {"angle": True}, "'rotation.angle': must be a number, not True"),
    ("stream_timeout", "NaN", "'stream_timeout': must be a number, not 'NaN'"),
    ("queue_size", True, "'queue_size': must be a number, not True"),
    ("downsampling", 1e308, "'downsampling': must be an integer >= 0 (at most 2147483647 in size)"),
    ("processing_threads", 10**6, "'processing_threads': must be an integer >= 0 (at most 256 in size)"),
    ("image_slices", {"number_of_slices": True}, "'image_slices.number_of_slices': must be a number, not True"),
    ("input_stream", "localhost:9000", "'input_stream': must be a stream address like tcp://host:port"),
    ("bsread_address", "tcp://host:99999", "'bsread_address': must be a stream address"),
])
@pytest.mark.parametrize("path", [PIPE, f"{PIPE}/simulation_sp/config"])
def test_bad_pipeline_config_values_are_refused(apps, path, key, value, message):
    before = files(apps)
    response = send(apps, "POST", path, json.dumps({"camera_name": "simulation", key: value}))
    assert_error(response, 400, "Invalid pipeline config: " + message)
    assert files(apps) == before
    assert apps.pipeline.http.get(f"{PIPE}/info").json()["info"]["active_instances"] == {}


@pytest.mark.parametrize("camera", ["info", "aliases", "groups", "script"])
def test_camera_server_routes_are_not_cameras_for_the_pipeline_server(apps, camera):
    # Was 500 "KeyError: 'stream'": the camera server answered its fixed route, which has no stream address.
    message = f"Camera '{camera}' does not exist on the camera server."
    assert_error(send(apps, "POST", f"{PIPE}/camera/{camera}/background"), 404, message)
    assert_error(send(apps, "POST", PIPE, json.dumps({"camera_name": camera})), 404, message)


@pytest.mark.parametrize("query", ["scale=inf", "scale=-1", "scale=nan", "min_value=nan", "max_value=-inf"])
def test_bad_image_options_are_refused_before_waiting_for_a_frame(apps, query):
    # scale=inf was 500 (OverflowError); min/max NaN rendered garbage. "nocamera" proves no frame is awaited.
    name = query.split("=")[0]
    assert_error(send(apps, "GET", f"{CAM}/nocamera/image?{query}"), 400, f"Invalid {name}")


def test_unknown_routes_and_methods_say_what_was_asked(apps):
    assert_error(send(apps, "GET", f"{CAM}/simulation/nothing"), 404,
                 f"Not Found: GET {CAM}/simulation/nothing is not a route of this server")
    assert_error(send(apps, "PATCH", f"{PIPE}/simulation_sp/config"), 405,
                 f"Method PATCH is not allowed on {PIPE}/simulation_sp/config; use")


def test_script_upload_larger_than_the_limit_is_refused_unread(apps):
    response = send(apps, "PUT", f"{PIPE}/script/big/script_bytes", b"#" * (5 * 1024 * 1024))
    assert_error(response, 413, "Request body too large: 5242880 bytes (at most 4194304)")


def test_servers_stay_healthy(apps):
    assert apps.camera.http.get(CAM).json()["cameras"] == ["simulation"]
    assert apps.pipeline.http.get(PIPE).json()["pipelines"] == ["simulation_sp"]
    assert apps.camera.errors() == [] and apps.pipeline.errors() == []  # no unexpected error behind a 500
