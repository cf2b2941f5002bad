"""End to end: an EPICS camera IOC streamed through the camera server (loopback-only namespace only)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
import requests

from cam_server.bsread import SUB, Source
from cam_server.client.cam_client import CamClient
from tests.epics.conftest import epics_client_env, start_ioc  # noqa: F401 - fixtures (autouse: netns check + env)
from tests.helpers.net import EPICS_ENV
from tests.helpers.procs import wait_until
from tests.helpers.servers import RunningServer, camera_server
from tests.helpers.streams import receive, values
from tests.ioc.camera_ioc import base_pattern


@pytest.fixture
def epics_server(tmp_path) -> Iterator[RunningServer]:
    configs = tmp_path / "configs"
    configs.mkdir()
    with camera_server(tmp_path, config_dir=configs, env=EPICS_ENV) as server:
        yield server


def test_epics_camera_stream(epics_server: RunningServer, start_ioc) -> None:  # noqa: F811
    ioc = start_ioc(width=64, height=48, rate=20.0)
    client = CamClient(epics_server.url)
    client.set_camera_config("epics_cam", ioc.camera_config(mirror_x=True))
    messages = receive(client.get_instance_stream("epics_cam"), count=3, timeout=20)
    expected = base_pattern(64, 48, "uint16")[:, ::-1]
    for message in messages:
        data = values(message)
        assert message.data.channel("image").shape == (64, 48)
        assert data["image"].dtype == np.uint16 and (data["width"], data["height"]) == (64, 48)
        # everything but the counter pixel (top left before mirroring → top right after)
        np.testing.assert_array_equal(data["image"][:, :-1], expected[:, :-1])
        np.testing.assert_array_equal(data["image"][1:, -1], expected[1:, -1])
    pulse_ids = [m.data.pulse_id for m in messages]
    assert pulse_ids == list(range(pulse_ids[0], pulse_ids[0] + 3))
    assert client.get_camera_geometry("epics_cam") == [64, 48]
    client.stop_all_instances()


def test_area_detector_camera_stream(epics_server: RunningServer, start_ioc) -> None:  # noqa: F811
    ioc = start_ioc(width=64, height=48, rate=20.0, pv_names="area_detector")
    client = CamClient(epics_server.url)
    client.set_camera_config("ad_cam", ioc.camera_config())
    assert client.get_camera_config("ad_cam")["source_type"] == "area_detector"
    messages = receive(client.get_instance_stream("ad_cam"), count=3, timeout=20)
    expected = base_pattern(64, 48, "uint16")
    for message in messages:
        data = values(message)
        assert data["image"].dtype == np.uint16 and (data["width"], data["height"]) == (64, 48)
        np.testing.assert_array_equal(data["image"].reshape(-1)[1:], expected.reshape(-1)[1:])
        # the pulse id is cam1:ArrayCounter_RBV, which the IOC also writes into pixel [0, 0]
        assert message.data.pulse_id == int(data["image"][0, 0])
    pulse_ids = [m.data.pulse_id for m in messages]
    assert pulse_ids == sorted(set(pulse_ids))
    client.stop_all_instances()


def test_bsread_camera_by_pv_prefix_stream(epics_server: RunningServer, start_ioc) -> None:  # noqa: F811
    # source = the PV prefix: P:INIT / P:WIDTH / P:HEIGHT checked over CA, frames from the stream in P:BSREADCONFIG
    ioc = start_ioc(width=64, height=48, rate=20.0, pv_names="bsread", camera_name="bs_cam", bsread_flat=True)
    client = CamClient(epics_server.url)
    client.set_camera_config("bs_cam", ioc.camera_config(rotate=1))
    assert client.get_camera_config("bs_cam")["source"] == ioc.prefix
    messages = receive(client.get_instance_stream("bs_cam"), count=3, timeout=20)
    expected = np.rot90(base_pattern(64, 48, "uint16"), 1)
    for message in messages:
        data = values(message)
        assert data["image"].dtype == np.uint16 and (data["width"], data["height"]) == (48, 64)
        assert message.data.pulse_id == int(data["image"][-1, 0])  # the IOC's frame counter, pixel [0, 0] rotated
        np.testing.assert_array_equal(data["image"][:-1], expected[:-1])
    pulse_ids = [m.data.pulse_id for m in messages]
    assert pulse_ids == sorted(set(pulse_ids))
    assert client.get_camera_geometry("bs_cam") == [48, 64]
    client.stop_all_instances()


@pytest.mark.parametrize("source_type", ["epics", "area_detector", "bsread"])
def test_offline_epics_camera_is_a_clear_error(epics_server: RunningServer, source_type: str) -> None:
    client = CamClient(epics_server.url)
    client.set_camera_config("offline_cam", {"source": "NO:SUCH:CAMERA", "source_type": source_type,
                                             "connection_timeout": 1.0})
    response = requests.get(f"{epics_server.url}/api/v1/cam/offline_cam", timeout=30)
    assert response.status_code == 503
    assert response.json()["status"] == ("Cannot start camera 'offline_cam': Camera with prefix NO:SUCH:CAMERA "
                                         "is offline")
    assert client.get_server_info()["active_instances"] == {}
    assert client.get_server_info()["finished_instances"] == {}
    assert client.get_cameras() == ["offline_cam"]  # the server stays healthy


def _next_frame(stream: Source, predicate, timeout: float) -> dict:
    """The first message on the open ``stream`` whose values satisfy ``predicate``; raises on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = stream.receive()
        if message is not None and predicate(data := values(message)):
            return data
    raise TimeoutError(f"no matching frame within {timeout} s")


def test_epics_camera_follows_resize_and_survives_ioc_restart(epics_server: RunningServer,
                                                               start_ioc) -> None:  # noqa: F811
    ioc = start_ioc(width=64, height=48, rate=20.0)
    client = CamClient(epics_server.url)
    client.set_camera_config("epics_cam", ioc.camera_config(no_client_timeout=60))
    address = client.get_instance_stream("epics_cam")
    pid = client.get_server_info()["active_instances"]["epics_cam"]["pid"]
    with Source(address=address, mode=SUB, receive_timeout=200) as stream:
        first = _next_frame(stream, lambda d: True, 20)
        assert first["image"].shape == (48, 64)

        ioc.command("resize 48 40")  # geometry change picked up live: channels and axes rebuilt
        resized = _next_frame(stream, lambda d: d["width"] == 48, 20)
        assert (resized["width"], resized["height"]) == (48, 40) and resized["image"].shape == (40, 48)
        assert resized["x_axis"].shape == (48,) and resized["y_axis"].shape == (40,)
        np.testing.assert_array_equal(resized["image"][1:], base_pattern(48, 40, "uint16")[1:])

        ioc.kill()  # a crash: the camera goes silent, the instance keeps running
        ioc.start()  # the restarted IOC serves 64x48 again; pyepics reconnects by itself (1-10 s)
        again = _next_frame(stream, lambda d: d["width"] == 64, 30)
        assert again["image"].shape == (48, 64)
        np.testing.assert_array_equal(again["image"][1:], base_pattern(64, 48, "uint16")[1:])
    info = wait_until(lambda: (i := client.get_server_info()["active_instances"]["epics_cam"])
                      and i["statistics"]["reconnects"] >= 1 and i, 5, "the reconnection counted")
    assert info["pid"] == pid  # the same instance process resumed streaming
    assert info["statistics"]["reconnects"] == 1 and info["statistics"]["state"] == "streaming"
    client.stop_all_instances()
