"""Servers that fault tests kill with SIGKILL and start again on the same port, with the same folders.

:class:`RestartableServer` runs ``python -m <server module>`` in its own process group (as every test server),
:meth:`~RestartableServer.kill9` kills the server process alone (never its group: what it started must notice by
itself), :meth:`~RestartableServer.leftovers` lists the processes still in the group of a killed run (its fork
server, instances), and :meth:`~RestartableServer.close` stops the current run and, by PID, whatever of the killed
runs is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
import requests

from tests.helpers.net import free_port
from tests.helpers.procs import start_python, stop_pid

CAMERA_MODULE = "cam_server.start_camera_server"
PIPELINE_MODULE = "cam_server.start_pipeline_server"
READY_PATHS = {CAMERA_MODULE: "/api/v1/cam", PIPELINE_MODULE: "/api/v1/pipeline"}
START_TIMEOUT_S = 60.0


class RestartableServer:
    """One server (camera or pipeline) on a fixed port that can be SIGKILLed and started again."""

    def __init__(self, name: str, module: str, folder: Path, args: Sequence[str], port: int | None = None) -> None:
        self.name = name
        self.module = module
        self.folder = folder
        self.args = list(args)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.runs = 0
        self.killed_groups: list[int] = []  # process groups of killed runs (a group's id is its leader's PID)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self, run: int | None = None) -> Path:
        return self.folder / f"{self.name}-{self.runs if run is None else run}.log"

    def log_text(self) -> str:
        return "".join(self.log(run).read_text(errors="replace") for run in range(1, self.runs + 1)
                       if self.log(run).exists())

    def start(self) -> float:
        """Start a run on the port and wait until it answers; returns the seconds that took."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        self.runs += 1
        start = time.monotonic()
        self.proc = start_python(["-m", self.module, "-p", str(self.port), "-i", "127.0.0.1", "-n", "127.0.0.1",
                                  *self.args], log_path=self.log())
        ready = f"{self.url}{READY_PATHS[self.module]}"
        while time.monotonic() - start < START_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if requests.get(ready, timeout=1).status_code == 200:
                    return time.monotonic() - start
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not answer at {ready} in {START_TIMEOUT_S} s:\n{self.log_text()[-3000:]}")

    def kill9(self) -> None:
        """SIGKILL the server process (only it) and reap it."""
        assert self.proc is not None and self.proc.poll() is None, f"{self.name} is not running"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.killed_groups.append(self.proc.pid)

    def leftovers(self) -> list[psutil.Process]:
        """Live processes (not zombies) still in the process group of a killed run."""
        found = []
        for process in psutil.process_iter():
            try:
                if os.getpgid(process.pid) in self.killed_groups and process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
            except (ProcessLookupError, psutil.Error):
                continue
        return found

    def close(self) -> None:
        """Stop the current run (its group) and kill, by PID, what killed runs left."""
        if self.proc is not None:
            stop_pid(self.proc)
        for process in self.leftovers():
            try:
                process.kill()
            except psutil.Error:
                pass
