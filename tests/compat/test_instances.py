"""Pipeline instance lifecycle and info as PSI's own clients and tools read them (psi-interface.md 1 and 2),
against a real camera server and pipeline server."""

from __future__ import annotations

import re
import threading
import time
import uuid

import numpy as np
import psutil
import pytest
import requests

from cam_server import __version__
from cam_server.bsread import PULL, PUSH, SUB, Sender, Source
from cam_server.client.pipeline_client import PipelineClient
from tests.helpers.net import free_port
from tests.helpers.procs import wait_until
from tests.helpers.servers import ServerPair
from tests.helpers.streams import receive

API = "/api/v1/pipeline"
TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
RATE_COUNT = re.compile(r"^(\d+\.\d)Hz - (\d+)$")
WIDTH, HEIGHT = 1280, 960  # the bundled simulation camera


def call(servers: ServerPair, method: str, path: str, **kwargs) -> tuple[int, dict]:
    response = requests.request(method, f"{servers.url}{API}{path}", timeout=30, **kwargs)
    return response.status_code, response.json()


def assert_error(servers: ServerPair, method: str, path: str, status: int, message: str, **kwargs) -> str:
    code, body = call(servers, method, path, **kwargs)
    assert (code, body["state"]) == (status, "error"), body
    assert message in body["status"], body
    return body["status"]


# --- 1. a stopped instance no longer exists; its exit code stays readable ---------------------------------------

def test_a_stopped_private_instance_no_longer_exists_but_its_exit_code_does(servers, client):
    instance_id, _ = client.create_instance_from_config({"camera_name": "simulation"})
    assert client.get_instance_exit_code(instance_id) is None
    assert call(servers, "GET", f"/instance/{instance_id}/exitcode")[1] == {
        "state": "ok", "status": f"Pipeline instance {instance_id} exit code.", "exitcode": None}
    assert client.is_instance_running(instance_id) is True

    client.stop_instance(instance_id)

    assert client.is_instance_running(instance_id) is False
    gone = f"Instance '{instance_id}' is not running any more (exit code 0)"
    assert_error(servers, "GET", f"/instance/{instance_id}", 404, gone)
    assert_error(servers, "GET", f"/instance/{instance_id}/info", 404, gone)
    assert_error(servers, "GET", f"/instance/{instance_id}/config", 404, gone)
    assert_error(servers, "POST", f"/instance/{instance_id}/config", 404, gone, json={"image_threshold": 1})
    assert_error(servers, "GET", f"/instance/{instance_id}/message", 404, gone)
    assert_error(servers, "DELETE", f"/{instance_id}", 404, f"Instance '{instance_id}' is not running")
    with pytest.raises(ValueError, match=re.escape(gone)):
        client.get_instance_info(instance_id)
    # PSI's tools read how it ended here, and in the server's history.
    assert client.get_instance_exit_code(instance_id) == 0
    finished = client.get_server_info()["finished_instances"][instance_id]
    assert finished["exit_code"] == 0 and finished["is_running"] is False and finished["is_stream_active"] is False


def test_an_instance_that_ended_by_itself_keeps_its_exit_code(servers, client):
    instance_id, _ = client.create_instance_from_config({"camera_name": "simulation", "function": "no_such_function"})
    code = wait_until(lambda: client.get_instance_exit_code(instance_id), 30, "the failing instance to end")
    assert code == 1  # could not start: the function does not exist
    assert instance_id not in client.get_server_info()["active_instances"]
    status = assert_error(servers, "GET", f"/instance/{instance_id}/info", 404,
                          f"Instance '{instance_id}' is not running any more (exit code 1, last error: ")
    assert "no_such_function" in status
    record = client.get_server_info()["finished_instances"][instance_id]
    assert record["exit_code"] == 1 and "no_such_function" in record["last_error"]
    assert client.get_instance_exit_code(instance_id) == 1  # reading it does not consume it


def test_a_saved_pipeline_still_starts_as_shared_instance_after_its_stop(client):
    client.get_instance_stream("simulation_sp")
    first_pid = client.get_instance_info("simulation_sp")["pid"]
    client.stop_instance("simulation_sp")
    assert client.get_instance_exit_code("simulation_sp") == 0
    assert client.get_instance_stream("simulation_sp").startswith("tcp://127.0.0.1:")  # started again
    assert client.get_instance_exit_code("simulation_sp") is None
    info = client.get_instance_info("simulation_sp")
    assert info["read_only"] is True and info["pid"] != first_pid
    assert client.is_instance_running("simulation_sp")


# --- 2. server info --------------------------------------------------------------------------------------------

def test_server_info_has_running_instances_by_id_and_the_server_usage(servers, client):
    ids = [client.create_instance_from_config({"camera_name": "simulation", "image_threshold": t})[0]
           for t in (1, 2)]
    client.stop_instance(ids[1])
    status, body = call(servers, "GET", "/info")
    assert status == 200 and body["state"] == "ok"
    info = body["info"]
    assert "instances" not in info  # the per-id info is active_instances itself
    assert set(info["active_instances"]) == {ids[0]}
    running = info["active_instances"][ids[0]]
    assert running["instance_id"] == ids[0] and running["config"]["image_threshold"] == 1.0
    assert running["pid"] == client.get_instance_info(ids[0])["pid"]
    assert info["version"] == __version__
    assert isinstance(info["cpu"], float) and info["cpu"] >= 0
    assert isinstance(info["memory"], int)
    assert info["memory"] == pytest.approx(psutil.Process(servers.pipeline.pid).memory_info().rss, rel=0.3)
    assert info["finished_instances"][ids[1]]["exit_code"] == 0


# --- 3. instance info --------------------------------------------------------------------------------------------

def test_instance_info_has_the_fields_and_statistics_psi_reads(client):
    before = time.time()
    instance_id, stream = client.create_instance_from_config({"camera_name": "simulation", "image_threshold": 3})
    with Source(address=stream, mode=SUB, receive_timeout=200) as source:
        def streaming() -> dict | None:
            source.receive()
            info = client.get_instance_info(instance_id)
            stats = info["statistics"]
            measured = stats["throughput"] > 0 and stats["rate"] > 0 and stats["rate_in"] > 0  # after 1 s windows
            return info if stats["frames_out"] >= 5 and stats["clients"] == 1 and measured else None

        info = wait_until(streaming, 30, "frames sent to our client")
    assert info["instance_id"] == instance_id and info["camera_name"] == "simulation"
    assert info["config"] == client.get_instance_config(instance_id) and info["config"]["image_threshold"] == 3.0
    assert info["config"]["pipeline_type"] == "processing" and "image_region_of_interest" in info["config"]
    assert info["read_only"] is False and info["stream_address"] == stream
    assert info["is_stream_active"] is True
    assert TIME.match(info["last_start_time"])
    started = time.mktime(time.strptime(info["last_start_time"], "%Y-%m-%d %H:%M:%S"))
    assert before - 1 <= started <= time.time()

    stats = info["statistics"]
    # PSI's keys ...
    assert stats["frame_shape"] == [HEIGHT, WIDTH]
    assert stats["clients"] == 1
    # every message carries at least the image (1 byte per pixel or more)
    assert stats["total_bytes"] >= stats["frames_out"] * WIDTH * HEIGHT
    assert stats["throughput"] > WIDTH * HEIGHT  # ~10 frames/s of the simulation camera
    assert TIME.match(stats["time"])
    rx, tx = RATE_COUNT.match(stats["rx"]), RATE_COUNT.match(stats["tx"])
    assert rx and tx, (stats["rx"], stats["tx"])
    assert int(rx.group(2)) == stats["frames_in"] and int(tx.group(2)) == stats["frames_out"]
    assert 2.0 < float(tx.group(1)) < 20.0 and 2.0 < float(rx.group(1)) < 20.0  # the camera runs at 10 Hz
    assert stats["pid"] == info["pid"] and psutil.Process(stats["pid"]).is_running()
    assert isinstance(stats["cpu"], float)
    assert stats["memory"] == pytest.approx(psutil.Process(stats["pid"]).memory_info().rss, rel=0.5)
    # ... beside our own counters
    assert stats["frames_out"] >= 5 and stats["errors"] == 0 and stats["rate"] > 0
    assert "frame_width" not in stats and "frame_height" not in stats  # frame_shape says it


@pytest.mark.unit
def test_sender_counts_the_bytes_the_receiver_gets():
    """``total_bytes`` / ``throughput`` come from Sender.bytes_sent: every frame of every message taken."""
    port = free_port()
    messages = [{"image": np.zeros((48, 64), np.uint16), "n": 1, "text": "abc"},
                {"image": np.zeros((4, 8), np.uint8), "n": 2, "text": None}]
    with Sender(port=port, mode=PUSH) as sender, \
            Source(host="127.0.0.1", port=port, mode=PULL, receive_timeout=200) as source:
        assert sender.bytes_sent == 0
        for values in messages:
            sender.send(values, pulse_id=values["n"])
        received = receive(source, 2)
    assert sender.bytes_sent == received[-1].statistics.total_bytes_received
    assert received[0].statistics.bytes_received > 48 * 64 * 2  # the image and the headers


def test_shared_and_private_instance_info_differ_in_read_only(client):
    client.get_instance_stream("simulation_sp")
    info = client.get_instance_info("simulation_sp")
    assert info["read_only"] is True and info["instance_id"] == "simulation_sp"
    assert info["config"]["camera_name"] == "simulation"


# --- 4. shared instance from a config ----------------------------------------------------------------------------

def test_shared_instance_from_config_is_reused_while_it_runs(servers, client):
    config = {"camera_name": "simulation", "image_threshold": 7}
    status, body = call(servers, "POST", "/instance/", json=config)
    assert status == 200 and body["state"] == "ok"
    instance_id = body["instance_id"]
    assert uuid.UUID(instance_id).version == 4
    assert body["stream"].startswith("tcp://127.0.0.1:") and body["config"]["image_threshold"] == 7.0
    assert body["config"]["pipeline_type"] == "processing"  # the full, defaulted config

    # Same full config (given differently: defaults spelled out) → the same instance.
    assert client.get_instance_stream_from_config({**config, "pipeline_type": "processing", "image_threshold": 7.0}) \
        == (instance_id, body["stream"])
    info = client.get_instance_info(instance_id)
    assert info["read_only"] is True
    with pytest.raises(ValueError, match="is a shared \\(read-only\\) instance"):
        client.set_instance_config(instance_id, {"image_threshold": 1})

    # Another config, or a private instance of the same config, is another instance.
    other, _ = client.get_instance_stream_from_config({"camera_name": "simulation", "image_threshold": 8})
    private, _ = client.create_instance_from_config(config)
    assert len({instance_id, other, private}) == 3
    assert client.get_instance_stream_from_config(config)[0] == instance_id  # a private one is never reused

    # Once stopped it is not reused: a new one starts.
    client.stop_instance(instance_id)
    again, _ = client.get_instance_stream_from_config(config)
    assert again not in (instance_id, other, private) and client.is_instance_running(again)


def test_shared_instance_of_a_saved_pipeline_is_reused_for_its_config(client):
    client.get_instance_stream("simulation_sp")
    saved = client.get_pipeline_config("simulation_sp")
    assert client.get_instance_stream_from_config(saved)[0] == "simulation_sp"


def test_concurrent_identical_requests_end_with_one_instance(servers, client):
    config = {"camera_name": "simulation", "image_threshold": 11}
    results: list[tuple[str, str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(5)

    def request() -> None:
        try:
            barrier.wait(10)
            results.append(PipelineClient(servers.url).get_instance_stream_from_config(config))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=request) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 5
    assert len(set(results)) == 1
    active = client.get_server_info()["active_instances"]
    assert [iid for iid, i in active.items() if i["config"].get("image_threshold") == 11] == [results[0][0]]


# --- 5. pipeline groups ----------------------------------------------------------------------------------------

def test_pipeline_groups_from_the_saved_configs(servers, client):
    client.save_pipeline_config("grouped_a", {"camera_name": "simulation", "group": "screens"})
    client.save_pipeline_config("grouped_b", {"camera_name": "simulation", "group": ["screens", "daq"]})
    client.save_pipeline_config("ungrouped", {"camera_name": "simulation"})
    (servers.pipeline.base / "broken.json").write_text("{oops")  # unreadable: skipped, not an error
    try:
        assert client.get_pipeline_config("grouped_b")["group"] == ["screens", "daq"]
        status, body = call(servers, "GET", "/groups")
        assert status == 200 and body["state"] == "ok"
        assert body["groups"] == {"screens": ["grouped_a", "grouped_b"], "daq": ["grouped_b"]}
        assert client.get_pipeline_groups() == body["groups"]
    finally:
        (servers.pipeline.base / "broken.json").unlink()
        for name in ("grouped_a", "grouped_b", "ungrouped"):
            client.delete_pipeline_config(name)
    assert client.get_pipeline_groups() == {}
    assert_error(servers, "POST", "/groups/config", 400, "reserved by the REST API",
                 json={"camera_name": "simulation"})
