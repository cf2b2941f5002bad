"""The camera stream: channels, types, shapes, values, camera-side transforms and live config changes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cam_server.client.cam_client import CamClient
from tests.helpers.servers import TEST_CAMERA
from tests.helpers.streams import receive, values

IDENTITY = {**TEST_CAMERA, "alias": [], "group": [], "mirror_x": False}


def test_channels_types_shapes_and_values(client: CamClient) -> None:
    client.set_camera_config("plain", {**IDENTITY, "image_type": None, "size_x": 80, "size_y": 60})
    before = time.time()
    messages = receive(client.get_instance_stream("plain"), count=3)
    first = messages[0]
    channels = [(c.name, c.type, c.shape) for c in first.data.channels]
    assert channels == [("width", "int64", None), ("height", "int64", None), ("timestamp", "float64", None),
                        ("image", "uint16", (80, 60)), ("x_axis", "float32", (80,)), ("y_axis", "float32", (60,))]
    data = values(first)
    assert data["width"] == 80 and data["height"] == 60
    image = data["image"]
    assert image.shape == (60, 80) and image.dtype == np.uint16
    assert image.max() == 58981  # saturated beam core / dead pixels (processing spec 4)
    assert np.median(image) < 6554  # noise background
    np.testing.assert_array_equal(data["x_axis"], np.arange(80, dtype=np.float32))
    np.testing.assert_array_equal(data["y_axis"], np.arange(60, dtype=np.float32))
    assert before - 5 < data["timestamp"] < time.time() + 1
    header = first.data
    assert header.global_timestamp == int(data["timestamp"])
    assert abs(header.global_timestamp + header.global_timestamp_offset * 1e-9 - data["timestamp"]) < 1e-6
    pulse_ids = [m.data.pulse_id for m in messages]
    assert pulse_ids == list(range(pulse_ids[0], pulse_ids[0] + 3))
    assert not np.array_equal(values(messages[1])["image"], image)  # a new frame each time
    client.delete_camera_config("plain")


def _frame_after(client: CamClient, name: str, config: dict, check, timeout: float = 10.0) -> dict:
    """Apply ``config`` live and return the first frame for which ``check(values)`` holds."""
    client.set_camera_config(name, config)
    (message,) = receive(client.get_instance_stream(name), predicate=lambda m: check(values(m)), timeout=timeout)
    return values(message)


def test_transforms_apply_live_without_restart(client: CamClient) -> None:
    name = "transforms"
    client.set_camera_config(name, IDENTITY)
    stream = client.get_instance_stream(name)
    pid = client.get_server_info()["active_instances"][name]["pid"]
    base = values(receive(stream)[0])["image"].copy()
    assert base.shape == (48, 64)

    def same(expected: np.ndarray):
        return lambda v: v["image"].shape == expected.shape and np.array_equal(v["image"], expected)

    _frame_after(client, name, {**IDENTITY, "mirror_x": True}, same(base[:, ::-1]))
    _frame_after(client, name, {**IDENTITY, "mirror_y": True}, same(base[::-1, :]))
    rotated = _frame_after(client, name, {**IDENTITY, "rotate": 1}, same(np.rot90(base)))
    assert (rotated["width"], rotated["height"]) == (48, 64) and rotated["x_axis"].shape == (48,)
    _frame_after(client, name, {**IDENTITY, "rotate": 5, "mirror_x": True}, same(np.rot90(base[:, ::-1])))
    roi = _frame_after(client, name, {**IDENTITY, "roi": [10, 20, 5, 15]}, same(base[5:20, 10:30]))
    assert (roi["width"], roi["height"]) == (20, 15)
    binned = np.clip(base.reshape(24, 2, 32, 2).astype(np.int64).sum(axis=(1, 3)), 0, 65535).astype(np.uint16)
    _frame_after(client, name, {**IDENTITY, "binning_x": 2, "binning_y": 2}, same(binned))
    mean = (base.reshape(24, 2, 32, 2).astype(np.float64).mean(axis=(1, 3))).astype(np.uint16)
    _frame_after(client, name, {**IDENTITY, "binning_x": 2, "binning_y": 2, "binning_mean": True}, same(mean))
    assert client.get_server_info()["active_instances"][name]["pid"] == pid  # never restarted
    assert client.get_camera_geometry(name) == [32, 24]
    client.delete_camera_config(name)


def test_calibrated_axes(client: CamClient) -> None:
    name = "calibrated"
    client.set_camera_config(name, IDENTITY)
    stream = client.get_instance_stream(name)
    receive(stream)
    calibration = {"reference_marker": [211, 173, 1063, 793], "reference_marker_width": 30000.0,
                   "reference_marker_height": 100.0, "angle_horizontal": 0.0, "angle_vertical": 0.0}
    # spec example: W=400 → ox=637, px≈35.2113, x_axis[0] ≈ 22429.58; size changes reconnect the source live
    data = _frame_after(client, name, {**IDENTITY, "size_x": 400, "camera_calibration": calibration},
                        lambda v: v["width"] == 400 and v["x_axis"][0] > 1000)
    assert data["x_axis"][0] == pytest.approx(22429.58, abs=0.01)
    assert data["x_axis"][1] < data["x_axis"][0]  # calibrated axes run downward
    oy, py = int(173 + (793 - 173) / 2), 100.0 / (793 - 173)
    np.testing.assert_allclose(data["y_axis"], -(np.arange(48) - oy) * py, rtol=1e-6)
    # missing calibration keys take their defaults: markers [0,0,100,100] → ox=50, px=1
    data = _frame_after(client, name, {**IDENTITY, "camera_calibration": {"angle_horizontal": 0.0}},
                        lambda v: v["width"] == 64 and v["x_axis"][0] == 50.0)
    np.testing.assert_array_equal(data["x_axis"], -(np.arange(64, dtype=np.float32) - 50))
    client.delete_camera_config(name)


def test_other_dtype_and_simulated_pulse_id(client: CamClient) -> None:
    client.set_camera_config("float_cam", {**IDENTITY, "dtype": "float32", "simulate_pulse_id": True})
    (message,) = receive(client.get_instance_stream("float_cam"))
    assert message.data.channel("image").type == "float32"
    assert values(message)["image"].dtype == np.float32
    assert abs(message.data.pulse_id - time.time() * 100) < 1000
    client.delete_camera_config("float_cam")


def test_ipc_protocol(client: CamClient) -> None:
    client.set_camera_config("ipc_cam", {**IDENTITY, "protocol": "ipc"})
    stream = client.get_instance_stream("ipc_cam")
    assert stream.startswith("ipc:///tmp/cam_server-ipc/ipc_cam-")
    (message,) = receive(stream)
    assert values(message)["image"].shape == (48, 64)
    client.delete_camera_config("ipc_cam")


def test_fixed_port(client: CamClient) -> None:
    from tests.helpers.net import free_port

    port = free_port()
    client.set_camera_config("fixed_port", {**IDENTITY, "port": port})
    assert client.get_instance_stream("fixed_port") == f"tcp://127.0.0.1:{port}"
    client.delete_camera_config("fixed_port")
