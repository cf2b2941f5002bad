"""Instance lifecycle: clients keep an instance alive, no clients stop it, crashes and server shutdown."""

from __future__ import annotations

import os
import signal

import psutil

from cam_server.bsread import SUB, Source
from cam_server.client.cam_client import CamClient
from tests.helpers.procs import wait_until
from tests.helpers.servers import TEST_CAMERA, camera_server, write_config_dir

SMALL = {**TEST_CAMERA, "alias": [], "group": []}


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_client_keeps_instance_alive_then_no_client_timeout_stops_it(client: CamClient) -> None:
    client.set_camera_config("kept", {**SMALL, "no_client_timeout": 1.0})
    stream = client.get_instance_stream("kept")
    pid = client.get_server_info()["active_instances"]["kept"]["pid"]
    with Source(address=stream, mode=SUB, receive_timeout=1000) as source:
        received = [source.receive() for _ in range(50)]  # 2.5 s at 20 Hz: well beyond the timeout
        assert all(m is not None for m in received)
        info = client.get_server_info()["active_instances"]["kept"]
        assert info["pid"] == pid and info["statistics"]["clients"] == 1
    wait_until(lambda: "kept" not in client.get_server_info()["active_instances"], 15, "instance to stop")
    assert _gone(pid)
    assert client.get_server_info()["finished_instances"]["kept"]["exit_code"] == 0
    assert client.get_instance_stream("kept")  # a new request starts it again
    client.delete_camera_config("kept")


def test_crashed_instance_is_reaped_and_restarted(client: CamClient) -> None:
    client.set_camera_config("crashy", SMALL)
    client.get_instance_stream("crashy")
    pid = client.get_server_info()["active_instances"]["crashy"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: "crashy" not in client.get_server_info()["active_instances"], 15, "crashed instance reaped")
    assert client.get_server_info()["finished_instances"]["crashy"]["exit_code"] == -signal.SIGKILL
    client.get_instance_stream("crashy")
    assert client.get_server_info()["active_instances"]["crashy"]["pid"] != pid
    client.delete_camera_config("crashy")


def test_sigterm_stops_the_server_and_all_instances(tmp_path) -> None:
    with camera_server(tmp_path, config_dir=write_config_dir(tmp_path / "configs")) as server:
        client = CamClient(server.url)
        client.get_instance_stream("test_camera")
        client.get_instance_stream("simulation")
        pids = [i["pid"] for i in client.get_server_info()["active_instances"].values()]
        assert len(pids) == 2
        os.kill(server.pid, signal.SIGTERM)  # the server alone, not its process group
        wait_until(lambda: _gone(server.pid), 15, "server to exit")
        wait_until(lambda: all(_gone(p) for p in pids), 10, "instances to stop")
        assert "Application shutdown complete" in server.log_text()
