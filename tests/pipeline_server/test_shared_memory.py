"""Frames between a camera and a pipeline on the same host through shared memory (docs/shared_memory.md): the
negotiated path, the same results as through the bsread stream, the switch, drops of overwritten frames, and no ring
left in /dev/shm after kill -9."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import requests

from cam_server.camera.instance import announce_address
from cam_server.client.cam_client import CamClient
from cam_server.client.pipeline_client import PipelineClient
from cam_server.common.frame_ring import host_id, list_rings, parse_ring_name
from tests.helpers.procs import wait_until
from tests.helpers.servers import ServerPair, camera_server, pipeline_server, write_config_dir
from tests.test_metrics import scrape, value

CAMERA = "test_camera"
SLOW_FUNCTION = """
import time

def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    time.sleep(0.6)  # longer than the camera's ring holds a frame (8 slots at 20 Hz: 0.4 s)
    return {"total": int(image.sum()), "pid": pulse_id}
"""
# Values that depend on when a frame was taken or on the config, not on its pixels.
TIMING_KEYS = {"timestamp", "processing_parameters"}


def _stats(client: PipelineClient, instance_id: str) -> dict:
    return client.get_instance_info(instance_id)["statistics"]


def _camera_rings(servers: ServerPair) -> list[str]:
    server_pid = servers.camera.pid
    return [name for name in list_rings() if (parsed := parse_ring_name(name)) and parsed[0] == server_pid]


def _values(message) -> dict:
    return {name: v.value for name, v in message.data.data.items() if name not in TIMING_KEYS}


def test_local_pipeline_reads_in_place_with_the_results_of_the_stream(servers, client):
    """The config key ``shared_memory: false`` keeps a pipeline on the stream (the server switch takes the same
    branch, ``shm_input.camera_input``: unit-tested)."""
    shm_id, _ = client.create_instance_from_config({"camera_name": CAMERA})
    bsread_id, _ = client.create_instance_from_config({"camera_name": CAMERA, "shared_memory": False})
    in_place = client.get_instance_message(shm_id, timeout=30)
    streamed = client.get_instance_message(bsread_id, timeout=30)
    assert _stats(client, shm_id)["input_path"] == "shared_memory"
    assert _stats(client, bsread_id)["input_path"] == "bsread"
    a, b = _values(in_place), _values(streamed)  # the camera renders the same frame every time
    assert a.keys() == b.keys() and "x_center_of_mass" in a
    for name in a:
        if isinstance(a[name], np.ndarray):
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        else:
            assert a[name] == b[name], name
    # what the camera server offered: a ring named by its pid, the camera and the instance, on this host
    answer = requests.get(f"{servers.camera.url}/api/v1/cam/{CAMERA}/shared_memory", timeout=10).json()
    offer = answer["shared_memory"]
    assert answer["stream"] == CamClient(servers.camera.url).get_instance_stream(CAMERA)
    assert offer["host_id"] == host_id() and offer["announce"].startswith("ipc://")
    rings = _camera_rings(servers)
    assert [name.rsplit("-", 1)[0] for name in rings] == [offer["ring"]]
    assert parse_ring_name(rings[0])[1] == CAMERA


def test_slow_function_drops_overwritten_frames_and_recovers(servers, client):
    client.set_user_script("shm_slow", SLOW_FUNCTION)
    instance_id, _ = client.create_instance_from_config({"camera_name": CAMERA, "function": "shm_slow"})
    wait_until(lambda: _stats(client, instance_id)["dropped_overwritten"] >= 1, 15,
               "a frame overwritten while the function used it")
    assert _stats(client, instance_id)["errors"] == 0
    # then frames are copied as they are taken: results flow again, right ones
    message = client.get_instance_message(instance_id, timeout=15)
    total = int(message.data.data["total"].value)
    reference = client.get_instance_message(client.create_instance_from_config({"camera_name": CAMERA})[0],
                                            timeout=30)
    assert total == int(np.asarray(reference.data.data["image"].value).sum())
    samples = scrape(servers.pipeline.url)
    assert value(samples, "cam_server_instance_dropped_total", instance_id=instance_id, reason="overwritten") >= 1


def test_kill_9_leaves_no_ring(servers, client):
    instance_id, _ = client.create_instance_from_config({"camera_name": CAMERA})
    client.get_instance_message(instance_id, timeout=30)
    assert _stats(client, instance_id)["input_path"] == "shared_memory"
    rings = _camera_rings(servers)
    assert len(rings) == 1
    # a pipeline instance killed: it only mapped the ring; the camera's stays while the camera runs
    os.kill(client.get_instance_info(instance_id)["pid"], signal.SIGKILL)
    wait_until(lambda: instance_id not in client.get_server_info()["active_instances"], 10, "pipeline reaped")
    assert _camera_rings(servers) == rings
    # the camera instance killed: its server removes the ring once it noticed
    camera_pid = parse_ring_name(rings[0])[2]
    os.kill(camera_pid, signal.SIGKILL)
    wait_until(lambda: not _camera_rings(servers), 10, "the killed camera's ring removed")
    assert not Path(f"/dev/shm/{rings[0]}").exists()
    assert not Path(announce_address(camera_pid).removeprefix("ipc://")).exists()  # its socket file too


def test_camera_server_switched_off_offers_no_ring_and_pipelines_read_the_stream(tmp_path: Path):
    """``camera_server --shared_memory off`` (README options): the negotiation answers no ring, a local pipeline
    reads the bsread stream, and the camera writes no ring to /dev/shm."""
    with camera_server(tmp_path, config_dir=write_config_dir(tmp_path / "cameras"),
                       extra_args=["--shared_memory", "off"]) as cam, \
            pipeline_server(tmp_path, cam.url) as pipe:
        answer = requests.get(f"{cam.url}/api/v1/cam/{CAMERA}/shared_memory", timeout=30).json()
        assert answer["state"] == "ok" and answer["shared_memory"] is None and answer["stream"].startswith("tcp://")
        pipelines = PipelineClient(pipe.url)
        instance_id, _ = pipelines.create_instance_from_config({"camera_name": CAMERA})
        message = pipelines.get_instance_message(instance_id, timeout=30)
        assert "x_center_of_mass" in message.data.data
        assert _stats(pipelines, instance_id)["input_path"] == "bsread"
        assert [name for name in list_rings() if (parsed := parse_ring_name(name)) and parsed[0] == cam.pid] == []


def test_pipeline_server_switched_off_reads_the_stream_though_a_ring_is_offered(servers, tmp_path: Path):
    """``pipeline_server --shared_memory off`` (README options): the camera server still offers its ring, the
    pipeline server's instances read the bsread stream all the same."""
    with pipeline_server(tmp_path, servers.camera.url, extra_args=["--shared_memory", "off"]) as pipe:
        pipelines = PipelineClient(pipe.url)
        instance_id, _ = pipelines.create_instance_from_config({"camera_name": CAMERA})
        try:
            message = pipelines.get_instance_message(instance_id, timeout=30)
            assert "x_center_of_mass" in message.data.data
            assert _stats(pipelines, instance_id)["input_path"] == "bsread"
            offer = requests.get(f"{servers.camera.url}/api/v1/cam/{CAMERA}/shared_memory", timeout=30).json()
            assert offer["shared_memory"] is not None and offer["shared_memory"]["host_id"] == host_id()
        finally:
            pipelines.stop_all_instances()
