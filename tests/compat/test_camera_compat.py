"""The camera server as PSI's client and tools use it: ``is_online``, instance and server info fields,
``get_camera_array``, aliases and groups (real servers, streams and, in a loopback namespace, EPICS IOCs)."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests

from cam_server import __version__
from cam_server.bsread import PULL, PUSH, Sender, Source
from cam_server.camera.config import parse_camera_config
from cam_server.camera.sources.base import CameraOffline
from cam_server.camera.sources.factory import create_source
from cam_server.client.cam_client import CamClient
from tests.epics.conftest import epics_client_env, start_ioc  # noqa: F401 - fixtures
from tests.helpers.net import EPICS_ENV, free_port, require_loopback_netns
from tests.helpers.procs import wait_until
from tests.helpers.servers import TEST_CAMERA, RunningServer, ServerPair, camera_server
from tests.helpers.streams import receive, values

API = "/api/v1/cam"
TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
RATE_COUNT = re.compile(r"^\d+\.\d+Hz - (\d+)$")
SMALL = {**TEST_CAMERA, "alias": [], "group": []}


@pytest.fixture(scope="module")
def server(servers: ServerPair) -> RunningServer:
    """The shared camera server (bundled cameras plus test_camera)."""
    return servers.camera


@pytest.fixture
def client(server: RunningServer) -> Iterator[CamClient]:
    cam = CamClient(server.url)
    yield cam
    cam.stop_all_instances()


def online(server: RunningServer, camera: str) -> tuple[int, dict]:
    response = requests.get(f"{server.url}{API}/{camera}/is_online", timeout=30)
    return response.status_code, response.json()


# --- is_online -----------------------------------------------------------------------------------------------
def test_simulation_camera_is_online_without_starting_it(server: RunningServer, client: CamClient) -> None:
    finished = client.get_server_info()["finished_instances"]
    assert client.is_camera_online("test_camera") is True
    assert client.is_camera_online("tc") is True  # an alias
    assert online(server, "simulation") == (200, {"state": "ok", "status": "Camera 'simulation' is online "
                                                  "(simulation).", "online": True})
    info = client.get_server_info()
    assert info["active_instances"] == {} and info["finished_instances"] == finished  # nothing was started


def test_unknown_or_invalid_camera(server: RunningServer, client: CamClient) -> None:
    assert online(server, "no_such_camera") == (404, {"state": "error",
                                                      "status": "Camera 'no_such_camera' does not exist."})
    with pytest.raises(ValueError, match="Camera 'no_such_camera' does not exist"):
        client.is_camera_online("no_such_camera")
    status, body = online(server, "bad%20name")
    assert status == 400 and body["state"] == "error" and body["status"].startswith("Invalid camera name 'bad name'")


def test_bsread_camera_online_when_its_address_accepts_connections(server: RunningServer, client: CamClient) -> None:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    client.set_camera_config("relay", {"source": address, "source_type": "bsread", "no_client_timeout": 0})
    status, body = online(server, "relay")
    assert status == 200 and body["online"] is False
    assert body["status"] == f"Camera 'relay' is offline: cannot connect to {address} (Connection refused)."
    assert client.is_camera_online("relay") is False

    with Sender(port=port, address="tcp://127.0.0.1", mode=PUSH, block=True, send_timeout=2000) as sender, \
            Source(address=address, mode=PULL, receive_timeout=2000) as receiver:
        assert online(server, "relay") == (200, {"state": "ok", "online": True,
                                                 "status": f"Camera 'relay' is online: {address} accepts connections."})
        # The check's connection never becomes a PUSH peer: every message still reaches the real client.
        for pulse_id in range(5):
            assert client.is_camera_online("relay") is True
            assert sender.send({"value": float(pulse_id)}, pulse_id=pulse_id)
        received = [receiver.receive() for _ in range(5)]
        assert [m.data.pulse_id for m in received if m is not None] == [0, 1, 2, 3, 4]
    assert client.get_server_info()["active_instances"] == {}
    client.delete_camera_config("relay")


def test_bsread_ipc_camera_offline_when_nothing_listens(client: CamClient, tmp_path: Path) -> None:
    path = tmp_path / "no_stream"
    client.set_camera_config("ipc_relay", {"source": f"ipc://{path}", "source_type": "bsread"})
    with Sender(port=None, address=f"ipc://{path}", mode=PUSH) as _:
        assert client.is_camera_online("ipc_relay") is True
    # libzmq closes a listener in its I/O thread, after close() returned (on a loaded machine, later still): wait
    # until nothing listens on the path (a connect is refused), then the check must say so.
    wait_until(lambda: not _unix_listening(path), 10, "the sender's listener to close")
    assert client.is_camera_online("ipc_relay") is False
    client.delete_camera_config("ipc_relay")


def _unix_listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


# --- instance and server info ----------------------------------------------------------------------------------
def test_camera_instance_info_has_psi_fields(client: CamClient) -> None:
    stream = client.get_instance_stream("test_camera")
    before = time.time()
    receive(stream, count=3)
    wait_until(lambda: client.get_server_info()["active_instances"]["test_camera"]["statistics"]["frames_out"] >= 25,
               10, "frames sent for a rate")
    info = client.get_server_info()
    assert info["version"] == __version__ and isinstance(info["cpu"], float) and info["memory"] > 10_000_000
    cam = info["active_instances"]["test_camera"]
    assert cam["stream_address"] == stream and cam["camera_name"] == "test_camera"
    assert cam["is_stream_active"] is True and cam["camera_geometry"] == [64, 48]
    assert cam["config"] == client.get_camera_config("test_camera")
    assert TIME.match(cam["last_start_time"])
    started = time.mktime(time.strptime(cam["last_start_time"], "%Y-%m-%d %H:%M:%S"))
    assert before - 30 <= started <= before + 1

    stats = cam["statistics"]
    data_bytes = 3 * 8 + 64 * 48 * 2 + 4 * (64 + 48)  # width, height, timestamp, uint16 image, float32 axes
    sent = stats["frames_out"]
    # Every frame of every message (headers and per-channel timestamps too), as ZeroMQ took them.
    assert sent * data_bytes < stats["total_bytes"] < (sent + 2) * (data_bytes + 4096)
    assert 10 < stats["throughput"] / data_bytes < 35  # the camera sends 20 frames per second
    assert int(RATE_COUNT.match(stats["rx"]).group(1)) == stats["frames_in"]
    assert int(RATE_COUNT.match(stats["tx"]).group(1)) == stats["frames_out"]
    assert 10 < float(stats["tx"].split("Hz")[0]) < 30 and 10 < float(stats["rx"].split("Hz")[0]) < 30
    assert stats["pid"] == cam["pid"] and psutil.Process(cam["pid"]).is_running()
    assert stats["memory"] == stats["memory_rss"] and stats["memory"] > 10_000_000
    assert stats["cpu"] == stats["cpu_percent"] and stats["cpu"] >= 0
    assert stats["frame_shape"] == [48, 64] and stats["clients"] >= 0
    assert TIME.match(stats["time"]) and abs(time.mktime(time.strptime(stats["time"], "%Y-%m-%d %H:%M:%S"))
                                             - time.time()) < 5
    assert {"frames_in", "frames_out", "rate", "dropped", "errors", "start_time"} <= set(stats)  # ours stay


def test_camera_geometry_is_the_sent_image(client: CamClient) -> None:
    client.set_camera_config("binned", {**SMALL, "binning_x": 2, "rotate": 1})  # 64x48 → 32x48 → rotated 48x32
    (message,) = receive(client.get_instance_stream("binned"))
    assert (values(message)["width"], values(message)["height"]) == (48, 32)
    cam = client.get_server_info()["active_instances"]["binned"]
    assert cam["camera_geometry"] == [48, 32] and cam["statistics"]["frame_shape"] == [32, 48]
    client.delete_camera_config("binned")


def test_active_instances_lists_running_ones_only(client: CamClient) -> None:
    client.get_instance_stream("test_camera")
    pid = client.get_server_info()["active_instances"]["test_camera"]["pid"]
    os.kill(pid, signal.SIGKILL)
    info = wait_until(lambda: "test_camera" not in (i := client.get_server_info())["active_instances"] and i, 5,
                      "the killed instance to leave active_instances")
    # reaped when asked: in the same answer it is recorded as ended (not only after the reaper's next round)
    assert info["finished_instances"]["test_camera"]["exit_code"] == -signal.SIGKILL


# --- images, aliases and groups ----------------------------------------------------------------------------------
def test_get_camera_array(client: CamClient) -> None:
    image = client.get_camera_array("test_camera")
    assert isinstance(image, np.ndarray) and image.dtype == np.uint16 and image.shape == (48, 64)
    (message,) = receive(client.get_instance_stream("test_camera"))
    np.testing.assert_array_equal(image, values(message)["image"])  # static_beam: the same frame every time
    image[0, 0] += 1  # a writable array of its own
    with pytest.raises(ValueError, match="Camera 'nope' does not exist"):
        client.get_camera_array("nope")


def test_aliases_and_groups_answer_psi_fields(server: RunningServer, client: CamClient) -> None:
    aliases = requests.get(f"{server.url}{API}/aliases", timeout=10).json()
    groups = requests.get(f"{server.url}{API}/groups", timeout=10).json()
    assert aliases["state"] == "ok" and aliases["aliases"] == {"sim": "simulation", "tc": "test_camera"}
    assert groups["state"] == "ok" and groups["groups"] == {"simulated": ["simulation"], "test": ["test_camera"],
                                                            "simulated_small": ["test_camera"]}
    assert client.get_camera_aliases() == aliases["aliases"] and client.get_camera_groups() == groups["groups"]


# --- EPICS cameras (loopback-only network namespace; skipped elsewhere) ----------------------------------------
@pytest.fixture(scope="module")
def epics_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One camera server with the EPICS environment for the module's EPICS tests (each test names its own camera and
    starts its own IOC; online checks run in short-lived processes, so nothing of one test stays in the server)."""
    require_loopback_netns()
    tmp = tmp_path_factory.mktemp("epics_server")
    configs = tmp / "configs"
    configs.mkdir()
    with camera_server(tmp, config_dir=configs, env=EPICS_ENV) as running:
        yield running


def timed_online(server: RunningServer, camera: str) -> dict:
    start = time.monotonic()
    status, body = online(server, camera)
    assert status == 200 and time.monotonic() - start < 8.0  # 2 s of Channel Access, plus the check process
    return body


def test_epics_camera_is_online(epics_server: RunningServer, start_ioc) -> None:  # noqa: F811
    ioc = start_ioc(width=32, height=16, rate=5.0)
    client = CamClient(epics_server.url)
    client.set_camera_config("epics_cam", ioc.camera_config())
    assert timed_online(epics_server, "epics_cam") == {"state": "ok", "status": "Camera 'epics_cam' is online.",
                                                        "online": True}
    ioc.command("offline")
    assert timed_online(epics_server, "epics_cam") == {
        "state": "ok", "online": False,
        "status": f"Camera with prefix {ioc.prefix} is not initialized - Status OFFLINE"}
    ioc.command("online")
    assert client.is_camera_online("epics_cam") is True
    ioc.stop()
    assert timed_online(epics_server, "epics_cam") == {"state": "ok", "online": False,
                                                        "status": f"Camera with prefix {ioc.prefix} is offline"}
    assert client.get_server_info()["active_instances"] == {}


def test_area_detector_camera_is_online(epics_server: RunningServer, start_ioc) -> None:  # noqa: F811
    # One IOC per test: IOCs of one namespace share the UDP search port, a search reaches only one of them.
    detector = start_ioc(width=32, height=16, rate=5.0, pv_names="area_detector")
    client = CamClient(epics_server.url)
    client.set_camera_config("ad_cam", detector.camera_config())
    assert client.is_camera_online("ad_cam") is True
    detector.stop()
    assert timed_online(epics_server, "ad_cam") == {"state": "ok", "online": False,
                                                     "status": f"Camera with prefix {detector.prefix} is offline"}


def test_bsread_prefix_camera_is_online(epics_server: RunningServer, start_ioc) -> None:  # noqa: F811
    bs = start_ioc(width=32, height=16, rate=5.0, pv_names="bsread", camera_name="bs_cam")
    client = CamClient(epics_server.url)
    client.set_camera_config("bs_cam", bs.camera_config())
    assert client.is_camera_online("bs_cam") is True
    bs.command("bsreadconfig")  # an empty stream address: the camera cannot stream
    body = timed_online(epics_server, "bs_cam")
    assert body["online"] is False
    assert body["status"] == f"Camera with prefix {bs.prefix} has no bsread stream address: {bs.prefix}:BSREADCONFIG " \
                             "is empty"
    assert client.get_server_info()["active_instances"] == {}


def test_check_online_keeps_no_channel(start_ioc) -> None:  # noqa: F811
    ioc = start_ioc(width=32, height=16, rate=5.0)
    source = create_source(parse_camera_config(ioc.camera_config()))
    source.check_online()
    assert not source.connected and source.last_error is None
    ioc.command("offline")
    with pytest.raises(CameraOffline, match="is not initialized - Status OFFLINE"):
        source.check_online()
    assert not source.connected
