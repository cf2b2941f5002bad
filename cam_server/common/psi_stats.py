"""Instance statistics under the keys PSI's tools read (psi-interface.md section 2), beside our own counters.

Why a separate formatter: the counters live in shared memory (:class:`~cam_server.common.process.SharedStats`) under
our names; PSI's screen panel and cluster tooling read ``total_bytes``, ``throughput``, ``rx``/``tx`` strings and
so on. Both servers' instance info use this one mapping.

Times are local wall-clock strings ``YYYY-mm-dd HH:MM:SS`` (:data:`TIME_FORMAT`), e.g. ``2026-12-04 19:30:00``.
"""

from __future__ import annotations

import functools
import time
from typing import Any

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# Raw counters replaced by a PSI key (frame_shape) rather than shown twice.
_REPLACED = ("frame_width", "frame_height")


def format_time(timestamp: float | None = None) -> str:
    """``timestamp`` (Unix seconds; now when None) as local time in :data:`TIME_FORMAT`."""
    return _format_second(int(time.time() if timestamp is None else timestamp))  # floor: times here are > 0


@functools.lru_cache(maxsize=256)
def _format_second(second: int) -> str:
    """One formatted second (info routes format "now" and each instance's start time on every request)."""
    return time.strftime(TIME_FORMAT, time.localtime(second))


def rate_and_count(rate: float, count: int) -> str:
    """PSI's ``rx`` / ``tx`` form ``"<rate>Hz - <count>"``, the rate with one decimal (``"10.0Hz - 532"``)."""
    return f"{rate:.1f}Hz - {count}"


def psi_statistics(process_info: dict[str, Any]) -> dict[str, Any]:
    """``statistics`` of an instance: our counters plus PSI's keys, from ``InstanceProcess.info()``.

    PSI keys: ``total_bytes`` (bytes sent), ``clients``, ``throughput`` (bytes/s sent), ``time`` (when these
    statistics were read), ``rx`` (received rate and count), ``tx`` (sent rate and count), ``pid``, ``cpu`` (percent
    of one core), ``memory`` (RSS bytes), ``frame_shape`` (``[height, width]`` of the received images, None before
    the first image). ``state`` is shown by its name (:data:`~cam_server.common.process.INSTANCE_STATES`),
    ``waiting_since`` as a time string (None when not waiting).
    """
    raw = process_info.get("statistics") or {}
    stats = {k: v for k, v in raw.items() if k not in _REPLACED}
    height, width = int(raw.get("frame_height") or 0), int(raw.get("frame_width") or 0)
    stats.update(
        total_bytes=int(raw.get("bytes_out") or 0),
        clients=int(raw.get("clients") or 0),
        throughput=float(raw.get("throughput") or 0.0),
        time=format_time(),
        rx=rate_and_count(float(raw.get("rate_in") or 0.0), int(raw.get("frames_in") or 0)),
        tx=rate_and_count(float(raw.get("rate") or 0.0), int(raw.get("frames_out") or 0)),
        pid=process_info.get("pid"),
        cpu=raw.get("cpu_percent"),
        memory=raw.get("memory_rss"),
        frame_shape=[height, width] if height and width else None,
    )
    if "waiting_since" in raw:
        stats["waiting_since"] = format_time(raw["waiting_since"]) if raw["waiting_since"] else None
    return stats
