"""The pipeline_server command line: README options, and SIGTERM stops every instance."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil

from cam_server.client.pipeline_client import PipelineClient
from tests.helpers.procs import ROOT, wait_until
from tests.helpers.servers import pipeline_server


def test_help_lists_the_readme_options():
    out = subprocess.run([sys.executable, "-m", "cam_server.start_pipeline_server", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60).stdout
    for option in ("-c CAM_SERVER, --cam_server", "-p PORT, --port", "-i INTERFACE, --interface", "-b BASE, --base",
                   "-g BACKGROUND_BASE, --background_base", "-u USER_SCRIPTS_BASE, --user_scripts_base",
                   "-n HOSTNAME, --hostname", "--log_level {CRITICAL,ERROR,WARNING,INFO,DEBUG}"):
        assert option in out


def test_empty_file_folder_is_refused():
    done = subprocess.run([sys.executable, "-m", "cam_server.start_pipeline_server", "--file_folder", " "], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--file_folder must name a directory" in done.stderr


def test_sigterm_stops_all_instances(servers, tmp_path):
    with pipeline_server(tmp_path, servers.camera.url) as server:
        client = PipelineClient(server.url)
        client.create_instance_from_config({"camera_name": "simulation"}, "a")
        client.get_instance_stream("simulation_sp")
        pids = [client.get_instance_info(i)["pid"] for i in ("a", "simulation_sp")]
        assert all(psutil.pid_exists(pid) for pid in pids)
        os.kill(server.pid, signal.SIGTERM)  # the server only, not its process group
        wait_until(lambda: not psutil.pid_exists(server.pid) or psutil.Process(server.pid).status() == "zombie",
                   30, "server exit")

        def gone(pid: int) -> bool:
            try:
                return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        wait_until(lambda: all(gone(pid) for pid in pids), 15, "instances stopped")
        log = server.log_text()
        assert "stopped instance a" in log and "stopped instance simulation_sp" in log
        assert "pipeline manager closed" in log
