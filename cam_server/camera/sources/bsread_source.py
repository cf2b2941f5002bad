"""bsread camera source: frames from an existing bsread stream (``source`` = its address, e.g. ``tcp://host:port``).

With ``connections`` > 1 the stream is read over several parallel PULL (or SUB) connections, each in its own
thread, and merged back into pulse-id order through a buffer of ``buffer_size`` messages: a message is released
as soon as it is the next pulse id, or when the buffer is full / the oldest message waited too long (gaps in
pulse ids must not stall the camera). Late or duplicate pulse ids are dropped and counted.

An upstream that restarts numbering its pulses again from below (from 0) would make every later message "late":
when only late messages arrive for longer than the reorder delay (``RESTART_AFTER_S``, at least
``connections + 1`` of them, none released in between) the source has restarted: the merge forgets the last pulse
id and goes on with the new run (``restarts`` counts it). A late message of a slow connection never looks like
that: the other connections' newer messages are released within ``MAX_HOLD_S``. With one connection there is
no merge; a pulse id below the previous one is counted as a restart as well. ZeroMQ reconnects by itself when the
upstream comes back; :meth:`BsreadCameraSource.health` tells whether a connection is up and how often it came back.

The image is the channel named ``image``, or else the only 2-D channel; all other channels (except the camera
stream's own ``width``/``height``/``timestamp``/``x_axis``/``y_axis``) are passed on in ``RawFrame.extra``.
A caller that knows the image channel names it (``image_channel``) and may give the geometry a 1-D image is
reshaped to (``flat_geometry``: a callable returning the current (width, height); shorter images are dropped, longer
ones truncated), as for a camera that publishes its own stream (:mod:`~cam_server.camera.sources.epics_bsread`).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cam_server.bsread import Source, Wakeup
from cam_server.bsread.address import parse_stream_address
from cam_server.bsread.endpoints import receive_mode
from cam_server.bsread.message import Message
from cam_server.bsread.monitor import ConnectionWatch
from cam_server.camera.config import CameraConfig
from cam_server.camera.sources.base import RawFrame
from cam_server.common.errors import InvalidConfig

log = logging.getLogger(__name__)

RECEIVE_POLL_MS = 100
# ZeroMQ receive high-water mark per connection, in messages: a few frames. The camera relays each frame at once;
# when it falls behind, older frames must not wait here (10 of 11 MB each were 100 ms at 2560x2160): beyond it the
# upstream's PUB drops the newest (small messages wait in the kernel's socket buffers instead).
RECEIVE_QUEUE = 4
MAX_HOLD_S = 0.2  # longest a message waits in the merge buffer for an earlier pulse id
RESTART_AFTER_S = 2 * MAX_HOLD_S  # only late messages for this long (none released): the upstream restarted
CAMERA_CHANNELS = frozenset({"image", "width", "height", "timestamp", "x_axis", "y_axis"})


@dataclass
class RelayedFrame(RawFrame):
    """A frame that keeps the upstream (sec, ns) global timestamp exactly (a float loses the nanoseconds)."""

    global_timestamp: tuple[int, int] | None = None


def validate_stream_address(address: Any) -> str:
    try:
        parse_stream_address(address)
    except ValueError as exc:
        raise InvalidConfig(f"bsread camera 'source': {exc}") from None
    return address


Geometry = Callable[[], tuple[int, int]]


class _FrameExtractor:
    """Finds the image channel once per data header and builds RawFrames from messages."""

    def __init__(self, image_channel: str | None = None, flat_geometry: Geometry | None = None) -> None:
        self._channel = image_channel
        self._flat_geometry = flat_geometry
        self._hash: str | None = None
        self._image: str | None = None
        self._extra: tuple[str, ...] = ()

    def __call__(self, message: Message) -> RawFrame | None:
        data = message.data
        if data.hash != self._hash:
            self._hash = data.hash
            self._image, self._extra = _image_channel(data, self._channel)
            if self._image is None:
                wanted = f"no channel {self._channel!r}" if self._channel else "no 'image' channel and no single 2-D"
                log.warning("bsread stream has %s channel: %s", wanted, [c.name for c in data.channels])
        if self._image is None:
            return None
        value = data.data.get(self._image)
        image = value.value if value is not None else None
        if isinstance(image, np.ndarray) and image.ndim == 1 and self._flat_geometry is not None:
            image = _unflatten(image, *self._flat_geometry())
        if not isinstance(image, np.ndarray) or image.ndim != 2:
            return None
        sec, ns = data.global_timestamp, data.global_timestamp_offset
        exact = (int(sec), int(ns or 0)) if sec is not None else None
        timestamp = sec + (ns or 0) * 1e-9 if sec is not None else time.time()
        extra = {name: data.data[name].value for name in self._extra if name in data.data} if self._extra else None
        return RelayedFrame(image=image, timestamp=timestamp, pulse_id=data.pulse_id, extra=extra,
                            global_timestamp=exact)


def _unflatten(data: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """A 1-D image as (height, width) (a view); None if it holds fewer pixels, extra ones are cut off."""
    pixels = width * height
    if width <= 0 or height <= 0 or data.size < pixels:
        return None
    return data[:pixels].reshape(height, width)


def _image_channel(data: Any, wanted: str | None = None) -> tuple[str | None, tuple[str, ...]]:
    names = [c.name for c in data.channels]
    if wanted is not None:
        image = wanted if wanted in names else None
    elif "image" in names:
        image = "image"
    else:
        two_d = [c.name for c in data.channels if c.shape is not None and len(c.shape) == 2]
        image = two_d[0] if len(two_d) == 1 else None
    extra = tuple(n for n in names if n != image and n not in CAMERA_CHANNELS)
    return image, extra


class BsreadCameraSource:
    """A :class:`~cam_server.camera.sources.base.FrameSource` relaying images of a bsread stream."""

    def __init__(self, config: CameraConfig, address: str | None = None, image_channel: str | None = None,
                 flat_geometry: Geometry | None = None) -> None:
        """``address`` overrides ``config.source``; ``image_channel`` and ``flat_geometry``: see the module doc."""
        self.address = validate_stream_address(config.source if address is None else address)
        self.image_channel = image_channel
        self.flat_geometry = flat_geometry
        self.mode = receive_mode(config.bsread_mode, "bsread_mode")
        self.connections = config.connections
        assert config.buffer_size is not None  # resolved by CameraConfig (connections * 5)
        self.buffer_size = config.buffer_size
        self.dropped = 0  # late / duplicate pulse ids and messages without an image
        self.restarts = 0  # the upstream started numbering its pulses again from below
        self._sources: list[Source] = []
        self._watches: list[ConnectionWatch] = []
        self._extract = self._new_extractor()
        self._geometry = (0, 0)
        # merge state (connections > 1)
        self._heap: list[tuple[int, int, float, RawFrame]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._last_pulse_id: int | None = None
        self._late_run = 0  # late messages dropped since the last release
        self._late_since = 0.0  # when the first of them was dropped
        self._wakeup = Wakeup()  # interrupts the single connection's receive (threads watch self._stop)

    def connect(self) -> None:
        self.close()
        self._stop.clear()
        timeout = RECEIVE_POLL_MS
        self._sources = [Source(address=self.address, mode=self.mode, receive_timeout=timeout,
                                queue_size=RECEIVE_QUEUE, wakeup=self._wakeup if self.connections == 1 else None
                                ).connect() for _ in range(self.connections)]
        self._watches = [ConnectionWatch(s.socket) for s in self._sources if s.socket is not None]
        self._last_pulse_id, self._late_run = None, 0
        if self.connections > 1:
            self._threads = [threading.Thread(target=self._receive_loop, args=(s, self._new_extractor()),
                                              name=f"bsread-camera-rx-{i}", daemon=True)
                             for i, s in enumerate(self._sources)]
            for t in self._threads:
                t.start()
        log.info("bsread camera source connected to %s (%d connections)", self.address, self.connections)

    def geometry(self) -> tuple[int, int]:
        return self._geometry

    def _new_extractor(self) -> _FrameExtractor:
        return _FrameExtractor(self.image_channel, self.flat_geometry)

    def read(self, timeout: float) -> RawFrame | None:
        frame = self._read_single(timeout) if self.connections == 1 else self._read_merged(timeout)
        if frame is not None:
            h, w = frame.image.shape
            self._geometry = (w, h)
        return frame

    def health(self) -> tuple[bool, int]:
        """(connected, reconnects): a connection to the upstream is up; how often a connection came back after a
        loss (the most of any one connection: one upstream restart counts once). Cheap; not for every frame."""
        if not self._watches:
            return False, 0
        connected = False
        for watch in self._watches:
            connected = watch.poll() or connected
        return connected, max(w.reconnects for w in self._watches)

    def interrupt(self) -> None:
        self._wakeup.set()
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=2)
        self._threads = []
        for watch in self._watches:
            watch.close()
        self._watches = []
        for s in self._sources:
            s.disconnect()
        self._sources = []
        self._heap.clear()

    # --- single connection: receive on the caller's thread ------------------------------------------------
    def _read_single(self, timeout: float) -> RawFrame | None:
        source = self._sources[0]
        deadline = time.monotonic() + timeout
        while True:
            message = source.receive()
            if message is not None:
                frame = self._extract(message)
                if frame is not None:
                    pulse_id = frame.pulse_id
                    if pulse_id is not None:
                        if self._last_pulse_id is not None and pulse_id < self._last_pulse_id:
                            self._restarted(pulse_id)
                        self._last_pulse_id = pulse_id
                    return frame
                self.dropped += 1
            if time.monotonic() >= deadline or self._wakeup.is_set():
                return None

    # --- several connections: receiver threads and a pulse-id ordered buffer ----------------------------
    def _receive_loop(self, source: Source, extract: _FrameExtractor) -> None:
        capacity = max(self.buffer_size, 1) + self.connections
        while not self._stop.is_set():
            try:
                message = source.receive()
                if message is None:
                    continue
                frame = extract(message)
            except Exception as exc:  # noqa: BLE001 - a receiver must survive a bad message (else: silent stall)
                log.warning("bsread camera receiver error: %s", exc)
                frame = None
            with self._cond:
                if frame is None:
                    self.dropped += 1
                    continue
                while len(self._heap) >= capacity and not self._stop.is_set():
                    self._cond.wait(0.1)  # back-pressure: let ZeroMQ queue (and the sender block)
                heapq.heappush(self._heap, (frame.pulse_id or 0, next(self._seq), time.monotonic(), frame))
                self._cond.notify_all()

    def _releasable(self) -> bool:
        heap = self._heap
        if not heap:
            return False
        pulse_id, _, arrived, _ = heap[0]
        if self._last_pulse_id is not None and pulse_id == self._last_pulse_id + 1:
            return True
        return len(heap) >= max(self.buffer_size, 1) or time.monotonic() - arrived >= MAX_HOLD_S

    def _read_merged(self, timeout: float) -> RawFrame | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                while self._heap and self._last_pulse_id is not None and self._heap[0][0] <= self._last_pulse_id:
                    pulse_id = heapq.heappop(self._heap)[0]
                    self.dropped += 1
                    self._late_run += 1
                    now = time.monotonic()
                    if self._late_run == 1:
                        self._late_since = now
                    elif self._late_run > self.connections and now - self._late_since >= RESTART_AFTER_S:
                        self._restarted(pulse_id)
                        self._cond.notify_all()  # room in the buffer
                        break
                if self._releasable():
                    pulse_id, _, _, frame = heapq.heappop(self._heap)
                    self._last_pulse_id = pulse_id
                    self._late_run = 0
                    self._cond.notify_all()
                    return frame
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._wakeup.is_set():
                    return None
                self._cond.wait(min(remaining, MAX_HOLD_S / 4))

    def _restarted(self, pulse_id: int) -> None:
        """The upstream numbers its pulses again from below: forget the last pulse id (under the merge lock)."""
        self.restarts += 1
        log.warning("bsread camera source %s: pulse id %d after %s, the upstream restarted (restart %d)",
                    self.address, pulse_id, self._last_pulse_id, self.restarts)
        self._last_pulse_id = None
        self._late_run = 0
