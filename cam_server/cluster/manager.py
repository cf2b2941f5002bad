"""What both managers share: calls to workers, claimed placement, the proxy views, and the monitor that fails over
dead workers and restarts permanent instances.

A manager keeps nothing of its own: every decision reads Redis (:mod:`cam_server.cluster.state`) and writes its
outcome there, claims (``SET NX``) making sure one manager acts where two could (placing one instance id, failing
over one dead worker).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from cam_server.cluster import placement
from cam_server.cluster.state import CLAIM_TTL_S, ClusterState, InstanceRecord
from cam_server.common.errors import CamServerError, NotFound, SourceUnavailable
from cam_server.rest.auth import api_token
from cam_server.rest.camera_app import API as CAMERA_API
from cam_server.rest.pipeline_app import API as PIPELINE_API

log = logging.getLogger(__name__)

ROOTS = {"camera": CAMERA_API, "pipeline": PIPELINE_API}
CHECK_INTERVAL_S = 0.25  # how often the monitor looks for dead workers and missing permanent instances
WORKER_TIMEOUT_S = 30.0  # a start on a worker (a camera's first frame, a pipeline's process)
INFO_TIMEOUT_S = 2.0
# Connecting to a worker takes milliseconds; one whose host's link is cut never answers the SYN. And a request on a
# kept-alive connection to a worker whose link was just cut waits for its answer as long as the call allows. Either
# would hold up the failover the request is part of (a pipeline's camera on the cut host) by WORKER_TIMEOUT_S: so
# connects time out quickly, and a call still waiting is given up as soon as its worker is declared dead (checked
# every WATCH_S while it waits).
CONNECT_TIMEOUT_S = 2.0
WATCH_S = 0.25
CALL_THREADS = 64  # calls to workers in flight at once (each waits on its own thread; a given-up one ends later)
PERMANENT_RETRY_S = 2.0  # a permanent instance that failed to start is tried again after this
# A permanent instance that ended less than PERMANENT_STABLE_S after its start (a crash loop: a bad config, a failing
# function) is started again after PERMANENT_RETRY_S, doubled with each early end in a row up to PERMANENT_RETRY_MAX_S,
# not at every monitor round; one that ran longer is started again at once.
PERMANENT_STABLE_S = 30.0
PERMANENT_RETRY_MAX_S = 60.0
RESTART_THREADS = 8  # permanent instances started at once after a failover


class WorkerError(CamServerError):
    """A worker's own error answer, passed on with its HTTP status and message."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


def crash_loop_delay(last: dict[str, Any] | None, started_at: float, ran: float) -> float | None:
    """How long a permanent instance whose run started at ``started_at`` and is found ended ``ran`` seconds after it
    waits before its next start: 0.0 after a run of :data:`PERMANENT_STABLE_S` or more (at once, the back-off starts
    afresh); after an early end :data:`PERMANENT_RETRY_S`, doubled for each early end in a row (``last``: the judgement
    of the previous one, ``{"delay", "run"}``) up to :data:`PERMANENT_RETRY_MAX_S`; None when this run was judged
    already (``last`` is about it) — its back-off is running or has passed, whatever time goes by meanwhile."""
    if last is not None and last.get("run") == started_at:
        return None
    if ran >= PERMANENT_STABLE_S:
        return 0.0
    if last is None:
        return PERMANENT_RETRY_S
    return min(PERMANENT_RETRY_MAX_S, 2 * float(last.get("delay") or PERMANENT_RETRY_S))


class ClusterManager:
    """The cluster side of one manager (``state.kind``: camera or pipeline)."""

    def __init__(self, state: ClusterState, dead_after: float = 3.0, servers_path: Path | None = None,
                 worker_token: str | None = None) -> None:
        self.state = state
        self.kind = state.kind
        self.root = ROOTS[state.kind]
        self.dead_after = dead_after
        self.servers_path = servers_path
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=32, pool_maxsize=64)
        self.session.mount("http://", adapter)
        worker_token = api_token(worker_token)
        if worker_token:
            self.session.headers["Authorization"] = f"Bearer {worker_token}"
        self.pool = ThreadPoolExecutor(16, thread_name_prefix="cluster-fanout")
        self.calls = ThreadPoolExecutor(CALL_THREADS, thread_name_prefix="cluster-call")
        self.restarts = ThreadPoolExecutor(RESTART_THREADS, thread_name_prefix="cluster-restart")
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self.restart_permanent: Callable[[str, str], None] | None = None  # (instance id, name): set by the app
        state.set_dead_after(dead_after)
        if servers_path is not None and servers_path.exists():
            state.set_servers_file(json.loads(servers_path.read_text()))

    # --- workers --------------------------------------------------------------------------------------------
    def workers(self) -> dict[str, dict[str, Any]]:
        return self.state.workers()

    def server_list(self) -> list[str]:
        """Worker URLs in a stable order: the workers file's first, then other registered ones (sorted)."""
        listed = list(self.state.servers_file() or {})
        return listed + sorted(u for u in self.workers() if u not in listed)

    def worker_url(self, index_or_url: str) -> str:
        servers = self.server_list()
        if index_or_url.isdigit():
            index = int(index_or_url)
            if index >= len(servers):
                raise NotFound(f"No worker with index {index} ({len(servers)} known).")
            return servers[index]
        url = index_or_url.rstrip("/")
        if url not in servers:
            raise NotFound(f"Unknown worker '{url}'.")
        return url

    def alive(self, url: str, workers: dict[str, dict[str, Any]] | None = None) -> bool:
        if workers is None:
            return self.state.is_alive(url)
        return bool(workers.get(url, {}).get("alive"))

    # --- calls to workers -----------------------------------------------------------------------------------
    def call(self, method: str, worker: str, path: str, timeout: float = WORKER_TIMEOUT_S, root: str | None = None,
             **kwargs: Any) -> requests.Response:
        """``method`` on ``worker`` + root + ``path``; SourceUnavailable when it cannot be reached."""
        url = f"{worker}{self.root if root is None else root}{path}"
        future = self.calls.submit(self.session.request, method, url,
                                   timeout=(min(CONNECT_TIMEOUT_S, timeout), timeout), **kwargs)
        try:
            while True:
                try:
                    return future.result(WATCH_S)
                except FutureTimeout:
                    if not self.state.is_alive(worker):
                        raise SourceUnavailable(f"Worker {worker} stopped heartbeating during the request "
                                                f"({method} {path or '/'})") from None
        except requests.RequestException as exc:
            raise SourceUnavailable(f"Worker {worker} is not reachable: {exc}") from None

    def call_ok(self, method: str, worker: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """:meth:`call`, unwrapped: the answer's envelope, or the worker's error raised as :class:`WorkerError`."""
        response = self.call(method, worker, path, **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise SourceUnavailable(f"Worker {worker}: HTTP {response.status_code}, not JSON.") from None
        if response.status_code >= 400 or not isinstance(body, dict) or body.get("state") != "ok":
            status = body.get("status") if isinstance(body, dict) else str(body)
            raise WorkerError(str(status), response.status_code if response.status_code >= 400 else 502)
        return body

    def fan_out(self, method: str, path: str, workers: list[str], timeout: float = INFO_TIMEOUT_S,
                root: str | None = None) -> dict[str, dict[str, Any] | None]:
        """The same call on every worker in parallel: answer envelopes, None for those that failed."""
        def one(url: str) -> dict[str, Any] | None:
            try:
                return self.call_ok(method, url, path, timeout=timeout, root=root)
            except CamServerError:
                return None

        return dict(zip(workers, self.pool.map(one, workers), strict=True))

    # --- placement ------------------------------------------------------------------------------------------
    def place(self, request: placement.Request, start: Callable[[str], InstanceRecord],
              camera_host: str | None = None, existing: Callable[[InstanceRecord], bool] | None = None,
              find: Callable[[], InstanceRecord | None] | None = None, claim: str | None = None,
              ) -> InstanceRecord:
        """Place ``request`` once across managers: the claim holder picks a worker and calls ``start(worker)``;
        a manager that finds it claimed waits for that record. ``existing(record)``: whether a record found
        (alive worker) is good to use as it is (default: yes); ``find``: how to look for it (default: by instance
        id); ``claim``: the claim's key (default: the instance id)."""
        iid = request.instance_id
        key = claim or iid
        look = find or (lambda: self.state.instance(iid))
        deadline = time.monotonic() + CLAIM_TTL_S
        while True:
            record = look()
            if record is not None and self.alive(record.host) and (existing is None or existing(record)):
                return record
            if self.state.claim(key):
                try:
                    record = look()  # placed between our read and our claim
                    workers = self.workers()
                    if record is not None and self.alive(record.host, workers) and (
                            existing is None or existing(record)):
                        return record
                    self.state.unlose(iid)
                    try:
                        worker, rule = placement.place(request, workers, self.state.servers_file(),
                                                       self.state.placed(), camera_host)
                    except placement.NoWorker as exc:
                        raise SourceUnavailable(str(exc)) from None
                    log.info("placing %s %s on %s (%s)", self.kind, iid, worker, rule)
                    self.state.add_pending(InstanceRecord(iid, worker, "", {"camera_name": request.camera},
                                                          "pending", name=request.name))
                    record = start(worker)
                    self.state.put_instance(record)
                    return record
                finally:
                    self.state.remove_pending(iid)
                    self.state.release(key)
            while self.state.claimed(key) and time.monotonic() < deadline:
                time.sleep(0.02)
            if time.monotonic() > deadline:
                raise SourceUnavailable(f"Placement of '{iid}' by another manager did not finish in time.")

    def pinned_port(self, request: placement.Request, worker: str) -> int | None:
        return placement.pinned_port_of(request, self.state.servers_file(), worker)

    # --- stopping -------------------------------------------------------------------------------------------
    def stop(self, instance_id: str, path: str | None = None) -> InstanceRecord:
        """Stop an instance on its worker and forget it; NotFound when no worker runs it."""
        record = self.state.instance(instance_id)
        if record is None:
            raise NotFound(f"Instance '{instance_id}' is not running on any worker.")
        try:
            self.call("DELETE", record.host, path or f"/{instance_id}", timeout=10)
        except SourceUnavailable as exc:
            log.warning("stopping %s: %s (forgotten anyway)", instance_id, exc)
        self.state.remove_instance(instance_id)
        self.state.remember_ended(record)
        return record

    def stop_worker(self, url: str) -> list[str]:
        """Stop every instance of one worker (``DELETE <root>`` there) and forget them."""
        self.call("DELETE", url, "", timeout=30)
        return [r.instance_id for r in self.state.clear_instances(url)]

    def stop_all(self) -> None:
        workers = [u for u, w in self.workers().items() if w.get("alive")]
        self.fan_out("DELETE", "", workers, timeout=30)
        self.state.clear_instances()

    # --- proxy views ----------------------------------------------------------------------------------------
    def servers_info(self) -> dict[str, list[Any]]:
        """``GET /proxy/servers``: parallel lists, one entry per worker."""
        workers = self.workers()
        counts: dict[str, int] = {}
        for record in self.state.instances().values():
            counts[record.host] = counts.get(record.host, 0) + 1
        result: dict[str, list[Any]] = {k: [] for k in ("servers", "load", "instances", "version", "cpu", "memory",
                                                        "tx", "rx", "alive")}
        for url in self.server_list():
            w = workers.get(url, {})
            result["servers"].append(url)
            result["load"].append(round(placement.load(w, counts.get(url, 0)), 3) if w.get("alive") else None)
            result["instances"].append(w.get("instances") if w.get("alive") else None)
            for key in ("version", "cpu", "memory", "tx", "rx"):
                result[key].append(w.get(key) if w.get("alive") else None)
            result["alive"].append(bool(w.get("alive")))
        return result

    def status_info(self) -> dict[str, list[str] | None]:
        """``GET /proxy/status``: each worker's instance ids, None when it is dead."""
        workers = self.workers()
        return {url: (workers[url].get("instances") or []) if self.alive(url, workers) else None
                for url in self.server_list()}

    def merged_info(self, keys: tuple[str, ...] = ("active_instances",)
                    ) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, dict[str, Any]]]:
        """Every alive worker's ``GET <root>/info``: per key of ``keys`` the instances of all of them (each with its
        worker as ``host``), the answers by worker (None: no answer) and the workers' records."""
        workers = self.workers()
        answers = self.fan_out("GET", "/info", [u for u, w in workers.items() if w.get("alive")])
        merged: dict[str, dict[str, Any]] = {key: {} for key in keys}
        for url, answer in answers.items():
            for key, instances in merged.items():
                for iid, info in ((answer or {}).get("info", {}).get(key) or {}).items():
                    instances[iid] = {**info, "host": url}
        return merged, answers, workers

    def info(self) -> dict[str, Any]:
        """``GET /proxy/info``: running instances with their worker (``host``), and the workers."""
        merged, answers, workers = self.merged_info()
        active = merged["active_instances"]
        for iid, record in self.state.instances().items():  # a worker that did not answer: what Redis says
            if iid not in active and record.host in answers and answers[record.host] is None:
                active[iid] = {"stream_address": record.stream, "config": record.config, "host": record.host,
                               "kind": record.kind}
        servers = {url: {**{k: v for k, v in workers.get(url, {}).items() if k != "url"},
                         "alive": bool(workers.get(url, {}).get("alive")),
                         "last_heartbeat": workers.get(url, {}).get("last_heartbeat")}
                   for url in self.server_list()}
        return {"active_instances": active, "servers": servers}

    def set_servers_file(self, servers: dict[str, Any]) -> None:
        """Store the workers file in Redis and (atomically) in ``--servers``."""
        if not isinstance(servers, dict) or not all(isinstance(v, dict) for v in servers.values()):
            raise CamServerError('The workers file must be {"<worker url>": {"enabled": bool, "expanding": bool, '
                                 '"instances": [...], "cameras": [...]}}.')
        servers = {url.rstrip("/"): entry for url, entry in servers.items()}
        self.state.set_servers_file(servers)
        if self.servers_path is not None:
            tmp = self.servers_path.with_name(f".{self.servers_path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(servers, indent=2))
            os.replace(tmp, self.servers_path)

    def set_permanent(self, instances: dict[str, Any]) -> None:
        if not isinstance(instances, dict) or not all(isinstance(v, str) for v in instances.values()):
            raise CamServerError("Permanent instances must be {instance_id: name}.")
        self.state.set_permanent(instances)

    # --- monitor: failover and permanent instances ------------------------------------------------------------
    def start_monitor(self) -> None:
        self._monitor = threading.Thread(target=self._run_monitor, name="cluster-monitor", daemon=True)
        self._monitor.start()

    def close(self) -> None:
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.calls.shutdown(wait=False, cancel_futures=True)
        self.restarts.shutdown(wait=False, cancel_futures=True)

    def _run_monitor(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # noqa: BLE001 - Redis or a worker failing: try again next round
                log.exception("cluster check failed")
            self._stop.wait(CHECK_INTERVAL_S)

    def check(self) -> None:
        """One round: fail over workers found dead, then start missing permanent instances."""
        workers = self.workers()
        dead = {url: w for url, w in workers.items()
                if not w.get("alive") and not self.state.failed_over(url, float(w.get("last_heartbeat") or 0.0))}
        for url, worker in dead.items():  # each death once (then failed_over() is true): no scan per round
            self.fail_over(url, worker)
        self.ensure_permanent(workers)

    def fail_over(self, url: str, worker: dict[str, Any]) -> None:
        """Worker ``url`` stopped heartbeating: forget its instances (permanent ones restart elsewhere, from
        :meth:`ensure_permanent`), record the private ones lost with the cause. One manager per death."""
        beat = float(worker.get("last_heartbeat") or 0.0)
        if not self.state.claim_failover(url, beat):
            return
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(beat)) if beat else "an unknown time"
        cause = f"worker {url} stopped heartbeating at {when} (dead after {self.dead_after:g} s)"
        permanent = {self.permanent_key(iid, name) for iid, name in self.state.permanent().items()
                     if not iid.startswith("#")}
        moved, lost = [], []
        for record in self.state.clear_instances(url):
            if record.instance_id in permanent or record.kind in ("permanent", "camera"):
                moved.append(record.instance_id)
            else:
                self.state.add_lost(record, cause)
                lost.append(record.instance_id)
        self.state.failover_done(url, beat)
        log.warning("failover of %s: %s; to restart: %s; lost: %s", self.kind, cause, moved or "none",
                    lost or "none")

    def permanent_key(self, instance_id: str, name: str) -> str:
        """The instance id a permanent entry runs under: a camera's is its name (one instance per camera)."""
        return name if self.kind == "camera" else instance_id

    def ensure_permanent(self, workers: dict[str, dict[str, Any]] | None = None) -> None:
        """Start each enabled permanent instance that runs nowhere (or whose worker no longer reports it)."""
        if self.restart_permanent is None:
            return
        permanent = {iid: name for iid, name in self.state.permanent().items() if not iid.startswith("#")}
        if not permanent:
            return
        workers = self.workers() if workers is None else workers
        records = self.state.instances_of([self.permanent_key(iid, name) for iid, name in permanent.items()])
        missing = []
        for iid, name in permanent.items():
            key = self.permanent_key(iid, name)
            record = records.get(key)
            if record is not None and self.alive(record.host, workers):
                reported = workers[record.host].get("instances") or []
                fresh = record.started_at > float(workers[record.host].get("last_heartbeat") or 0) - 2.0
                if key in reported or fresh:
                    continue
                if self._ended_early(key, record.started_at):  # it ended on its live worker: a crash loop?
                    continue
            if not self.state.claimed(key) and not self.state.backing_off(key):
                missing.append((iid, name))
        # In parallel (a dead worker may leave many): each is placed once (claims), spread by the pending records.
        for (iid, name), error in zip(missing, self.restarts.map(self._restart_one, missing), strict=True):
            if error is not None:
                log.warning("permanent instance %s (%s) not started: %s", iid, name, error)

    def _ended_early(self, key: str, started_at: float) -> bool:
        """A permanent instance ended on a live worker: True while it backs off (see :func:`crash_loop_delay`)."""
        last = self.state.early_end(key)
        delay = crash_loop_delay(last, started_at, time.time() - started_at)
        if delay is None:  # this run was judged already: start it once its back-off has passed
            return self.state.backing_off(key)
        if delay == 0.0:
            self.state.ran_long(key)
            return False
        self.state.crash_back_off(key, started_at, delay)
        log.warning("permanent instance %s ended %.1f s after its start: starting it again in %.0f s", key,
                    time.time() - started_at, delay)
        return True

    def _restart_one(self, entry: tuple[str, str]) -> CamServerError | None:
        assert self.restart_permanent is not None
        try:
            self.restart_permanent(*entry)
        except CamServerError as exc:
            self.state.back_off(self.permanent_key(*entry), PERMANENT_RETRY_S)  # not every round, by any manager
            return exc
        return None
