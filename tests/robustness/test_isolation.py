"""Issue 11 items 3, 4 and 5: instances are isolated from each other and from what their user code starts, streams
listen where the server does, and ``function`` runs only the server's own code unless the server allows more.

Real servers (a pipeline server of this module's own, so that killing its fork server or itself touches no other
module; the shared camera server), real user scripts, processes checked by PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from cam_server.cli import serve
from cam_server.cli.pipeline_server import build_parser
from cam_server.client.cam_client import CamClient
from cam_server.client.pipeline_client import PipelineClient
from cam_server.common.process import listening_pids
from tests.helpers.procs import wait_until
from tests.helpers.servers import RunningServer, ServerPair, pipeline_server
from tests.helpers.streams import receive, values

CAMERA = "test_camera"  # 64 x 48 at 20 Hz on the shared camera server

# Kills its parent once, the instance's fork server (checked by its command line, never another process).
KILL_FORK_SERVER = """
import os
import psutil

KILLED = []

def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    if not KILLED:
        parent = psutil.Process(os.getppid())
        KILLED.append(parent.pid)
        if "multiprocessing.forkserver" in " ".join(parent.cmdline()):
            os.kill(parent.pid, 9)
    return {"fork_server": KILLED[0]}
"""

# Starts three processes on its first frame and writes their pids to parameters["pid_file"]: a subprocess.Popen
# child, a fork + setsid child (keeps the instance's listening socket), and a daemon (fork, setsid, fork again: the
# intermediate exits, so the daemon is no descendant of the instance and in no group of it, but keeps the socket).
START_CHILDREN = """
import json
import os
import subprocess
import time

STARTED = {}

def _sleep_forever():
    while True:
        time.sleep(60)

def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    if not STARTED:
        STARTED["popen"] = subprocess.Popen(["sleep", "600"]).pid
        pid = os.fork()
        if pid == 0:
            os.setsid()
            _sleep_forever()
        STARTED["setsid"] = pid
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.setsid()
            daemon = os.fork()
            if daemon == 0:
                _sleep_forever()
            os.write(write, str(daemon).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        STARTED["daemon"] = int(os.read(read, 32))
        with open(parameters["pid_file"], "w") as file:
            json.dump(STARTED, file)
    return {"children": len(STARTED)}
"""


def gone(pid: int) -> bool:
    """Not running any more (a zombie waiting for a parent that never reaps counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_if_running(pids: list[int]) -> None:
    """Test cleanup of processes a failing test may leave (by PID)."""
    for pid in pids:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def own_pipeline(servers: ServerPair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A pipeline server of this module on the shared camera server."""
    with pipeline_server(tmp_path_factory.mktemp("isolation"), servers.camera.url) as server:
        yield server


@pytest.fixture()
def pipelines(own_pipeline: RunningServer) -> Iterator[PipelineClient]:
    client = PipelineClient(own_pipeline.url)
    yield client
    client.stop_all_instances()


def _fork_server_of(pid: int) -> int:
    parent = psutil.Process(pid).parent()
    assert parent is not None and "multiprocessing.forkserver" in " ".join(parent.cmdline())
    return parent.pid


def test_a_script_that_kills_the_fork_server_ends_no_other_instance(pipelines: PipelineClient) -> None:
    # Was: every instance ended with exit code 255 and no error (the server read their status from the dead fork
    # server and reaped them).
    other_id, other_stream = pipelines.create_instance_from_config({"camera_name": CAMERA, "function": "transparent"})
    receive(other_stream, 1)
    other_pid = pipelines.get_instance_info(other_id)["pid"]
    fork_server = _fork_server_of(other_pid)

    pipelines.set_user_script("kill_fork_server", KILL_FORK_SERVER)
    killer_id, killer_stream = pipelines.create_instance_from_config({"camera_name": CAMERA,
                                                                       "function": "kill_fork_server"})
    assert values(receive(killer_stream, 1)[0])["fork_server"] == fork_server
    wait_until(lambda: gone(fork_server), 10, "the fork server to die")
    time.sleep(1.5)  # the reaper's rounds (every 0.5 s) would have ended both by now

    for instance_id, stream in ((other_id, other_stream), (killer_id, killer_stream)):
        info = pipelines.get_instance_info(instance_id)
        assert info["is_running"] is True and info["exit_code"] is None, info
        assert pipelines.get_instance_exit_code(instance_id) is None
        receive(stream, 3)  # still streaming
    assert pipelines.get_instance_info(other_id)["pid"] == other_pid
    assert set(pipelines.get_server_info()["active_instances"]) >= {other_id, killer_id}

    # New instances get a new fork server.
    new_id, new_stream = pipelines.create_instance_from_config({"camera_name": CAMERA, "function": "transparent"})
    receive(new_stream, 1)
    assert _fork_server_of(pipelines.get_instance_info(new_id)["pid"]) != fork_server

    # The orphaned instance still stops on request, with its real exit code, and leaves no process.
    pipelines.stop_instance(other_id)
    assert pipelines.get_instance_exit_code(other_id) == 0
    wait_until(lambda: gone(other_pid), 10, "the stopped instance's process to end")


def _children_of_a_new_instance(pipelines: PipelineClient, tmp_path: Path) -> tuple[str, int, dict[str, int]]:
    pipelines.set_user_script("start_children", START_CHILDREN)
    pid_file = tmp_path / "children.json"
    instance_id, stream = pipelines.create_instance_from_config({"camera_name": CAMERA, "function": "start_children",
                                                                 "pid_file": str(pid_file)})
    receive(stream, 1)
    children = wait_until(lambda: pid_file.exists() and json.loads(pid_file.read_text()), 10, "the pid file")
    instance_pid = pipelines.get_instance_info(instance_id)["pid"]
    port = int(stream.rpartition(":")[2])
    assert not any(gone(pid) for pid in children.values())
    # The fork children keep the instance's listening socket.
    listening = listening_pids([port])
    assert {instance_pid, children["setsid"], children["daemon"]} <= listening
    return instance_id, instance_pid, children


def test_processes_a_script_started_end_with_the_instance(pipelines: PipelineClient, tmp_path: Path) -> None:
    # Was: all three outlived the instance's DELETE (and the server); the daemon kept the instance's port.
    instance_id, instance_pid, children = _children_of_a_new_instance(pipelines, tmp_path)
    try:
        pipelines.stop_instance(instance_id)
        assert gone(instance_pid)
        for what, pid in children.items():
            assert gone(pid), f"the {what} child (pid {pid}) outlived the instance"
    finally:
        kill_if_running(list(children.values()))


def test_processes_a_script_started_end_when_the_server_dies(servers: ServerPair, tmp_path: Path) -> None:
    with pipeline_server(tmp_path, servers.camera.url) as server:
        pipelines = PipelineClient(server.url)
        _, instance_pid, children = _children_of_a_new_instance(pipelines, tmp_path)
        try:
            os.kill(server.pid, signal.SIGKILL)
            wait_until(lambda: gone(instance_pid), 10, "the instance to end with its server")
            for what, pid in children.items():
                wait_until(lambda pid=pid: gone(pid), 10, f"the {what} child (pid {pid}) to end with the server; "
                           f"server log:\n{server.log_text()[-3000:]}")
        finally:
            kill_if_running([instance_pid, *children.values()])


# --- item 4: streams listen where the server does ----------------------------------------------------------------
def _listening_addresses(pid: int) -> set[tuple[str, int]]:
    return {(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN}


def test_streams_listen_on_the_server_interface(servers: ServerPair, pipelines: PipelineClient) -> None:
    # Was: tcp://* (every interface) although the servers run with -i 127.0.0.1.
    cameras = CamClient(servers.camera.url)
    stream = cameras.get_instance_stream(CAMERA)
    camera_pid = cameras.get_server_info()["active_instances"][CAMERA]["pid"]
    assert _listening_addresses(camera_pid) == {("127.0.0.1", int(stream.rpartition(":")[2]))}

    instance_id, stream = pipelines.create_instance_from_config({"camera_name": CAMERA, "function": "transparent"})
    receive(stream, 1)
    pid = pipelines.get_instance_info(instance_id)["pid"]
    assert _listening_addresses(pid) == {("127.0.0.1", int(stream.rpartition(":")[2]))}


@pytest.fixture(scope="module")
def open_pipeline(servers: ServerPair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A pipeline server (REST on 127.0.0.1) whose streams listen everywhere and whose functions may be anywhere."""
    with pipeline_server(tmp_path_factory.mktemp("open"), servers.camera.url,
                         extra_args=["--stream_interface", "0.0.0.0", "--allow_external_functions"]) as server:
        yield server


def test_stream_interface_option(open_pipeline: RunningServer) -> None:
    pipelines = PipelineClient(open_pipeline.url)
    try:
        instance_id, stream = pipelines.create_instance_from_config({"camera_name": CAMERA,
                                                                     "function": "transparent"})
        receive(stream, 1)
        pid = pipelines.get_instance_info(instance_id)["pid"]
        assert _listening_addresses(pid) == {("0.0.0.0", int(stream.rpartition(":")[2]))}
    finally:
        pipelines.stop_all_instances()


# --- item 5: `function` runs only the server's own code by default ----------------------------------------------
EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("ran")

def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    return {{"evil": 1}}
"""


def _refused(response: requests.Response, what: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["state"] == "error" and what in body["status"] and "--allow_external_functions" in body["status"]


def test_functions_outside_the_scripts_folder_are_refused(own_pipeline: RunningServer, pipelines: PipelineClient,
                                                          tmp_path: Path) -> None:
    # Was: any .py path or importable module ran in the instance.
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(EVIL.format(marker=str(marker)))
    api = f"{own_pipeline.url}/api/v1/pipeline"
    for function, what in ((str(evil), "is a path"), ("os.path", "names a Python module"),
                           (f"../{evil.name}", "is a path")):
        _refused(requests.post(api, json={"camera_name": CAMERA, "function": function}, timeout=30), what)
        _refused(requests.post(f"{api}/evil_pipeline/config", json={"camera_name": CAMERA, "function": function},
                               timeout=30), what)
    assert "evil_pipeline" not in pipelines.get_pipelines()

    instance_id, stream = pipelines.create_instance_from_config({"camera_name": CAMERA, "function": "transparent"})
    receive(stream, 1)
    _refused(requests.post(f"{api}/instance/{instance_id}/config", json={"function": str(evil)}, timeout=30),
             "is a path")
    assert pipelines.get_instance_config(instance_id)["function"] == "transparent"

    # A plain name is a script name: a module of that name is not imported (the instance says the script is missing).
    instance_id, _ = pipelines.create_instance_from_config({"camera_name": CAMERA, "function": "os"})
    code = wait_until(lambda: pipelines.get_instance_exit_code(instance_id), 30, "the instance to fail")
    assert code == 1
    error = pipelines.get_server_info()["finished_instances"][instance_id]["last_error"]
    assert "script 'os' not found in the scripts folder" in error
    assert not marker.exists()


def test_allow_external_functions_option(open_pipeline: RunningServer, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(EVIL.format(marker=str(marker)))
    pipelines = PipelineClient(open_pipeline.url)
    try:
        _, stream = pipelines.create_instance_from_config({"camera_name": CAMERA, "function": str(evil)})
        assert values(receive(stream, 1)[0])["evil"] == 1
        assert marker.read_text() == "ran"
    finally:
        pipelines.stop_all_instances()


@pytest.mark.unit
@pytest.mark.parametrize(("argv", "interface", "host"), [
    (["-i", "127.0.0.1"], "127.0.0.1", "127.0.0.1"),  # the stream addresses name where the streams listen
    (["-i", "lo"], "127.0.0.1", "127.0.0.1"),  # a network interface by name: its address
    (["-i", "127.0.0.1", "-n", "cams.example"], "127.0.0.1", "cams.example"),
    (["-i", "127.0.0.1", "--stream_interface", "0.0.0.0"], "0.0.0.0", socket.gethostname()),
    ([], "0.0.0.0", socket.gethostname()),
])
def test_stream_interface_and_host_from_the_options(argv: list[str], interface: str, host: str) -> None:
    args = build_parser().parse_args(argv)
    assert (serve.stream_interface(args), serve.stream_hostname(args)) == (interface, host)
