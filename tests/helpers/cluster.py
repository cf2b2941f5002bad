"""Run a cluster's processes for tests: a real redis-server, managers and workers, each stopped by PID.

Each function is a context manager yielding a :class:`Proc` (its URL and PID); ``host`` is the address it binds
(loopback tests: 127.0.0.1; the multi-host tests run the same commands inside network namespaces).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests

from tests.helpers.net import free_port
from tests.helpers.procs import start_python, stop_pid, wait_until
from tests.helpers.servers import copy_config, write_config_dir

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass
class Proc:
    url: str
    proc: subprocess.Popen
    log: Path
    args: list[str]
    ready: str = "/"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def require_redis_server() -> None:
    """Skip without Debian's redis-server (``python3 dev.py test`` installs it as root); ``CAM_SERVER_REQUIRE_REDIS=1``
    (CI) makes that a failure."""
    if os.path.exists(REDIS_SERVER):
        return
    reason = f"{REDIS_SERVER} is not installed (Debian package redis-server)"
    if os.environ.get("CAM_SERVER_REQUIRE_REDIS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def redis_server(tmp_path: Path, host: str = "127.0.0.1") -> Iterator[Proc]:
    """Debian's redis-server on a free port, no persistence."""
    require_redis_server()
    port = free_port()
    log = tmp_path / f"redis_{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", host, "--save", "", "--appendonly",
                                 "no", "--dir", str(tmp_path)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"redis://{host}:{port}/0"
    try:
        wait_until(lambda: redis.Redis.from_url(url).ping(), 10, f"redis at {url}")
        yield Proc(url, proc, log, [], "")
    finally:
        stop_pid(proc)


def _start(tmp_path: Path, name: str, module: str, args: Sequence[str], host: str, port: int | None,
           ready: str, wait: bool = True) -> Proc:
    port = port or free_port()
    log = tmp_path / f"{name}.log"
    full = ["-m", module, "-p", str(port), "-i", host, "--log_level", "INFO", *args]
    started = Proc(f"http://{host}:{port}", start_python(full, log_path=log), log, full, ready)
    if wait:
        wait_ready(started)
    return started


def wait_ready(*procs: Proc, timeout: float = 60) -> None:
    """Wait until each process answers its REST root (stopping them all if one does not)."""
    def up(p: Proc) -> bool:
        if p.proc.poll() is not None:
            raise RuntimeError(f"{p.log.name} exited with {p.proc.returncode}:\n{p.log_text()[-3000:]}")
        return requests.get(p.url + p.ready, timeout=1).status_code == 200

    try:
        for p in procs:
            wait_until(lambda p=p: up(p), timeout, f"{p.log.name} at {p.url}")
    except Exception:
        for p in procs:
            stop_pid(p.proc)
        raise


def restart(p: Proc, wait: bool = True) -> Proc:
    """The same command again (same port), e.g. after a kill -9."""
    again = Proc(p.url, start_python(p.args, log_path=p.log.with_suffix(".again.log")), p.log.with_suffix(
        ".again.log"), p.args, p.ready)
    if wait:
        wait_ready(again)
    return again


@contextmanager
def running(proc: Proc) -> Iterator[Proc]:
    try:
        yield proc
    finally:
        stop_pid(proc.proc)


def start_camera_manager(tmp_path: Path, redis_url: str, name: str = "camera_manager", host: str = "127.0.0.1",
                         port: int | None = None, extra: Sequence[str] = (), wait: bool = True) -> Proc:
    """A camera manager on the bundled cameras plus ``test_camera`` (its folder: ``tmp_path/camera_configs``)."""
    configs = tmp_path / "camera_configs"
    if not configs.exists():
        write_config_dir(configs)
    return _start(tmp_path, name, "cam_server.start_camera_manager",
                  ["--redis", redis_url, "-b", str(configs), "-u", str(tmp_path / "camera_scripts"), *extra],
                  host, port, "/api/v1/cam", wait)


def start_pipeline_manager(tmp_path: Path, redis_url: str, cam_url: str, name: str = "pipeline_manager",
                           host: str = "127.0.0.1", port: int | None = None, extra: Sequence[str] = (),
                           wait: bool = True) -> Proc:
    """A pipeline manager on a copy of the bundled pipelines (``tmp_path/pipeline_config``)."""
    configs = tmp_path / "pipeline_config"
    if not configs.exists():
        copy_config(tmp_path, "pipeline_config")
    (tmp_path / "background_config").mkdir(exist_ok=True)
    (tmp_path / "user_scripts").mkdir(exist_ok=True)
    return _start(tmp_path, name, "cam_server.start_pipeline_manager",
                  ["--redis", redis_url, "-c", cam_url, "-b", str(configs), "-g", str(tmp_path / "background_config"),
                   "-u", str(tmp_path / "user_scripts"), *extra], host, port, "/api/v1/pipeline", wait)


def start_worker(tmp_path: Path, kind: str, redis_url: str, name: str, host: str = "127.0.0.1",
                 port: int | None = None, cam_url: str | None = None, extra: Sequence[str] = (), wait: bool = True,
                 ) -> Proc:
    """A camera or pipeline worker (``cam_url``: the camera manager, for pipeline workers)."""
    args = ["--redis", redis_url, "-n", host, *extra]
    if kind == "pipeline":
        args += ["-c", cam_url or "", "--file_folder", str(tmp_path / "data")]
    root = "/api/v1/cam" if kind == "camera" else "/api/v1/pipeline"
    return _start(tmp_path, name, f"cam_server.start_{kind}_worker", args, host, port, root, wait)


def registered(redis_url: str, kind: str, url: str) -> bool:
    """Whether worker ``url`` heartbeats in Redis."""
    return bool(redis.Redis.from_url(redis_url).exists(f"cam_server:{kind}:hb:{url}"))
