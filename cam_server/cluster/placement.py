"""Which worker gets a new instance: PSI's rules (psi-interface.md §4), then measured load.

First rule that applies: pinned in the workers file's ``instances`` (``name[:port]``) → a worker already running a
pipeline of the same camera → a worker listing the camera in ``cameras`` → the worker on the host running that
camera's stream → the least-loaded ``expanding`` worker. ``enabled: false`` workers get nothing; ``expanding:
false`` workers only what is pinned to them. Pure functions of the state read from Redis (no I/O here).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cam_server.cluster.state import InstanceRecord

NET_BYTES_PER_CORE = 125e6  # 1 Gbit/s of traffic counts as much load as one busy core
INSTANCE_WEIGHT = 0.05  # each instance recorded on a worker (placed since its last measurement too)


class NoWorker(Exception):
    """No alive, enabled worker may take the instance."""


@dataclass(frozen=True)
class Request:
    """What is placed: the instance id, the saved name it came from, its camera (if any)."""

    instance_id: str
    name: str | None = None
    camera: str | None = None


def host_of(url: str) -> str:
    """The host part of a worker URL or a stream address (``tcp://host:port``)."""
    return urlsplit(url).hostname or ""


def pinned_port(entry: str) -> tuple[str, int | None]:
    """``name[:port]`` of the workers file's ``instances``."""
    name, _, port = entry.partition(":")
    return name, int(port) if port.isdigit() else None


def load(worker: dict[str, Any], instance_count: int) -> float:
    """The measured load of a worker: cores busy (its processes' cpu), network traffic in core-equivalents and a
    small weight per instance recorded on it (which also spreads a burst of placements between two heartbeats)."""
    cpu = float(worker.get("cpu") or 0.0) / 100.0
    net = (float(worker.get("tx") or 0.0) + float(worker.get("rx") or 0.0)) / NET_BYTES_PER_CORE
    return cpu + net + INSTANCE_WEIGHT * instance_count


def candidates(workers: dict[str, dict[str, Any]], servers_file: dict[str, dict[str, Any]] | None,
               ) -> dict[str, dict[str, Any]]:
    """Alive workers that are enabled, with their workers-file entry (the file only adds rules: a registered
    worker it does not list is enabled and expanding, as every worker is without a file)."""
    result = {}
    for url, record in workers.items():
        if not record.get("alive"):
            continue
        entry = {"enabled": True, "expanding": True, "instances": [], "cameras": []}
        entry.update((servers_file or {}).get(url) or {})
        if entry.get("enabled", True):
            result[url] = entry
    return result


def place(request: Request, workers: dict[str, dict[str, Any]], servers_file: dict[str, dict[str, Any]] | None,
          instances: Iterable[InstanceRecord], camera_host: str | None = None) -> tuple[str, str]:
    """``(worker url, rule)`` for ``request``; ``camera_host``: the host running the camera's stream (pipelines).
    Raises :class:`NoWorker`."""
    usable = candidates(workers, servers_file)
    records = list(instances)
    for url, entry in usable.items():
        names = {pinned_port(e)[0] for e in entry.get("instances") or ()}
        if request.instance_id in names or (request.name and request.name in names):
            return url, "pinned"
    expanding = [u for u, e in usable.items() if e.get("expanding", True)]
    if not expanding:
        raise NoWorker(f"No alive, enabled and expanding worker for '{request.instance_id}' (workers: "
                       f"{sorted(workers) or 'none registered'}).")
    counts = {u: 0 for u in expanding}
    for record in records:
        if record.host in counts:
            counts[record.host] += 1

    def least_loaded(urls: Iterable[str]) -> str:  # ties: the first by URL, the same on every manager
        return min(urls, key=lambda u: (load(workers[u], counts[u]), u))

    if request.camera:
        same_camera = {r.host for r in records
                       if r.host in counts and r.kind != "camera" and _camera_of(r) == request.camera}
        if same_camera:
            return least_loaded(same_camera), "same camera"
        listing = [u for u in expanding if request.camera in (usable[u].get("cameras") or ())]
        if listing:
            return least_loaded(listing), "camera listed"
        on_host = [u for u in expanding if camera_host and host_of(u) == camera_host]
        if on_host:
            return least_loaded(on_host), "camera host"
    return least_loaded(expanding), "least loaded"


def pinned_port_of(request: Request, servers_file: dict[str, dict[str, Any]] | None, url: str) -> int | None:
    """The port pinned for ``request`` on worker ``url`` (``name:port`` in its ``instances``), if any."""
    for entry in ((servers_file or {}).get(url) or {}).get("instances") or ():
        name, port = pinned_port(entry)
        if name in (request.instance_id, request.name):
            return port
    return None


def _camera_of(record: InstanceRecord) -> str | None:
    return (record.config or {}).get("camera_name")
