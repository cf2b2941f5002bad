"""Bad inputs get a clear 4xx answer naming the problem, and the server stays healthy."""

from __future__ import annotations

import pytest
import requests

from cam_server.client.cam_client import CamClient
from tests.helpers.servers import TEST_CAMERA

API = "/api/v1/cam"


def _error(response: requests.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["state"] == "error"
    return body["status"]


@pytest.mark.parametrize(("method", "path"), [
    ("get", "/nope"), ("get", "/nope/config"), ("delete", "/nope/config"), ("get", "/nope/geometry"),
    ("get", "/nope/image"), ("get", "/nope/image_bytes"),
])
def test_unknown_camera_is_404(server, method: str, path: str) -> None:
    message = _error(getattr(requests, method)(server.url + API + path, timeout=10), 404)
    assert message == "Camera 'nope' does not exist."


def test_stop_not_running_is_404(server) -> None:
    assert "is not running" in _error(requests.delete(server.url + API + "/test_camera", timeout=10), 404)


def test_invalid_configs_name_the_field(server) -> None:
    url = server.url + API + "/bad_cam/config"
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
        message = _error(requests.post(url, json=body, timeout=10), 400)
        assert expected in message and "bad_cam" in message, message
    assert "bad_cam" not in CamClient(server.url).get_cameras()


def test_bad_bodies(server) -> None:
    url = server.url + API + "/bad_cam/config"
    assert "empty" in _error(requests.post(url, timeout=10), 400)
    assert "not valid JSON" in _error(requests.post(url, data=b"{nope", timeout=10), 400)
    assert "JSON object" in _error(requests.post(url, json=[1, 2], timeout=10), 400)


def test_path_like_and_reserved_names(server) -> None:
    url = server.url + API
    assert "Invalid camera name" in _error(requests.get(url + "/..hidden/config", timeout=10), 400)
    assert _error(requests.get(url + "/../../etc/passwd", timeout=10), 404)
    assert _error(requests.post(url + "/a%2F..%2Fb/config", json={"source": "x", "source_type": "simulation"},
                                timeout=10), 404)
    body = {"source": "x", "source_type": "simulation"}
    assert "reserved" in _error(requests.post(url + "/info/config", json=body, timeout=10), 400)
    assert "reserved" in _error(requests.post(url + "/cam_x/config", json={**body, "alias": ["groups"]},
                                              timeout=10), 400)


def test_alias_clash_is_409(client: CamClient, server) -> None:
    response = requests.post(server.url + API + "/clash/config", json={**TEST_CAMERA, "alias": ["sim"]}, timeout=10)
    assert _error(response, 409) == "Alias 'sim' of camera 'clash' is already used by camera 'simulation'."
    response = requests.post(server.url + API + "/clash/config", json={**TEST_CAMERA, "alias": ["test_camera"]},
                             timeout=10)
    assert "already the name of another camera" in _error(response, 409)
    with pytest.raises(ValueError, match="already used by camera 'simulation'"):
        client.set_camera_config("clash", {**TEST_CAMERA, "alias": ["sim"]})
    assert "clash" not in client.get_cameras()


def test_bad_image_queries(server) -> None:
    url = server.url + API + "/test_camera/image"
    assert "scale" in _error(requests.get(url, params={"scale": "big"}, timeout=10), 422)
    assert "Invalid scale" in _error(requests.get(url, params={"scale": -1}, timeout=10), 400)
    assert "Unknown colormap" in _error(requests.get(url, params={"colormap": "x"}, timeout=10), 400)


def test_camera_that_cannot_start_gives_clear_error(client: CamClient, server) -> None:
    # a stored config that became invalid by hand: the error names the file's problem, the server survives
    (server.base / "broken.json").write_text("{ not json")
    with pytest.raises(ValueError, match="Camera 'broken' is not valid JSON"):
        client.get_instance_stream("broken")
    (server.base / "broken.json").unlink()


def test_server_healthy_after_errors(client: CamClient) -> None:
    assert client.get_cameras() == ["simulation", "test_camera"]
    assert client.get_camera_geometry("tc") == [64, 48]
