"""The worker side: a camera or pipeline server that registers in Redis and heartbeats from a thread.

Each beat (``--heartbeat`` s) the thread reads its own server's running instances (``GET <root>/info``, answered
from memory), measures its load (cpu of the server and its instances, the host's network tx/rx rates) and writes
both with a heartbeat key whose TTL is the cluster's ``dead_after``. The worker registers only once its REST port
answers, so no manager places on a worker that cannot take requests yet. It also keeps the no-double-run rule: an
instance it runs that Redis assigns to another worker, or records as lost from this one (the worker was declared
dead while it was cut off), is stopped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import psutil
import requests

from cam_server.cluster.manager import ROOTS
from cam_server.cluster.state import ClusterState
from cam_server.version import __version__

log = logging.getLogger(__name__)

SMOOTHING = 0.5  # weight of the newest measurement in the load's exponential average


class LoadMeter:
    """CPU of this process tree (percent of one core) and the host's network rates (bytes/s) since the last call."""

    def __init__(self) -> None:
        self._process = psutil.Process(os.getpid())
        self._last = self._sample()
        self._smooth: tuple[float, ...] | None = None

    def _sample(self) -> tuple[float, float, float, float]:
        cpu = 0.0
        for proc in [self._process, *self._process.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                cpu += times.user + times.system + times.children_user + times.children_system
            except psutil.Error:
                continue
        net = psutil.net_io_counters()
        return time.monotonic(), cpu, float(net.bytes_sent), float(net.bytes_recv)

    def measure(self) -> dict[str, float]:
        now = self._sample()
        elapsed = max(1e-3, now[0] - self._last[0])
        rates = (max(0.0, now[1] - self._last[1]) * 100.0 / elapsed, max(0.0, now[2] - self._last[2]) / elapsed,
                 max(0.0, now[3] - self._last[3]) / elapsed)
        # Smoothed (exponential average): one busy beat must not swing placement.
        self._smooth = rates if self._smooth is None else tuple(
            SMOOTHING * r + (1 - SMOOTHING) * s for r, s in zip(rates, self._smooth, strict=True))
        cpu, tx, rx = self._smooth
        self._last = now
        try:
            memory = self._process.memory_info().rss
        except psutil.Error:
            memory = 0
        return {"cpu": round(cpu, 1), "tx": round(tx), "rx": round(rx), "memory": memory}


WARM_UP_WAIT_S = 60.0


class Heartbeat(threading.Thread):
    """Registers worker ``advertise`` (its server answers at ``local``) and heartbeats every ``interval`` s."""

    def __init__(self, state: ClusterState, advertise: str, local: str, interval: float = 1.0,
                 token: str | None = None, ready: threading.Event | None = None) -> None:
        super().__init__(name="cluster-heartbeat", daemon=True)
        self.ready = ready  # set when the server can start instances quickly (its fork server is warm)
        self.state = state
        self.advertise = advertise.rstrip("/")
        self.root = local.rstrip("/") + ROOTS[state.kind]
        self.interval = interval
        self.stopping = threading.Event()
        self.session = requests.Session()
        if token:  # the server's own token: it stops instances through its REST API
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.meter = LoadMeter()
        self.registered_at: float | None = None

    def running_instances(self) -> list[str] | None:
        """Ids of the instances this worker's server runs (None while it does not answer)."""
        try:
            answer = self.session.get(f"{self.root}/info", timeout=max(1.0, self.interval * 2)).json()
            return sorted(answer["info"]["active_instances"])
        except (requests.RequestException, ValueError, KeyError, TypeError):
            return None

    def beat(self) -> bool:
        """One heartbeat; False while the server does not answer yet."""
        instances = self.running_instances()
        if instances is None:
            return False
        record: dict[str, Any] = {"instances": instances, "version": __version__, "pid": os.getpid(),
                                  "interval": self.interval, **self.meter.measure()}
        if self.registered_at is not None:
            record["registered_at"] = self.registered_at
        ttl = self.state.dead_after()
        if ttl < 2 * self.interval and self.registered_at is None:
            log.warning("heartbeat every %.2f s with dead_after %.2f s: one late beat makes this worker dead",
                        self.interval, ttl)
        if self.state.heartbeat(self.advertise, record, ttl):
            self.registered_at = time.time()
            log.info("worker %s registered in %s (%s)", self.advertise, self.state.url, self.state.kind)
        self.stop_foreign(instances)
        return True

    def stop_foreign(self, instances: list[str]) -> None:
        """Stop what this worker runs but Redis assigns elsewhere or records as lost from here (no double run)."""
        if not instances:
            return
        hosts, lost_from = self.state.hosts_of(instances)
        for iid, host, lost in zip(instances, hosts, lost_from, strict=True):
            foreign = host is not None and host != self.advertise
            orphan = host is None and lost == self.advertise
            if foreign or orphan:
                where = f"runs on {host}" if host else "was recorded lost"
                log.warning("stopping instance %s: it %s (this worker was declared dead)", iid, where)
                try:
                    self.session.delete(f"{self.root}/{iid}", timeout=10)
                except requests.RequestException as exc:
                    log.warning("could not stop %s: %s", iid, exc)

    def run(self) -> None:
        # Register only once the fork server is warm: a cold worker is the least loaded, and the instances placed
        # on it would wait seconds for their start (bounded: a worker whose warm-up hangs still registers).
        if self.ready is not None:
            self.ready.wait(WARM_UP_WAIT_S)
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.beat()
            except Exception:  # noqa: BLE001 - Redis down or a bad answer: try again next beat
                log.exception("heartbeat failed")
            self.stopping.wait(max(0.05, self.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        """Stop beating and deregister (the worker is dead for the managers at once)."""
        self.stopping.set()
        self.join(timeout=self.interval * 3)
        try:
            self.state.deregister(self.advertise)
        except Exception:  # noqa: BLE001 - Redis gone: the TTL ends the registration anyway
            log.warning("could not deregister %s", self.advertise)
