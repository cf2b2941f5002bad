"""Bad inputs get a clear 4xx answer naming the problem, and the server stays healthy (the camera app in this
process: none of these requests starts an instance)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from cam_server.client.cam_client import CamClient
from tests.helpers.apps import LocalApp, camera_app
from tests.helpers.servers import TEST_CAMERA, write_config_dir

pytestmark = pytest.mark.unit

API = "/api/v1/cam"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalApp]:
    """The camera app with the bundled cameras plus test_camera."""
    tmp = tmp_path_factory.mktemp("camera_errors")
    with camera_app(tmp, config_dir=write_config_dir(tmp / "configs")) as local:
        yield local


@pytest.fixture()
def client(app: LocalApp) -> CamClient:
    return CamClient(app.url)


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["state"] == "error"
    return body["status"]


@pytest.mark.parametrize(("method", "path"), [
    ("get", "/nope"), ("get", "/nope/config"), ("delete", "/nope/config"), ("get", "/nope/geometry"),
    ("get", "/nope/image"), ("get", "/nope/image_bytes"),
])
def test_unknown_camera_is_404(app, method: str, path: str) -> None:
    message = _error(getattr(app.http, method)(API + path), 404)
    assert message == "Camera 'nope' does not exist."


def test_stop_not_running_is_404(app) -> None:
    assert "is not running" in _error(app.http.delete(API + "/test_camera"), 404)


def test_invalid_configs_name_the_field(app) -> None:
    url = API + "/bad_cam/config"
    cases = [
        ({"source": "x", "source_type": "gige"}, "'source_type'"),
        ({"source_type": "simulation"}, "'source': field required"),
        ({"source": None, "source_type": "simulation"}, "'source'"),
        ({"source": "x", "source_type": "simulation", "camera_calibration": {"reference_marker_width": "wide"}},
         "'camera_calibration.reference_marker_width'"),
        ({"source": "x", "source_type": "simulation", "rotate": [1]}, "'rotate'"),
        ({"source": "not an address", "source_type": "bsread"}, "stream address"),
    ]
    for body, expected in cases:
        message = _error(app.http.post(url, json=body), 400)
        assert expected in message and "bad_cam" in message, message
    assert "bad_cam" not in CamClient(app.url).get_cameras()


def test_bad_bodies(app) -> None:
    url = API + "/bad_cam/config"
    assert "empty" in _error(app.http.post(url), 400)
    assert "not valid JSON" in _error(app.http.post(url, content=b"{nope"), 400)
    assert "JSON object" in _error(app.http.post(url, json=[1, 2]), 400)


def test_path_like_and_reserved_names(app) -> None:
    url = API
    assert "Invalid camera name" in _error(app.http.get(url + "/..hidden/config"), 400)
    assert _error(app.http.get(url + "/../../etc/passwd"), 404)
    assert _error(app.http.post(url + "/a%2F..%2Fb/config", json={"source": "x", "source_type": "simulation"}), 404)
    body = {"source": "x", "source_type": "simulation"}
    assert "reserved" in _error(app.http.post(url + "/info/config", json=body), 400)
    assert "reserved" in _error(app.http.post(url + "/cam_x/config", json={**body, "alias": ["groups"]}), 400)


def test_alias_clash_is_409(client: CamClient, app) -> None:
    response = app.http.post(API + "/clash/config", json={**TEST_CAMERA, "alias": ["sim"]})
    assert _error(response, 409) == "Alias 'sim' of camera 'clash' is already used by camera 'simulation'."
    response = app.http.post(API + "/clash/config", json={**TEST_CAMERA, "alias": ["test_camera"]})
    assert "already the name of another camera" in _error(response, 409)
    with pytest.raises(ValueError, match="already used by camera 'simulation'"):
        client.set_camera_config("clash", {**TEST_CAMERA, "alias": ["sim"]})
    assert "clash" not in client.get_cameras()


def test_bad_image_queries(app) -> None:
    url = API + "/test_camera/image"
    assert "scale" in _error(app.http.get(url, params={"scale": "big"}), 422)
    assert "Invalid scale" in _error(app.http.get(url, params={"scale": -1}), 400)
    assert "Unknown colormap" in _error(app.http.get(url, params={"colormap": "x"}), 400)


def test_camera_that_cannot_start_gives_clear_error(client: CamClient, app) -> None:
    # a stored config that became invalid by hand: the error names the file's problem, the server survives
    (app.base / "broken.json").write_text("{ not json")
    with pytest.raises(ValueError, match="Camera 'broken' is not valid JSON"):
        client.get_instance_stream("broken")
    (app.base / "broken.json").unlink()


def test_server_healthy_after_errors(client: CamClient) -> None:
    assert client.get_cameras() == ["simulation", "test_camera"]
    assert client.get_camera_geometry("tc") == [64, 48]
