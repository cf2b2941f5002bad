"""Hand-made hostile and careless requests as tables: request → expected status (and message) → expected effect,
and the server healthy afterwards (issue 11 items 6, 7 and 8; the hand-made cases kept beside schemathesis).

* :data:`REQUESTS` need no instance process: both apps run in this process (``apps``, unit).
* :data:`CAMERA_SERVER_FAILURES`: a pipeline app whose camera server fails (answers 500, or is not there).
* :data:`LIVE_CHANGES`: live config changes of a running instance on the shared real servers (``servers``).
* One-off cases that need their own setup (a camera one pixel high, an EPICS prefix CA refuses, the instance
  limit, a FILE target being written, frames after a refused change) follow the tables.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from cam_server.client.cam_client import CamClient
from cam_server.client.pipeline_client import PipelineClient
from cam_server.rest.envelope import MAX_MESSAGE_CHARS
from tests.helpers.apps import LocalApps, pipeline_app
from tests.helpers.net import free_port
from tests.helpers.procs import wait_until
from tests.helpers.servers import ServerPair, pipeline_server
from tests.pipeline_types.helpers import write_script

CAM = "/api/v1/cam"
PIPE = "/api/v1/pipeline"
SIM = {"source": "simulation", "source_type": "simulation", "size_x": 64, "size_y": 48, "frame_rate": 10}
HEALTHY_WITHIN = 2.0  # seconds: the info route answers this quickly after every hostile request


@dataclass(frozen=True)
class Request:
    """One row: what is sent, what must come back, what must (not) have changed."""

    name: str
    method: str
    path: str
    body: Any = None  # a dict (sent as JSON), a str or bytes (sent as is), or None
    status: int = 400
    message: str = ""  # a part of the answer's status message
    allow: str | None = None  # a 405's Allow header
    writes: bool = False  # True: the request may change files (else every config file stays byte-identical)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


def _number(text: str) -> str:
    return '{"camera_name": "simulation", "gain": ' + text + "}"


REQUESTS = [
    # --- item 8: numbers, booleans, addresses, methods, echoed input ---------------------------------------------
    Request("1e400 in a camera config", "POST", f"{CAM}/simulation/config",
            '{"source": "simulation", "source_type": "simulation", "gain": 1e400}', 400,
            "the number 1e400 is too large"),
    Request("-1e400 in a saved pipeline", "POST", f"{PIPE}/simulation_sp/config", _number("-1e400"), 400,
            "the number -1e400 is too large"),
    Request("copy: 'yes'", "POST", PIPE, {"camera_name": "simulation", "copy": "yes"}, 400,
            "'copy': must be true or false, not 'yes'"),
    Request("paused: 1", "POST", f"{PIPE}/simulation_sp/config", {"camera_name": "simulation", "paused": 1}, 400,
            "'paused': must be true or false, not 1"),
    Request("pause: 'no' (user key read by processing)", "POST", PIPE, {"camera_name": "simulation", "pause": "no"},
            400, "'pause' must be true or false"),
    Request("mirror_x: 'yes'", "POST", f"{CAM}/simulation/config", {**SIM, "mirror_x": "yes"}, 400,
            "'mirror_x': must be true or false, not 'yes'"),
    Request("bsread camera on port 99999", "POST", f"{CAM}/simulation/config",
            {"source": "tcp://localhost:99999", "source_type": "bsread"}, 400,
            "'source' of a bsread camera must be a stream address"),
    Request("camera stream port 99999", "POST", f"{CAM}/simulation/config", {**SIM, "port": 99999}, 400, "'port'"),
    Request("bsread_address port 99999", "POST", PIPE,
            {"camera_name": "simulation", "bsread_address": "tcp://host:99999"}, 400, "'bsread_address'"),
    Request("calibration angle 1e308", "POST", f"{CAM}/simulation/config",
            {**SIM, "camera_calibration": {"angle_horizontal": 1e308}}, 400,
            "'camera_calibration.angle_horizontal': Input should be less than 90"),
    Request("calibration marker width 1e308", "POST", f"{CAM}/simulation/config",
            {**SIM, "camera_calibration": {"reference_marker_width": 1e308}}, 400,
            "'camera_calibration.reference_marker_width'"),
    Request("PUT on a GET-only route", "PUT", f"{CAM}/info", status=405, message="use GET.", allow="GET"),
    Request("PUT on an instance config", "PUT", f"{PIPE}/instance/x/config", status=405, message="use GET, POST.",
            allow="GET, POST"),
    Request("PATCH on a saved pipeline / instance", "PATCH", f"{PIPE}/x", status=405, allow="DELETE, POST"),
    Request("200k-character syntax error", "POST", f"{CAM}/script/long_line/script_bytes",
            "x = (" + "1" * 200_000, 400, "Syntax error in script long_line.py line 1"),
    Request("60k-character name", "GET", f"{CAM}/{'a' * 60_000}/config", status=400,
            message="Invalid camera name"),
    Request("name with a trailing newline", "GET", f"{CAM}/simulation%0A/config", status=400,
            message="Invalid camera name 'simulation\\n'"),
    # --- item 6: bounds --------------------------------------------------------------------------------------------
    Request("averaging -2147483647 (25 MB/s)", "POST", PIPE, {"camera_name": "simulation", "averaging": -2147483647},
            400, "'averaging': must be at least -100"),
    Request("averaging 10**6", "POST", f"{PIPE}/simulation_sp/config",
            {"camera_name": "simulation", "averaging": 10**6}, 400, "'averaging': must be at most 1000"),
    Request("max_frame_rate 1e9", "POST", PIPE, {"camera_name": "simulation", "max_frame_rate": 1e9}, 400,
            "'max_frame_rate': must be between 0 and 1000 Hz"),
    Request("max_frame_rate -1", "POST", PIPE, {"camera_name": "simulation", "max_frame_rate": -1}, 400,
            "'max_frame_rate'"),
    Request("camera frame_rate 1e9", "POST", f"{CAM}/simulation/config", {**SIM, "frame_rate": 1e9}, 400,
            "'frame_rate': Input should be less than or equal to 1000"),
    Request("10**6 slices", "POST", PIPE, {"camera_name": "simulation", "image_slices": {"number_of_slices": 10**6}},
            400, "'image_slices.number_of_slices': Input should be less than or equal to 1000"),
    Request("negative slice scale", "POST", PIPE, {"camera_name": "simulation", "image_slices": {"scale": -1}}, 400,
            "'image_slices.scale'"),
    Request("simulated camera 65536 wide", "POST", f"{CAM}/simulation/config", {**SIM, "size_x": 65536}, 400,
            "'size_x' of a simulated camera must be at most 8192"),
    Request("pipeline binning 0", "POST", PIPE, {"camera_name": "simulation", "binning_x": 0}, 400,
            "'binning_x' must be an integer >= 1"),
    Request("image scale 1e9", "GET", f"{CAM}/simulation/image", status=400, message="Invalid scale",
            kwargs={"params": {"scale": 1e9}}),
    # --- item 8: FILE targets checked before answering ({tmp}: a folder of the test) -------------------------------
    Request("FILE target exists", "POST", PIPE,
            {"pipeline_type": "custom", "function": "x", "mode": "FILE", "file": "{tmp}/exists.h5"}, 409,
            "exists.h5 already exists"),
    Request("FILE target inside a file", "POST", PIPE,
            {"pipeline_type": "custom", "function": "x", "mode": "FILE", "file": "{tmp}/exists.h5/out.h5"}, 409,
            "exists.h5 is not a folder"),
]


def _digests(apps: LocalApps) -> dict[str, str]:
    paths = [*apps.camera.base.rglob("*"), *apps.pipeline.base.rglob("*"), *apps.camera.base.parent.rglob("*.py")]
    return {str(p): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(paths) if p.is_file()}


def _send(http: Any, row: Request, tmp: Path) -> httpx.Response:
    body, headers = row.body, None
    if isinstance(body, dict):
        body, headers = json.dumps(body).replace("{tmp}", str(tmp)), {"content-type": "application/json"}
    elif isinstance(body, str) and body.startswith("{"):
        headers = {"content-type": "application/json"}
    return http.request(row.method, row.path, content=body, headers=headers, follow_redirects=False, **row.kwargs)


def _check(response: httpx.Response | requests.Response, status: int, message: str) -> dict[str, Any]:
    assert response.status_code == status, response.text[:2000]
    answer = response.json()
    assert answer["state"] == ("ok" if status == 200 else "error"), answer
    assert message in answer["status"], answer["status"][:2000]
    assert len(answer["status"]) <= MAX_MESSAGE_CHARS  # nothing is echoed back whole
    return answer


def _healthy(get: Callable[[str], Any], path: str) -> None:
    start = time.monotonic()
    assert get(path).status_code == 200
    assert time.monotonic() - start < HEALTHY_WITHIN


@pytest.mark.unit
@pytest.mark.parametrize("row", REQUESTS, ids=str)
def test_hostile_requests(apps: LocalApps, row: Request, tmp_path: Path) -> None:
    (tmp_path / "exists.h5").write_bytes(b"keep me")
    app = apps.camera if row.path.startswith(CAM) else apps.pipeline
    before = _digests(apps)
    response = _send(app.http, row, tmp_path)
    _check(response, row.status, row.message)
    if row.allow is not None:
        assert response.headers["allow"] == row.allow
    if not row.writes:
        assert _digests(apps) == before
    assert (tmp_path / "exists.h5").read_bytes() == b"keep me"
    assert not (apps.camera.base.parent / "camera_user_scripts" / "long_line.py").exists()
    assert app.errors() == []  # no unexpected error behind the answer
    _healthy(apps.camera.http.get, f"{CAM}/info")
    _healthy(apps.pipeline.http.get, f"{PIPE}/info")
    assert apps.pipeline.http.get(f"{PIPE}/info").json()["info"]["active_instances"] == {}


# --- a camera server that fails ------------------------------------------------------------------------------------
class _Failing(http.server.BaseHTTPRequestHandler):
    """A camera server answering every request with 500 and the error envelope (a real socket, a real answer)."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        body = json.dumps({"state": "error", "status": "Internal error: OSError: disk on fire"}).encode()
        self.send_response(500)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def failing_camera_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


CAMERA_SERVER_FAILURES = [
    # (camera server, request, status, message): was "Camera server ... is not reachable" for a 500
    ("failing", "POST", PIPE, {"camera_name": "x"}, 503, "answered with an error (HTTP 500) for camera 'x': Internal "
                                                         "error: OSError: disk on fire"),
    ("failing", "GET", f"{PIPE}/camera", None, 503, "answered with an error (HTTP 500): Internal error"),
    ("absent", "POST", PIPE, {"camera_name": "x"}, 503, "is not reachable"),
    ("absent", "GET", f"{PIPE}/camera", None, 503, "is not reachable"),
]


@pytest.mark.unit
@pytest.mark.parametrize(("camera", "method", "path", "body", "status", "message"), CAMERA_SERVER_FAILURES)
def test_camera_server_failures_are_told_apart(failing_camera_server, tmp_path, camera, method, path, body, status,
                                              message) -> None:
    url = failing_camera_server if camera == "failing" else f"http://127.0.0.1:{free_port()}"
    with pipeline_app(tmp_path, url) as app:
        response = app.http.request(method, path, json=body)
        _check(response, status, message)
        if camera == "failing":
            assert "not reachable" not in response.json()["status"]
        _healthy(app.http.get, f"{PIPE}/info")


# --- live changes of a running instance (item 7) -----------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    name: str
    update: dict[str, Any]
    status: int
    message: str

    def __str__(self) -> str:
        return self.name


LIVE_CHANGES = [
    # A plain name is a script of the scripts folder (modules only with --allow_external_functions): 404.
    Change("function that is a module without process_image", {"function": "os"}, 404,
           "script 'os' not found"),
    Change("function that does not exist", {"function": "no_such_function_here"}, 404,
           "script 'no_such_function_here' not found"),
    Change("ROI outside the camera image", {"image_region_of_interest": [100, 10, 0, 10]}, 400,
           "starts outside the 64 x 48 image"),
    Change("averaging beyond the bound", {"averaging": -2147483647}, 400, "'averaging'"),
    Change("a structural key", {"camera_name": "simulation"}, 409, "Cannot change camera_name"),
    Change("mode FILE without a file (valid values, invalid together)", {"mode": "FILE"}, 409,
           "mode 'FILE' needs 'file'"),
    Change("string for a boolean", {"paused": "false"}, 400, "'paused': must be true or false"),
]


@pytest.fixture(scope="module")
def live_instance(servers: ServerPair) -> Iterator[tuple[PipelineClient, str]]:
    client = PipelineClient(servers.url)
    instance_id, _ = client.create_instance_from_config({"camera_name": "test_camera", "no_client_timeout": 0,
                                                         "image_threshold": 1})
    wait_until(lambda: client.get_instance_info(instance_id)["statistics"]["frames_out"] > 0, 30, "frames")
    yield client, instance_id
    with contextlib.suppress(ValueError):  # stopped already (every instance of the shared servers, by another test)
        client.stop_instance(instance_id)


@pytest.mark.parametrize("change", LIVE_CHANGES, ids=str)
def test_a_refused_live_change_changes_nothing(live_instance, servers, change: Change) -> None:
    client, instance_id = live_instance
    before = client.get_instance_config(instance_id)
    response = requests.post(f"{servers.url}{PIPE}/instance/{instance_id}/config", json=change.update, timeout=60)
    _check(response, change.status, change.message)
    assert client.get_instance_config(instance_id) == before  # what GET config says is what runs
    # ... and a change after it applies (a refused change blocks nothing)
    assert client.set_instance_config(instance_id, {"image_threshold": 2})["image_threshold"] == 2
    assert client.set_instance_config(instance_id, {"image_threshold": 1})["image_threshold"] == 1
    _healthy(lambda p: requests.get(f"{servers.url}{p}", timeout=10), f"{PIPE}/info")


def test_paused_after_a_refused_change_stops_the_frames(live_instance) -> None:
    """Issue 11 item 7 as reported: a refused ``function`` then ``paused: true``: GET config says paused and the
    frames stop (they flowed on before)."""
    client, instance_id = live_instance
    with pytest.raises(ValueError, match="Config not applied"):
        client.set_instance_config(instance_id, {"function": "os"})
    assert client.set_instance_config(instance_id, {"paused": True})["paused"] is True
    assert client.get_instance_config(instance_id)["paused"] is True
    frames = client.get_instance_info(instance_id)["statistics"]["frames_out"]
    time.sleep(1.0)  # test_camera sends 20 frames a second
    assert client.get_instance_info(instance_id)["statistics"]["frames_out"] == frames
    client.set_instance_config(instance_id, {"paused": False})
    wait_until(lambda: client.get_instance_info(instance_id)["statistics"]["frames_out"] > frames, 10,
               "frames after unpausing")


def test_the_instance_refuses_an_roi_outside_the_images_it_receives(servers: ServerPair) -> None:
    """A pipeline on a plain stream (no camera geometry for the server to check): the instance checks the ROI
    against the frames it got, refuses, and keeps running the previous config."""
    client = PipelineClient(servers.url)
    stream = CamClient(servers.camera.url).get_instance_stream("test_camera")
    instance_id, _ = client.create_instance_from_config({"input_stream": stream, "no_client_timeout": 0})
    try:
        wait_until(lambda: client.get_instance_info(instance_id)["statistics"]["frames_out"] > 0, 30, "frames")
        with pytest.raises(ValueError, match=r"starts outside the 64 x 48 image .*\(the images received\)"):
            client.set_instance_config(instance_id, {"image_region_of_interest": [64, 10, 0, 10]})
        assert client.get_instance_config(instance_id)["image_region_of_interest"] is None
        assert client.set_instance_config(instance_id, {"image_region_of_interest": [63, 10, 0, 10]})
    finally:
        client.stop_instance(instance_id)


# --- one-off cases ----------------------------------------------------------------------------------------------
def test_a_camera_one_pixel_high_gives_images_and_processed_frames(servers: ServerPair) -> None:
    """Was 500 IndexError on image_bytes, and its pipeline sent nothing (every frame dropped without an error)."""
    cam = CamClient(servers.camera.url)
    cam.set_camera_config("thin_camera", {**SIM, "size_y": 1, "image_type": "static_beam"})
    client = PipelineClient(servers.url)
    try:
        image = cam.get_camera_image_bytes("thin_camera")
        assert image["shape"] == [1, 64] and image["height"] == 1
        assert cam.get_camera_image("thin_camera").startswith(b"\x89PNG")
        assert cam.get_camera_geometry("thin_camera") == [64, 1]
        instance_id, _ = client.create_instance_from_config({"camera_name": "thin_camera", "function": "transparent"})
        message = client.get_instance_message(instance_id)  # (PSI's receiver returns a one-row image as a row)
        assert message.data.array("image").shape == (1, 64)
        assert client.get_instance_info(instance_id)["last_error"] is None
        client.stop_instance(instance_id)
    finally:
        cam.stop_instance("thin_camera")
        cam.delete_camera_config("thin_camera")


def test_a_camera_that_cannot_start_says_so_once(servers: ServerPair) -> None:
    """Was "Cannot start camera 'x': Cannot start camera 'x': ...": Channel Access refuses a 3000-character PV name
    with an error that is not "offline"."""
    cam = CamClient(servers.camera.url)
    cam.set_camera_config("long_pv", {"source": "P" * 3000, "source_type": "epics", "connection_timeout": 1})
    try:
        response = requests.get(f"{servers.camera.url}{CAM}/long_pv", timeout=60)
        answer = _check(response, 503, "Cannot start camera 'long_pv': ")
        assert answer["status"].count("Cannot start camera") == 1, answer["status"]
    finally:
        cam.delete_camera_config("long_pv")


def test_a_file_being_written_is_refused(servers: ServerPair) -> None:
    client = PipelineClient(servers.url)
    write_script(servers.scripts, "hostile_values.py", "def process(parameters):\n    return {'v': 1}\n")
    path = servers.data / "hostile_busy.h5"
    config = {"pipeline_type": "custom", "function": "hostile_values", "mode": "FILE", "file": str(path),
              "max_frame_rate": 10}
    instance_id, _ = client.create_instance_from_config(config)
    wait_until(lambda: client.get_instance_info(instance_id)["statistics"]["frames_out"] > 0, 30, "rows written")
    try:
        response = requests.post(f"{servers.url}{PIPE}", json=config, timeout=60)
        _check(response, 409, f"instance '{instance_id}' is writing")
    finally:
        client.stop_instance(instance_id)


def test_the_instance_limit(servers: ServerPair, tmp_path: Path) -> None:
    """``--max_instances``: one more is refused with 429 (each instance is a process), the server stays healthy."""
    with pipeline_server(tmp_path, servers.camera.url, extra_args=["--max_instances", "1"]) as pipe:
        client = PipelineClient(pipe.url)
        first, _ = client.create_instance_from_config({"pipeline_type": "fanin", "no_client_timeout": 0})
        response = requests.post(f"{pipe.url}{PIPE}", json={"pipeline_type": "fanin"}, timeout=60)
        _check(response, 429, "its limit (--max_instances 1)")
        client.stop_instance(first)
        second, _ = client.create_instance_from_config({"pipeline_type": "fanin", "no_client_timeout": 0})
        client.stop_instance(second)


def test_an_instance_busy_with_a_frame_gets_no_change_half_applied(servers: ServerPair, tmp_path: Path) -> None:
    """An instance that does not take a change in time (one long frame): 503, the change withdrawn (the previous
    config is sent after it and the instance takes the newest), GET config unchanged, and the instance later runs
    the previous config, not the change."""
    from cam_server.common.errors import SourceUnavailable
    from cam_server.pipeline.server.backgrounds import BackgroundStore
    from cam_server.pipeline.server.manager import PipelineManager
    from cam_server.pipeline.server.saved_configs import SavedConfigs

    scripts = tmp_path / "scripts"
    scripts.mkdir()
    write_script(scripts, "slow_frames.py", """
        import time

        def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata):
            time.sleep(2.0)
            return {"threshold": float(parameters.get("image_threshold") or 0)}
    """)
    manager = PipelineManager(CamClient(servers.camera.url), SavedConfigs(tmp_path / "configs"),
                              BackgroundStore(tmp_path / "backgrounds"), str(scripts), "127.0.0.1", config_timeout=0.5)
    try:
        instance_id, _, _ = manager.create_instance_from_config(
            {"camera_name": "test_camera", "function": "slow_frames", "no_client_timeout": 0, "image_threshold": 1})
        wait_until(lambda: manager.get_instance_info(instance_id)["statistics"]["frames_in"] > 0, 30, "a frame")
        time.sleep(0.2)  # inside the 2 s frame
        with pytest.raises(SourceUnavailable, match="did not take the config change within 0.5 s .*withdrawn"):
            manager.set_instance_config(instance_id, {"image_threshold": 5})
        assert manager.get_instance_config(instance_id)["image_threshold"] == 1
        message = manager.get_instance_message(instance_id, timeout=20)  # frames after the withdrawal
        assert message["data"]["threshold"] == 1.0
    finally:
        manager.close()
