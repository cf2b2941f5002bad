"""Pulse-id reordering for fan-in pipelines (config key ``pid_buffer``).

Several worker pipelines push their results to one fan-in pipeline; each worker is in order, but their
interleaving is not. :class:`PidReorderBuffer` holds up to ``size`` items and always releases the smallest
pulse id first, so the fan-in output is in pulse-id order as long as no item is late by more than ``size``
items. Late items (older than what was already emitted) and duplicates are dropped and counted, because
re-emitting them would break the monotonic order the buffer exists to give.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from typing import Any


class PidReorderBuffer:
    """Emit items in pulse-id order with a bounded look-back window.

    ``size`` = number of items held back; 0 = pass-through (every item is emitted at once, nothing is
    dropped — that is the README default of ``pid_buffer``). Thread-safe: several receiving threads may push.

    Counters: ``dropped`` (late + duplicate), ``late`` (pulse id <= last emitted), ``duplicates`` (pulse id
    already waiting in the buffer), ``emitted``.
    """

    def __init__(self, size: int = 0):
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"pid_buffer must be a non-negative integer, got {size!r}")
        self.size = size
        self._heap: list[tuple[int, int, Any]] = []
        self._waiting: set[int] = set()
        self._order = itertools.count()  # tie-breaker so items themselves are never compared
        self._lock = threading.Lock()
        self.last_emitted: int | None = None
        self.late = 0
        self.duplicates = 0
        self.emitted = 0

    @property
    def dropped(self) -> int:
        return self.late + self.duplicates

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, pulse_id: int, item: Any) -> list[Any]:
        """Add one item; return the items now ready to be sent, smallest pulse id first (may be empty)."""
        pulse_id = int(pulse_id)
        with self._lock:
            if self.size == 0:
                self.last_emitted = pulse_id
                self.emitted += 1
                return [item]
            if self.last_emitted is not None and pulse_id <= self.last_emitted:
                self.late += 1
                return []
            if pulse_id in self._waiting:
                self.duplicates += 1
                return []
            heapq.heappush(self._heap, (pulse_id, next(self._order), item))
            self._waiting.add(pulse_id)
            ready: list[Any] = []
            while len(self._heap) > self.size:
                ready.append(self._pop())
            return ready

    def flush(self) -> list[Any]:
        """Release everything still held, in pulse-id order (call at shutdown)."""
        with self._lock:
            return [self._pop() for _ in range(len(self._heap))]

    def _pop(self) -> Any:
        pulse_id, _, item = heapq.heappop(self._heap)
        self._waiting.discard(pulse_id)
        self.last_emitted = pulse_id
        self.emitted += 1
        return item
