"""Fixed-bucket histograms in shared memory: an instance observes per frame, the server reads them at scrape time.

Why: ``GET /metrics`` shows the processing time and the end-to-end latency of every instance as Prometheus
histograms, but nothing per frame may cross a process boundary. Each instance owns one small ``RawArray`` of
float64 slots (one writer, lock-free like :class:`~cam_server.common.process.SharedStats`); per frame an observation
is a ``bisect`` over a tuple of bucket bounds, one slot increment and one sum addition: no allocation, no syscall.

Layout of one histogram: ``len(bounds) + 1`` counts (one per bucket, not cumulative; the last is +Inf), then the
sum. The reader makes the counts cumulative, as Prometheus wants them.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

# Seconds. Processing: receive → send inside the instance; latency: the frame's own timestamp → send.
PROCESSING_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
HISTOGRAMS = {"processing_seconds": PROCESSING_BUCKETS, "latency_seconds": LATENCY_BUCKETS}


def _layout() -> dict[str, tuple[int, tuple[float, ...]]]:
    offsets, at = {}, 0
    for name, bounds in HISTOGRAMS.items():
        offsets[name] = (at, bounds)
        at += len(bounds) + 2  # counts of every bucket and +Inf, then the sum
    return offsets


_LAYOUT = _layout()
SLOTS = sum(len(bounds) + 2 for bounds in HISTOGRAMS.values())


class SharedHistogram:
    """One histogram, a view on its slots of the shared array (see the module doc)."""

    __slots__ = ("_values", "_base", "_sum", "_bounds")

    def __init__(self, values: Any, name: str) -> None:
        base, bounds = _LAYOUT[name]
        # A float64 memoryview of the shared array: item updates cost half of the ctypes array's.
        self._values, self._base, self._bounds = memoryview(values).cast("B").cast("d"), base, bounds
        self._sum = base + len(bounds) + 1

    def observe(self, value: float) -> None:
        """Count ``value`` (seconds) in its bucket (hot path: one bisect, two float additions)."""
        values = self._values
        values[self._base + bisect_left(self._bounds, value)] += 1
        values[self._sum] += value

    def read(self) -> tuple[list[tuple[float, float]], float, float]:
        """(cumulative buckets [(upper bound, count)] ending with +Inf, count, sum), read at once."""
        raw = self._values[self._base:self._sum + 1].tolist()
        total, buckets = 0.0, []
        for bound, count in zip((*self._bounds, float("inf")), raw[:-1], strict=True):
            total += count
            buckets.append((bound, total))
        return buckets, total, raw[-1]


class InstanceHistograms:
    """An instance's histograms (:data:`HISTOGRAMS`) in one shared array: ``processing`` and ``latency``."""

    def __init__(self, ctx: Any) -> None:
        self._values = ctx.RawArray("d", SLOTS)
        self.processing = SharedHistogram(self._values, "processing_seconds")
        self.latency = SharedHistogram(self._values, "latency_seconds")

    def __getstate__(self) -> dict[str, Any]:
        return {"_values": self._values}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._values = state["_values"]
        self.processing = SharedHistogram(self._values, "processing_seconds")
        self.latency = SharedHistogram(self._values, "latency_seconds")

    def read(self) -> dict[str, tuple[list[tuple[float, float]], float, float]]:
        """Every histogram by name (``processing_seconds``, ``latency_seconds``): see :meth:`SharedHistogram.read`."""
        return {"processing_seconds": self.processing.read(), "latency_seconds": self.latency.read()}
