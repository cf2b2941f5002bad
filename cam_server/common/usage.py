"""What a server reports about its own process in ``GET <root>/info`` (PSI's tools read ``version``, ``cpu``,
``memory``)."""

from __future__ import annotations

import threading
from typing import Any

import psutil

from cam_server.version import __version__

_lock = threading.Lock()
_process: psutil.Process | None = None


def server_usage() -> dict[str, Any]:
    """``version``, ``cpu`` (percent of one core since the previous call) and ``memory`` (RSS bytes) of this
    process. The first call's cpu is 0.0 (psutil measures between calls)."""
    global _process
    with _lock:
        if _process is None:
            _process = psutil.Process()
        with _process.oneshot():
            cpu = _process.cpu_percent(None)
            memory = _process.memory_info().rss
    return {"version": __version__, "cpu": cpu, "memory": memory}
