"""Instance statistics as PSI's tools read them, computed from :meth:`InstanceProcess.info
<cam_server.common.process.InstanceProcess.info>` (shared-memory counters; nothing is asked of the instance).

PSI's keys, added beside our own counters (``frames_in``, ``frames_out``, ``rate``, ``dropped``, ...):

* ``total_bytes``: data bytes sent (channel values, not message headers);
* ``clients``: connected stream clients (already one of ours);
* ``throughput``: bytes per second sent: the output rate times the mean message size;
* ``time``: when these statistics were read, ``"YYYY-MM-DD HH:MM:SS"`` (local time, :func:`format_time`);
* ``rx`` / ``tx``: ``"<rate>Hz - <count>"`` of frames received / messages sent (rate smoothed over about a second,
  as our ``rate``; it is the last measured one, so it does not fall to 0 the moment a source stops);
* ``pid``, ``cpu`` (percent of one core), ``memory`` (RSS bytes) of the instance process;
* ``frame_shape``: ``[height, width]`` of the last image sent (numpy order), None before the first.
"""

from __future__ import annotations

import time
from typing import Any

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def format_time(seconds: float) -> str:
    """A wall-clock time as ``"2026-12-04 19:30:00"`` (local time), as ``last_start_time`` and ``time`` show it."""
    return time.strftime(TIME_FORMAT, time.localtime(seconds))


def frame_shape(statistics: dict[str, Any]) -> list[int] | None:
    """``[height, width]`` of the last image sent, or None before the first."""
    height, width = statistics.get("frame_height", 0), statistics.get("frame_width", 0)
    return [int(height), int(width)] if height and width else None


def psi_statistics(info: dict[str, Any]) -> dict[str, Any]:
    """PSI's statistics keys for one instance, from its ``InstanceProcess.info()`` (see the module doc)."""
    stats = info["statistics"]
    sent, total_bytes = stats["frames_out"], stats.get("bytes_out", 0)
    return {
        "total_bytes": total_bytes,
        "clients": stats["clients"],
        "throughput": stats["rate"] * total_bytes / sent if sent else 0.0,
        "time": format_time(time.time()),
        "rx": f"{stats.get('rate_in', 0.0):.1f}Hz - {stats['frames_in']}",
        "tx": f"{stats['rate']:.1f}Hz - {sent}",
        "pid": info["pid"],
        "cpu": stats.get("cpu_percent"),
        "memory": stats.get("memory_rss"),
        "frame_shape": frame_shape(stats),
    }
