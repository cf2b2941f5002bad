"""A cluster of several hosts for the multi-host tests and ``benchmarks/bench_cluster.py`` (issue 14).

:class:`HostsCluster` builds a :class:`tests.helpers.netns.Network` with an ``infra`` host (Redis, the camera and
pipeline managers; optionally a second pair of managers on other ports) and worker hosts (by default ``a``, ``b``,
``c``), each running a camera worker on port 8888 and a pipeline worker on 8889 that register with Redis. Every
process is started inside its host with ``ip netns exec`` and stopped by PID when the cluster closes (the network's
teardown); fresh namespaces have every port free, so the ports are fixed.

The managers get small simulated cameras (:func:`small_camera`) and the pipeline configs given to the cluster in
their config folders; the workers have none of their own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from tests.helpers.cluster import REDIS_SERVER, require_redis_server
from tests.helpers.netns import Host, Network, alive
from tests.helpers.procs import wait_until

REDIS_PORT = 6379
CAMERA_PORT = 8888
PIPELINE_PORT = 8889
SECOND_MANAGER_OFFSET = 10  # the second pair of managers: 8898 and 8899
READY_TIMEOUT = 60.0


def small_camera(name: str, size: tuple[int, int] = (64, 48), frame_rate: float = 10) -> dict[str, Any]:
    """A simulated camera that costs next to nothing to run (64 x 48 at 10 Hz, the same frame every time)."""
    return {"name": name, "source": "simulation", "source_type": "simulation", "size_x": size[0],
            "size_y": size[1], "frame_rate": frame_rate, "image_type": "static_beam", "mirror_x": False,
            "mirror_y": False, "rotate": 0, "camera_calibration": None}


@dataclass
class Server:
    """One server process of the cluster (Redis, a manager or a worker) on ``host``: restartable with the same
    arguments, killable by PID."""

    name: str
    host: Host
    port: int
    argv: list[str]
    log: Path
    ready_path: str | None  # GET it for 200 to know it serves; None: a TCP connect is enough
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return self.host.url(self.port)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Server:
        self.proc = self.host.popen(self.argv, env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
                                    log_path=self.log)
        return self

    def ready(self) -> bool:
        """Serving now (raises when the process has ended, with the end of its log)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
        if self.ready_path is None:
            with socket.create_connection((self.host.address, self.port), timeout=1):
                return True
        return requests.get(self.url + self.ready_path, timeout=2).status_code == 200

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        try:
            wait_until(self.ready, timeout, f"{self.name} at {self.url}", interval=0.1)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None

    def kill(self) -> None:
        """kill -9 by PID (the server process alone: what it started must notice by itself)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)

    def restart(self) -> None:
        """Start it again with the same arguments (after :meth:`kill`) and wait until it serves."""
        self.start().wait_ready()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"


@dataclass
class HostsCluster:
    """Redis and the managers on host ``infra``, a camera and a pipeline worker on each of ``workers`` hosts.

    ``cameras``: camera configs (name → config) of the camera managers; ``pipelines``: saved pipeline configs of the
    pipeline managers; ``second_managers``: also run a second camera + pipeline manager pair on the same Redis.
    """

    tmp: Path
    workers: Sequence[str] = ("a", "b", "c")
    cameras: dict[str, dict[str, Any]] = field(default_factory=dict)
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    heartbeat: float = 0.5
    dead_after: float = 2.0
    second_managers: bool = False
    grace: float = 3.0  # SIGTERM → SIGKILL at teardown (a worker stops its instances first)

    def __post_init__(self) -> None:
        self.network = Network(["infra", *self.workers], grace=self.grace)
        self.camera_managers: list[Server] = []
        self.pipeline_managers: list[Server] = []
        self.camera_workers: dict[str, Server] = {}
        self.pipeline_workers: dict[str, Server] = {}
        self.redis: Server | None = None

    # --- addresses ---------------------------------------------------------------------------------------------
    @property
    def infra(self) -> Host:
        return self.network["infra"]

    @property
    def redis_url(self) -> str:
        return f"redis://{self.infra.address}:{REDIS_PORT}/0"

    @property
    def camera_manager(self) -> Server:
        return self.camera_managers[0]

    @property
    def pipeline_manager(self) -> Server:
        return self.pipeline_managers[0]

    def worker_hosts(self) -> list[Host]:
        return [self.network[role] for role in self.workers]

    def role_of(self, url: str) -> str:
        """The worker host (``a``, ``b``, ...) of a worker URL or stream address."""
        for role in self.workers:
            if f"//{self.network[role].address}:" in url:
                return role
        raise KeyError(f"{url} is no worker host's address")

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def __enter__(self) -> HostsCluster:
        self.network.__enter__()
        try:
            self._start()
        except BaseException:
            self.network.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:  # workers and managers first, so that their logs end without Redis errors
            self.network.stop([s.proc for s in self.servers() if s is not self.redis and s.proc is not None])
        finally:
            self.network.close()

    def _python(self, name: str, host: Host, port: int, module: str, args: Iterable[str], ready: str) -> Server:
        log = self.tmp / f"{name}.log"
        return Server(name, host, port, [sys.executable, "-m", module, "-p", str(port), "--log_level", "INFO", *args],
                      log, ready)

    def _folders(self) -> dict[str, Path]:
        folders = {name: self.tmp / name for name in ("camera_config", "pipeline_config", "background_config",
                                                     "user_scripts")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        for name, config in self.cameras.items():
            (folders["camera_config"] / f"{name}.json").write_text(json.dumps(config, indent=2))
        for name, config in self.pipelines.items():
            (folders["pipeline_config"] / f"{name}.json").write_text(json.dumps(config, indent=2))
        return folders

    def _start(self) -> None:
        folders = self._folders()
        infra = self.infra
        require_redis_server()
        self.redis = Server("redis", infra, REDIS_PORT,
                            [REDIS_SERVER, "--port", str(REDIS_PORT), "--bind", infra.address, "--save", "",
                             "--appendonly", "no", "--protected-mode", "no"], self.tmp / "redis.log", None).start()
        self.redis.wait_ready(15)
        common = ["--redis", self.redis_url, "--dead_after", str(self.dead_after)]
        pairs = 2 if self.second_managers else 1
        for n in range(pairs):
            cam_port = CAMERA_PORT + n * SECOND_MANAGER_OFFSET
            self.camera_managers.append(self._python(
                f"camera_manager{n + 1}", infra, cam_port, "cam_server.start_camera_manager",
                ["-i", infra.address, *common, "-b", str(folders["camera_config"])], "/api/v1/cam"))
        for n in range(pairs):
            pipe_port = PIPELINE_PORT + n * SECOND_MANAGER_OFFSET
            self.pipeline_managers.append(self._python(
                f"pipeline_manager{n + 1}", infra, pipe_port, "cam_server.start_pipeline_manager",
                ["-i", infra.address, *common, "-b", str(folders["pipeline_config"]), "-g",
                 str(folders["background_config"]), "-u", str(folders["user_scripts"]), "-c",
                 self.camera_managers[n].url], "/api/v1/pipeline"))
        worker = ["--redis", self.redis_url, "--heartbeat", str(self.heartbeat)]
        for host in self.worker_hosts():
            own = ["-i", "0.0.0.0", "-n", host.address]
            self.camera_workers[host.role] = self._python(
                f"camera_worker_{host.role}", host, CAMERA_PORT, "cam_server.start_camera_worker",
                [*own, *worker, "--advertise", host.url(CAMERA_PORT)], "/api/v1/cam")
            self.pipeline_workers[host.role] = self._python(
                f"pipeline_worker_{host.role}", host, PIPELINE_PORT, "cam_server.start_pipeline_worker",
                [*own, *worker, "--advertise", host.url(PIPELINE_PORT), "-c", self.camera_manager.url,
                 "--file_folder", str(self.tmp / f"data_{host.role}")],
                "/api/v1/pipeline")
        servers = self.servers()
        for server in servers:
            if server.proc is None:
                server.start()
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(Server.wait_ready, servers))
        self.wait_workers_alive()

    def servers(self) -> list[Server]:
        """Every server process of the cluster (Redis first)."""
        assert self.redis is not None
        return [self.redis, *self.camera_managers, *self.pipeline_managers, *self.camera_workers.values(),
                *self.pipeline_workers.values()]

    # --- state ----------------------------------------------------------------------------------------------------
    def proxy_info(self, manager: Server) -> dict[str, Any]:
        """``GET /api/v1/proxy/info`` of a manager: ``{"active_instances": ..., "servers": ...}``."""
        return _ok(requests.get(f"{manager.url}/api/v1/proxy/info", timeout=10))["info"]

    def alive_workers(self, manager: Server) -> set[str]:
        return {url for url, server in self.proxy_info(manager)["servers"].items() if server.get("alive")}

    def wait_workers_alive(self, timeout: float = 30.0) -> None:
        """Until each manager sees every running worker of its kind alive."""
        for managers, workers in ((self.camera_managers, self.camera_workers),
                                  (self.pipeline_managers, self.pipeline_workers)):
            urls = {w.url for w in workers.values() if w.proc is not None and w.proc.poll() is None}
            for manager in managers:
                wait_until(lambda m=manager, u=urls: u <= self.alive_workers(m), timeout,
                           f"{manager.name} seeing the workers {sorted(urls)} alive")

    def host_of(self, manager: Server, instance_id: str) -> str | None:
        """The worker URL that ``manager`` says runs ``instance_id`` (None: it runs nowhere)."""
        found = self.proxy_info(manager)["active_instances"].get(instance_id)
        return found["host"] if found else None

    def worker_pids(self) -> dict[int, str]:
        """Every process living on the worker hosts now (workers, fork servers, instances): pid → command line."""
        return {pid: _cmdline(pid) for host in self.worker_hosts() for pid in host.pids() if alive(pid)}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "(ended)"


def _ok(response: requests.Response) -> dict[str, Any]:
    body = response.json()
    if response.status_code != 200 or body.get("state") != "ok":
        raise RuntimeError(f"{response.request.method} {response.url}: {response.status_code} {body}")
    return body


def set_workers_file(manager: Server, servers: dict[str, dict[str, Any]]) -> None:
    """``POST /api/v1/proxy/config``: the workers file of psi-interface.md §4."""
    _ok(requests.post(f"{manager.url}/api/v1/proxy/config", json=servers, timeout=10))


def workers_file(urls: Iterable[str], **overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every worker ``enabled`` and ``expanding`` with no pins, changed per URL by ``overrides``
    (``{url: {"instances": [...]}}``, passed as ``**{url: ...}``)."""
    return {url: {"enabled": True, "expanding": True, "instances": [], "cameras": [], **overrides.get(url, {})}
            for url in urls}


def wait_moved(cluster: HostsCluster, manager: Server, instance_id: str, away_from: str, timeout: float) -> str:
    """Until ``manager`` places ``instance_id`` on a worker other than ``away_from``; that worker's URL."""
    def moved() -> str | None:
        host = cluster.host_of(manager, instance_id)
        return host if host and host != away_from else None

    return wait_until(moved, timeout, f"{instance_id} moved away from {away_from}", interval=0.05)


def elapsed_since(start: float) -> float:
    return round(time.monotonic() - start, 3)
