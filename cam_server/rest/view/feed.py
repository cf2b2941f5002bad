"""One subscription per viewed stream, shared by all open views of it, that keeps only the newest frame.

Why this shape: a view must never slow the instance or the REST API. The feed is an ordinary SUB client of the
instance's stream, in a thread of the REST process, that reads at most at the rate its fastest view asks for and
keeps only the newest message, so the REST process never receives, let alone copies, every frame of a fast camera.
A PUB socket queues up to its high-water mark for a subscriber that reads slowly, and those queued messages are
old: when the instance sends faster than the views show (its rate, or a second message already waiting after a
receive), the feed drops its subscription after each frame and subscribes afresh when the next one is due, which
empties that queue without receiving it and costs one connection per frame shown. Statistics of the instance
(state, rate, drops) are read once a second for all views.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cam_server.bsread import SUB, Source, Wakeup
from cam_server.common.errors import CamServerError
from cam_server.rest.view.frames import DEFAULT_RATE, Frame, ViewRequest, frame_from_values, render_view

log = logging.getLogger(__name__)

RECEIVE_MS = 500          # how often an idle feed checks that its instance still runs
STATUS_PERIOD = 1.0       # seconds between statistics reads
RETRY_PERIOD = 1.0        # seconds between attempts to find a stream that is not there
# Newer messages already queued after a receive are taken in place of it while they total less than this: small
# images stay fresh without a new subscription, a large image is never received twice per frame shown.
DRAIN_BYTES = 4 * 1024 * 1024
# A stream up to this factor faster than the views keeps its subscription (its queue cannot grow much).
SLOWER_SOURCE = 1.25
RENDER_CACHE = 4          # rendered messages kept per feed (views with identical requests share them)


@dataclass(frozen=True)
class Stream:
    """Where a view's frames come from: the stream address and whether its instance still runs."""

    address: str
    alive: Callable[[], bool]


class StreamFeed:
    """The newest frame of one stream plus the instance's status, for every view of it."""

    def __init__(self, name: str, open_stream: Callable[[bool], Stream], status: Callable[[], dict[str, Any]]):
        self.name = name
        self._open_stream = open_stream
        self._status = status
        self._wakeup = Wakeup()
        self._lock = threading.Lock()
        self._rates: dict[int, float] = {}
        self._frame: Frame | None = None
        self._error: str | None = None
        self._status_value: dict[str, Any] = {"state": "starting"}
        self._status_seq = 0
        self._cache: dict[tuple, bytes] = {}
        self.received = 0  # messages received (including drained ones), for tests and the benchmark
        self.resubscriptions = 0
        self._thread = threading.Thread(target=self._run, name=f"view-feed-{name}", daemon=True)
        self._thread.start()

    # --- what views read ------------------------------------------------------------------------------------
    @property
    def frame(self) -> Frame | None:
        return self._frame

    def status(self) -> tuple[int, dict[str, Any]]:
        """(sequence, status): the sequence changes whenever the status does."""
        with self._lock:
            return self._status_seq, self._status_value

    def render(self, frame: Frame, request: ViewRequest) -> bytes:
        """The message of ``frame`` for ``request``, computed once for identical requests of several views."""
        key = (frame.seq, request.x, request.y, request.w, request.h, request.width, request.height, request.low,
               request.high)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        data = render_view(frame, request)
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if k[0] == frame.seq}
            if len(self._cache) < RENDER_CACHE:
                self._cache[key] = data
        return data

    def set_rate(self, view: int, rate: float | None) -> None:
        """The frame rate view ``view`` wants (None: it left); the feed reads at the highest one."""
        with self._lock:
            if rate is None:
                self._rates.pop(view, None)
            else:
                self._rates[view] = rate

    def close(self) -> None:
        """End the subscription thread (the last view of the stream closed)."""
        self._wakeup.set()
        self._thread.join(5)
        self._wakeup.close()
        log.info("view feed %s closed: %d messages received, %d shown, %d fresh subscriptions", self.name,
                 self.received, self._frame.seq if self._frame else 0, self.resubscriptions)

    # --- the subscription thread ----------------------------------------------------------------------------
    def _period(self) -> float:
        with self._lock:
            return 1.0 / max(self._rates.values(), default=DEFAULT_RATE)

    def _run(self) -> None:
        stream: Source | None = None
        alive: Callable[[], bool] = lambda: True  # noqa: E731
        first = True
        next_status = 0.0
        try:
            while not self._wakeup.is_set():
                if stream is None:
                    try:
                        found = self._open_stream(first)
                    except CamServerError as exc:
                        self._refresh_status()
                        self._set_error(str(exc))
                        self._wakeup.wait(RETRY_PERIOD)
                        continue
                    first = False
                    alive = found.alive
                    stream = Source(address=found.address, mode=SUB, receive_timeout=RECEIVE_MS, queue_size=1,
                                    wakeup=self._wakeup).connect()
                if time.monotonic() >= next_status:
                    self._refresh_status()
                    next_status = time.monotonic() + STATUS_PERIOD
                message = stream.receive()
                if message is None:
                    if not stream.interrupted and not alive():
                        stream.close()
                        stream = None
                        self._refresh_status()
                        self._set_error(self._status_value.get("error") or f"'{self.name}' stopped.")
                    continue
                started = time.monotonic()
                self.received += 1
                message, behind = self._newest(stream, message)
                self._publish(message)
                if behind or self._source_faster():  # what queues for us until the next frame is due is old
                    stream.close()
                    stream = None
                    self.resubscriptions += 1
                self._wakeup.wait(self._period() - (time.monotonic() - started))
        except Exception:  # noqa: BLE001 - the views show the error; the REST process must not notice
            log.exception("view feed %s failed", self.name)
            self._set_error(f"The view of '{self.name}' failed; see the server log.")
        finally:
            if stream is not None:
                stream.close()

    def _source_faster(self) -> bool:
        """Whether the instance sends faster than the views show: then messages would queue for the feed between
        two frames shown (a receive right after another cannot tell, the next large message is still on its way),
        so the feed subscribes afresh for each frame instead."""
        rate = self._status_value.get("rate")
        return isinstance(rate, int | float) and rate > SLOWER_SOURCE * (1.0 / self._period())

    def _newest(self, stream: Source, message: Any) -> tuple[Any, bool]:
        """The newest message already received after ``message`` (within :data:`DRAIN_BYTES`) and whether more
        are still waiting."""
        budget = DRAIN_BYTES - message.statistics.bytes_received
        while budget > 0 and stream.poll(0):
            newer = stream.receive()
            if newer is None:
                break
            self.received += 1
            message = newer
            budget -= newer.statistics.bytes_received
        return message, stream.poll(0)

    def _publish(self, message: Any) -> None:
        data = message.data
        values = {name: value.value for name, value in data.data.items()}
        timestamp = None
        if data.global_timestamp is not None:
            timestamp = data.global_timestamp + (data.global_timestamp_offset or 0) * 1e-9
        previous = self._frame
        frame = frame_from_values((previous.seq + 1) if previous else 1, data.pulse_id, timestamp, values)
        self._frame = frame
        if self._error is not None:
            self._set_error(None)

    def _refresh_status(self) -> None:
        try:
            status = dict(self._status())
        except Exception as exc:  # noqa: BLE001 - a status that cannot be read is shown, not raised
            status = {"state": "error", "error": str(exc)}
        if self._error is not None and status.get("state") == "running":
            status.update(state="error", error=self._error)
        self._set_status(status)

    def _set_error(self, error: str | None) -> None:
        self._error = error
        with self._lock:
            status = dict(self._status_value)
        if error is None:
            if status.get("state") == "error":
                status.update(state="running", error=None)
        else:
            status.update(state=status["state"] if status.get("state") == "stopped" else "error", error=error)
        self._set_status(status)

    def _set_status(self, status: dict[str, Any]) -> None:
        with self._lock:
            if status != self._status_value:
                self._status_value = status
                self._status_seq += 1


class FeedHub:
    """The feeds of one server, by stream name: created by the first view of a stream, closed with its last."""

    def __init__(self, open_stream: Callable[[str, bool], Stream], status: Callable[[str], dict[str, Any]]):
        self._open_stream = open_stream
        self._status = status
        self._lock = threading.Lock()
        self._feeds: dict[str, tuple[StreamFeed, set[int]]] = {}

    def acquire(self, name: str, view: int) -> StreamFeed:
        """The feed of stream ``name`` for view ``view`` (started if it is the first view of that stream)."""
        with self._lock:
            entry = self._feeds.get(name)
            if entry is None:
                feed = StreamFeed(name, lambda first: self._open_stream(name, first), lambda: self._status(name))
                entry = self._feeds[name] = (feed, set())
            entry[1].add(view)
            return entry[0]

    def release(self, name: str, view: int) -> None:
        """View ``view`` closed; the feed stops with its last view."""
        with self._lock:
            entry = self._feeds.get(name)
            if entry is None:
                return
            entry[0].set_rate(view, None)
            entry[1].discard(view)
            if entry[1]:
                return
            del self._feeds[name]
        entry[0].close()
