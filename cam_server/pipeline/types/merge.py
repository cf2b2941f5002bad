"""Merging camera images with bsread data by pulse id (``bsread_address``, ``bsread_channels``,
``bsread_mode``, ``bsread_image_buf``, ``bsread_data_buf``).

Images and bsread data arrive on two independent threads, each roughly in pulse-id order but with different
latencies. :class:`PulseMatcher` keeps both sides in bounded buffers and pairs them as soon as both halves
of a pulse id are there. Once a pulse id has been matched, anything older can never be matched usefully
(the output must stay in order), so it is dropped and counted.
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections.abc import Sequence
from typing import Any

from cam_server.bsread.endpoints import receive_mode

log = logging.getLogger(__name__)


class _Side:
    """One side's pending items: pulse id -> item, plus a min-heap of pulse ids (lazy deletion)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.items: dict[int, Any] = {}
        self.heap: list[int] = []
        self.dropped = 0

    def add(self, pulse_id: int, item: Any) -> None:
        self.items[pulse_id] = item
        heapq.heappush(self.heap, pulse_id)
        while len(self.items) > self.capacity:  # full: the oldest pending item goes
            self._pop_min()
            self.dropped += 1

    def drop_older_than(self, pulse_id: int) -> None:
        while self.heap and self.heap[0] < pulse_id:
            pid = heapq.heappop(self.heap)
            if self.items.pop(pid, _MISSING) is not _MISSING:
                self.dropped += 1
        if len(self.heap) > 4 * self.capacity + 16:  # stale heap entries of matched items: compact
            self.heap = sorted(self.items)

    def _pop_min(self) -> None:
        while self.heap:
            pid = heapq.heappop(self.heap)
            if self.items.pop(pid, _MISSING) is not _MISSING:
                return


_MISSING = object()


class PulseMatcher:
    """Pair images and bsread data with the same pulse id. Thread-safe.

    ``add_image`` / ``add_data`` return the list of ``(image_item, data)`` pairs completed by that call
    (0 or 1 pair). An item is dropped (``dropped_images`` / ``dropped_data``) when its pulse id is not newer
    than the newest matched pulse id, when it duplicates a pending pulse id, when a newer pulse id gets
    matched while it waits, or when its side already holds ``image_buf`` / ``data_buf`` items (the oldest
    pending one goes).
    """

    def __init__(self, image_buf: int, data_buf: int):
        for key, value in (("bsread_image_buf", image_buf), ("bsread_data_buf", data_buf)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        self._images = _Side(image_buf)
        self._data = _Side(data_buf)
        self._lock = threading.Lock()
        self.last_matched: int | None = None
        self.matched = 0

    @property
    def dropped_images(self) -> int:
        return self._images.dropped

    @property
    def dropped_data(self) -> int:
        return self._data.dropped

    @property
    def pending_images(self) -> int:
        return len(self._images.items)

    @property
    def pending_data(self) -> int:
        return len(self._data.items)

    def add_image(self, pulse_id: int, image_item: Any) -> list[tuple[Any, Any]]:
        """Offer one image; returns ``[(image_item, data)]`` if its data is already here, else ``[]``."""
        with self._lock:
            return self._add(int(pulse_id), image_item, self._images, self._data, image_first=True)

    def add_data(self, pulse_id: int, data: Any) -> list[tuple[Any, Any]]:
        """Offer one bsread data dict; returns ``[(image_item, data)]`` if its image is already here."""
        with self._lock:
            return self._add(int(pulse_id), data, self._data, self._images, image_first=False)

    def clear(self) -> None:
        """Forget everything pending (e.g. after a reconnection); counters are kept."""
        with self._lock:
            for side in (self._images, self._data):
                side.items.clear()
                side.heap.clear()

    def _add(self, pulse_id: int, item: Any, mine: _Side, other: _Side, image_first: bool) -> list:
        if (self.last_matched is not None and pulse_id <= self.last_matched) or pulse_id in mine.items:
            mine.dropped += 1
            return []
        partner = other.items.pop(pulse_id, _MISSING)
        if partner is _MISSING:
            mine.add(pulse_id, item)
            return []
        self.last_matched = pulse_id
        self.matched += 1
        mine.drop_older_than(pulse_id)
        other.drop_older_than(pulse_id)
        return [(item, partner) if image_first else (partner, item)]


class BsreadDataReceiver(threading.Thread):
    """Thread that reads a bsread stream and feeds ``matcher.add_data(pulse_id, {channel: value})``.

    ``channels`` selects the channels (None = all in the message); a selected channel missing from a
    message is passed as None, so the processing function always sees the same keys. The stream is
    reconnected after errors (``reconnect_delay``); ``stop()`` ends the thread within about
    ``receive_timeout`` ms. Counters: ``received``, ``errors``; ``last_error`` holds the latest message.
    """

    def __init__(self, address: str, mode: str | int, channels: Sequence[str] | None, matcher: PulseMatcher,
                 receive_timeout: int = 200, queue_size: int = 100, reconnect_delay: float = 1.0,
                 name: str = "bsread-data"):
        super().__init__(name=name, daemon=True)
        if not isinstance(address, str) or not address:
            raise ValueError(f"bsread_address must be a stream address like 'tcp://host:port', got {address!r}")
        if channels is not None and (isinstance(channels, str)
                                     or not all(isinstance(c, str) and c for c in channels)):
            raise ValueError(f"bsread_channels must be a list of channel names, got {channels!r}")
        self.address = address
        self.mode = receive_mode(mode, "bsread_mode")
        self.channels = list(channels) if channels is not None else None
        self.matcher = matcher
        self.receive_timeout = receive_timeout
        self.queue_size = queue_size
        self.reconnect_delay = reconnect_delay
        self._stop_event = threading.Event()
        self.connected = threading.Event()
        self.received = 0
        self.errors = 0
        self.last_error: str | None = None

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self._receive_loop()
            except Exception as ex:
                self.errors += 1
                self.last_error = f"bsread data stream {self.address}: {ex}"
                log.warning("%s", self.last_error)
                self.connected.clear()
                self._stop_event.wait(self.reconnect_delay)

    def extract(self, message: Any) -> dict[str, Any]:
        """The selected channel values of a received message (missing selected channels -> None)."""
        values = message.data.data
        if self.channels is None:
            return {name: v.value for name, v in values.items()}
        out: dict[str, Any] = {}
        for name in self.channels:
            v = values.get(name)
            out[name] = None if v is None else v.value
        return out

    def _receive_loop(self) -> None:
        from cam_server.bsread import Source  # imported here: PulseMatcher itself needs no bsread

        src = Source(address=self.address, mode=self.mode, receive_timeout=self.receive_timeout,
                     queue_size=self.queue_size)
        src.connect()
        self.connected.set()
        try:
            while not self._stop_event.is_set():
                message = src.receive()
                if message is None:
                    continue
                self.received += 1
                self.matcher.add_data(message.data.pulse_id, self.extract(message))
        finally:
            self.connected.clear()
            try:
                src.disconnect()
            except Exception as ex:
                log.debug("bsread data stream disconnect: %s", ex)


def default_bsread_mode(bsread_address: str | None) -> str:
    """README rule: PULL when ``bsread_address`` is given, SUB (dispatcher) when it is not."""
    return "PULL" if bsread_address else "SUB"

