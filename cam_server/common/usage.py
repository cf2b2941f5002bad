"""What a server reports about its own process in ``GET <root>/info`` (PSI's tools read ``version``, ``cpu``,
``memory``)."""

from __future__ import annotations

import threading
from typing import Any

from cam_server.common.process import ProcessUsage
from cam_server.version import __version__

_lock = threading.Lock()
_usage: ProcessUsage | None = None


def server_usage() -> dict[str, Any]:
    """``version``, ``cpu`` (percent of one core, measured over the last second or more) and ``memory`` (RSS bytes)
    of this process, read from the OS at most once a second (:class:`ProcessUsage`). The first call's cpu is 0.0
    (psutil measures between reads)."""
    global _usage
    if _usage is None:
        with _lock:
            if _usage is None:
                _usage = ProcessUsage(pss=False)
    figures = _usage.read()
    return {"version": __version__, "cpu": figures["cpu_percent"], "memory": figures["memory_rss"]}
