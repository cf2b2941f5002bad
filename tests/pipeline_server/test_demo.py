"""The README "run" command: ``python -m cam_server.cli.demo`` prints a live stream and cleans up after itself."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import psutil
import requests

from tests.helpers.net import free_port
from tests.helpers.procs import start_python, stop_pid, wait_until


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _command_line(process: psutil.Process) -> str:
    """Its command line; "" for one that ended meanwhile (a zombie not reaped yet has none to read)."""
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return ""


def test_demo_prints_stream_values_and_stops_every_child(tmp_path):
    log = tmp_path / "demo.log"
    cam_port, pipe_port = free_port(), free_port()
    proc = start_python(["-m", "cam_server.cli.demo", "--camera-port", str(cam_port), "--pipeline-port",
                         str(pipe_port)], log_path=log)
    seen: dict[int, psutil.Process] = {}
    try:
        def values_printed() -> bool:
            for child in _descendants(proc.pid):
                seen.setdefault(child.pid, child)
            if proc.poll() is not None:
                raise RuntimeError(f"demo exited early:\n{log.read_text()}")
            return len(re.findall(r"^pulse_id=\d+ ", log.read_text(), flags=re.M)) >= 2

        wait_until(values_printed, 60, "demo to print two stream lines")
        assert len(seen) >= 3  # camera server, pipeline server and at least one instance/forkserver
        view = re.search(r"^live view: +(http://127\.0\.0\.1:\d+/view/\S+) ", log.read_text(), flags=re.M)
        assert view and view.group(1).startswith(f"http://127.0.0.1:{pipe_port}/view/"), log.read_text()
        assert requests.get(view.group(1), timeout=10).status_code == 200
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (subprocess.TimeoutExpired, Exception):
        stop_pid(proc)
        raise
    text = log.read_text()
    assert f"camera server:   http://127.0.0.1:{cam_port}/api/v1/cam" in text
    assert f"pipeline server: http://127.0.0.1:{pipe_port}/api/v1/pipeline" in text
    assert re.search(r"^pipeline stream: tcp://127\.0\.0\.1:\d+$", text, flags=re.M)
    line = re.search(r"^pulse_id=(\d+) x_center_of_mass=([\d.]+) y_center_of_mass=([\d.]+) intensity=([\d.]+)$",
                     text, flags=re.M)
    assert line, text
    assert 600 < float(line.group(2)) < 680 and 440 < float(line.group(3)) < 520 and float(line.group(4)) > 0
    assert "stopped." in text and proc.returncode == 0

    def all_gone() -> bool:
        return not [p for p in seen.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    wait_until(all_gone, 15, "demo children to exit")


def test_servers_die_with_a_killed_demo(tmp_path):
    log = tmp_path / "demo.log"
    proc = start_python(["-m", "cam_server.cli.demo", "--camera-port", str(free_port()), "--pipeline-port",
                         str(free_port())], log_path=log)
    try:
        wait_until(lambda: "pipeline stream:" in log.read_text() or proc.poll() is not None, 60, "demo to start")
        servers = [p for p in _descendants(proc.pid) if "start_" in _command_line(p)]
        assert len(servers) == 2, log.read_text()
        proc.kill()  # no chance to clean up: the servers must still go (parent-death signal)
        proc.wait(10)
        wait_until(lambda: not [p for p in servers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], 15,
                   "the servers of a killed demo to exit")
    finally:
        stop_pid(proc)
