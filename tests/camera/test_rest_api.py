"""Every camera REST route and every CamClient method against a real server process."""

from __future__ import annotations

import base64
import io

import numpy as np
import psutil
import pytest
import requests
from PIL import Image

from cam_server.client.cam_client import CamClient
from tests.helpers.procs import wait_until
from tests.helpers.servers import TEST_CAMERA
from tests.helpers.streams import receive, values

API = "/api/v1/cam"


def test_list_config_geometry(client: CamClient, server) -> None:
    assert client.get_address() == server.url
    assert client.get_cameras() == ["simulation", "test_camera"]
    config = client.get_camera_config("test_camera")
    assert config["size_x"] == 64 and config["mirror_x"] is True and config["alias"] == ["tc"]
    assert config["buffer_size"] == 5 and config["dtype"] == "uint16"  # defaults filled in
    assert client.get_camera_config("tc")["name"] == "test_camera"  # alias
    assert client.get_camera_geometry("test_camera") == [64, 48]
    assert client.get_camera_geometry("simulation") == [1280, 960]


def test_aliases_and_groups(client: CamClient) -> None:
    assert client.get_camera_aliases() == {"sim": "simulation", "tc": "test_camera"}
    assert client.get_camera_groups() == {"simulated": ["simulation"], "test": ["test_camera"],
                                          "simulated_small": ["test_camera"]}
    assert client.get_cameras_in_group("test") == ["test_camera"]
    with pytest.raises(ValueError, match="Camera group 'nope' does not exist"):
        client.get_cameras_in_group("nope")


def test_stream_info_and_stop(client: CamClient, server) -> None:
    stream = client.get_instance_stream("tc")
    assert stream.startswith("tcp://127.0.0.1:")
    assert client.get_instance_stream("test_camera") == stream  # same instance through alias and name
    info = client.get_server_info()["active_instances"]["test_camera"]
    assert info["is_running"] and info["stream_address"] == stream
    pid = info["pid"]
    assert psutil.pid_exists(pid)
    (message,) = receive(stream)
    assert values(message)["width"] == 64
    stats = client.get_server_info()["active_instances"]["test_camera"]["statistics"]
    assert stats["frames_out"] >= 1 and set(stats) >= {"frames_in", "rate", "clients", "cpu_percent", "memory_rss"}
    client.stop_instance("test_camera")
    assert "test_camera" not in client.get_server_info()["active_instances"]
    assert not psutil.pid_exists(pid)
    with pytest.raises(ValueError, match="not running"):
        client.stop_instance("test_camera")


def test_stop_all_instances(client: CamClient) -> None:
    client.get_instance_stream("test_camera")
    client.set_camera_config("other_small", {**TEST_CAMERA, "alias": [], "group": []})
    client.get_instance_stream("other_small")
    pids = [i["pid"] for i in client.get_server_info()["active_instances"].values()]
    assert len(pids) == 2
    client.stop_all_instances()
    assert client.get_server_info()["active_instances"] == {}
    assert not any(psutil.pid_exists(p) for p in pids)
    client.delete_camera_config("other_small")


def test_set_and_delete_config(client: CamClient) -> None:
    applied = client.set_camera_config("new_cam", {"source": "x", "source_type": "simulation", "size_x": 32,
                                                   "size_y": 16, "note": "kept"})
    assert applied["name"] == "new_cam" and applied["note"] == "kept" and applied["rotate"] == 0
    assert "new_cam" in client.get_cameras()
    assert client.get_camera_config("new_cam")["note"] == "kept"
    client.get_instance_stream("new_cam")
    pid = client.get_server_info()["active_instances"]["new_cam"]["pid"]
    client.delete_camera_config("new_cam")  # also stops the running instance
    assert "new_cam" not in client.get_cameras()
    assert "new_cam" not in client.get_server_info()["active_instances"]
    assert not psutil.pid_exists(pid)
    with pytest.raises(ValueError, match="Camera 'new_cam' does not exist"):
        client.get_camera_config("new_cam")


def test_png_image(client: CamClient) -> None:
    png = client.get_camera_image("test_camera")
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG" and picture.size == (64, 48)
    scaled = Image.open(io.BytesIO(client.get_camera_image("tc", scale=2, colormap="jet", min_value=0,
                                                           max_value=60000)))
    assert scaled.size == (128, 96) and scaled.mode == "RGB"
    rgb = np.asarray(scaled)
    assert len({tuple(p) for p in rgb.reshape(-1, 3)[:5000]}) > 3  # coloured, not gray
    with pytest.raises(ValueError, match="Unknown colormap 'rainbowish'"):
        client.get_camera_image("tc", colormap="rainbowish")


def test_image_bytes_match_the_stream(client: CamClient) -> None:
    payload = client.get_camera_image_bytes("test_camera")
    assert payload["dtype"] == "uint16" and payload["shape"] == [48, 64]
    image = np.frombuffer(base64.b64decode(payload["bytes"]), dtype=payload["dtype"]).reshape(payload["shape"])
    (message,) = receive(client.get_instance_stream("test_camera"))
    np.testing.assert_array_equal(image, values(message)["image"])  # static_beam: same frame every time


def test_raw_http_envelope_and_routes(server) -> None:
    url = server.url + API
    body = requests.get(url + "/info", timeout=10).json()
    assert body["state"] == "ok" and "active_instances" in body["info"]
    assert requests.get(url + "/aliases", timeout=10).json()["aliases"]["sim"] == "simulation"
    assert requests.get(url + "/groups", timeout=10).json()["groups"]["simulated"] == ["simulation"]
    assert requests.get(url + "/groups/simulated", timeout=10).json()["cameras"] == ["simulation"]
    response = requests.get(url + "/test_camera/image", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert requests.delete(url + "/test_camera", timeout=10).json()["state"] == "ok"
    assert requests.delete(url, timeout=10).json()["state"] == "ok"


def test_instance_started_by_image_stops_without_clients(client: CamClient) -> None:
    client.set_camera_config("short_lived", {**TEST_CAMERA, "alias": [], "no_client_timeout": 1.5})
    client.get_camera_image("short_lived")
    pid = client.get_server_info()["active_instances"]["short_lived"]["pid"]
    wait_until(lambda: "short_lived" not in client.get_server_info()["active_instances"], 15,
               "instance to stop without clients")
    ended = client.get_server_info()["finished_instances"]["short_lived"]
    assert ended["exit_code"] == 0 and ended["last_error"] is None
    assert not psutil.pid_exists(pid)
    client.delete_camera_config("short_lived")


def test_concurrent_requests_start_one_instance(client: CamClient) -> None:
    from concurrent.futures import ThreadPoolExecutor

    client.set_camera_config("busy", {**TEST_CAMERA, "alias": []})
    with ThreadPoolExecutor(6) as pool:
        streams = list(pool.map(lambda _: CamClient(client.get_address()).get_instance_stream("busy"), range(6)))
    assert len(set(streams)) == 1
    assert list(client.get_server_info()["active_instances"]) == ["busy"]
    client.delete_camera_config("busy")


def test_openapi_lists_every_readme_camera_route(server) -> None:
    paths = requests.get(server.url + "/openapi.json", timeout=10).json()["paths"]
    expected = {API: {"get", "delete"}, f"{API}/{{camera_name}}": {"get", "delete"},
                f"{API}/{{camera_name}}/config": {"get", "post", "delete"}, f"{API}/{{camera_name}}/geometry": {"get"},
                f"{API}/{{camera_name}}/image": {"get"}, f"{API}/{{camera_name}}/image_bytes": {"get"},
                f"{API}/info": {"get"}}
    for path, methods in expected.items():
        assert methods <= set(paths.get(path, {})), (path, sorted(paths))
    assert requests.get(server.url + "/docs", timeout=10).status_code == 200
