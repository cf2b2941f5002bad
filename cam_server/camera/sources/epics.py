"""EPICS Channel Access camera sources: frames from the image waveform of a camera IOC.

One source class serves two IOC flavours; they differ only in PV names and in two rules, held in :data:`PV_NAMES`
(processing spec 5, ``P`` = the camera config ``source``):

* ``epics``: ``P:INIT`` (online check, must read "INIT"), ``P:WIDTH`` / ``P:HEIGHT`` (raw geometry, read at connect
  then monitored), ``P:FPICTURE`` (monitored image waveform, one update = one frame).
* ``area_detector`` (a standard areaDetector IOC): ``P:cam1:Acquire`` (online check: it must connect and answer a
  read; its value, acquiring or not, is not interpreted), ``P:image1:ArraySize0_RBV`` / ``P:image1:ArraySize1_RBV``
  (width / height, read at connect then monitored), ``P:image1:ArrayData`` (the image) and
  ``P:cam1:ArrayCounter_RBV`` (the frame's pulse id). ``P:cam1:ColorMode`` and ``P:cam1:DataType`` are monitored
  but unused: a missing one does not make the camera offline and is left out of :attr:`EpicsCameraSource.connected`
  (frames are read as mono, in the configured ``dtype``, whatever they say), so a reduced IOC still streams.
* ``bsread`` with a PV prefix as ``source`` (a camera that publishes its own bsread stream): ``P:INIT``,
  ``P:WIDTH``, ``P:HEIGHT`` as for ``epics``, and ``P:BSREADCONFIG``, a string holding the camera's stream address,
  read once at connect (:attr:`EpicsCameraSource.stream_address`). There is no image PV: this source only checks
  and describes the camera, :mod:`~cam_server.camera.sources.epics_bsread` reads the frames from the stream.

Pulse id (area_detector): the counter and the image are separate monitors with no common key, so each image takes
the latest counter value seen when it arrives (an IOC posts the counter with the array, on the same CA circuit, so
in practice the two match; an IOC that always posts the counter after the image gives every frame the previous
counter, a constant offset). When the counter has not moved since the previous image (its update is late, or it
stopped), the image gets the previous id + 1 rather than a repeat; as soon as the counter moves its value is taken
again as it is (also when it went down, a reset), so a late update costs at most one repeated id instead of a
lasting offset. An image that arrives before the first counter value is dropped (``stats["no_pulse_id"]``).

Threading: pyepics delivers monitor callbacks on a Channel Access thread. The callbacks here only store references
(pyepics already hands each callback a freshly copied numpy array) in a bounded queue or a plain attribute; they never
call CA get/put. Reshaping and dtype conversion run in :meth:`EpicsCameraSource.read`, on the consumer's thread.

Process model: the CA context belongs to the process that created it and must never be inherited through
``fork``. The camera server runs every camera in its own process, forked from a clean multiprocessing fork server
that never holds a CA context (``forkserver`` start method); that process calls
:func:`configure_epics_environment` before the first PV exists. pyepics reconnects by itself after an IOC restart
(its searches retry with back-off); meanwhile :meth:`read` returns ``None`` and
:attr:`EpicsCameraSource.connected` / :attr:`EpicsCameraSource.status` say what is going on.

Conversion of the waveform to the configured ``dtype`` (see :func:`to_camera_dtype`): Channel Access has no
unsigned 16-bit type, so a uint16 camera arrives as int16 (EPICS maps USHORT waveforms to SHORT on the wire) or as
int32 (LONG waveforms).

* same dtype → used as is (no copy);
* integers of the same size but other signedness (int16 → uint16, int8 → uint8, int32 → uint32) → the bits are
  reinterpreted with ``.view`` (no copy): the IOC stored the camera's unsigned pixels in a signed record;
* anything else (e.g. int32 → uint16, float → integer) → ``astype`` after a range check; values outside the target
  range saturate at its limits (never wrap) and the frame is counted in ``stats["clipped_frames"]`` with a warning.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cam_server.camera.config import DEFAULT_DTYPE
from cam_server.camera.sources.base import CameraOffline, FrameSource, RawFrame
from cam_server.common.errors import InvalidConfig

log = logging.getLogger(__name__)

DEFAULT_CONNECTION_TIMEOUT = 5.0
CONNECT_SLICE_S = 0.25  # a connect looks for a stop request this often
REPEAT_CHECKS = 3  # first image deliveries of a subscription compared with the one delivered before
FRAME_QUEUE_SIZE = 4  # frames kept while the consumer is busy; the oldest is dropped first
EPICS_ENVIRONMENT_DEFAULTS = {
    # A 1280x1024 int32 frame is 5 MB; CA refuses arrays above this limit (default 16 kB).
    "EPICS_CA_MAX_ARRAY_BYTES": "40000000",
}


@dataclass(frozen=True)
class PvNames:
    """The PV suffixes (after ``P:``) and rules of one EPICS camera flavour."""

    online: str  # connects and answers a read while the camera is online
    width: str
    height: str
    image: str | None  # None: the frames do not come over Channel Access (bsread)
    online_value: str | None = None  # the online PV must read this string; None: any value will do
    stream_address: str | None = None  # string PV holding the camera's own bsread stream address, read at connect
    pulse_id: str | None = None  # counter used as the frame's pulse id; None: the instance numbers frames
    unused: tuple[str, ...] = ()  # monitored, never required, values not used


PV_NAMES: dict[str, PvNames] = {
    "epics": PvNames(online="INIT", width="WIDTH", height="HEIGHT", image="FPICTURE", online_value="INIT"),
    "area_detector": PvNames(online="cam1:Acquire", width="image1:ArraySize0_RBV", height="image1:ArraySize1_RBV",
                             image="image1:ArrayData", pulse_id="cam1:ArrayCounter_RBV",
                             unused=("cam1:ColorMode", "cam1:DataType")),
    "bsread": PvNames(online="INIT", width="WIDTH", height="HEIGHT", image=None, online_value="INIT",
                      stream_address="BSREADCONFIG"),
}

_fork_guard_installed = False


def _warn_if_forking_with_ca() -> None:
    """A forked child inherits the parent's CA context threads and sockets in a broken state."""
    import epics.ca

    if epics.ca.libca is not None:
        log.error("os.fork() in a process that holds an EPICS Channel Access context: the child must not use "
                  "EPICS; start camera processes with the multiprocessing 'spawn' or 'forkserver' method")


def configure_epics_environment() -> None:
    """Set EPICS defaults (``setdefault``: the deployment's own values win) before the first CA context exists.

    libca reads the environment once, when the context is created, so a call after the first PV has no effect.
    """
    global _fork_guard_installed
    if not _fork_guard_installed:
        os.register_at_fork(before=_warn_if_forking_with_ca)
        _fork_guard_installed = True
    changed = [key for key in EPICS_ENVIRONMENT_DEFAULTS if key not in os.environ]
    for key in changed:
        os.environ[key] = EPICS_ENVIRONMENT_DEFAULTS[key]
    import epics.ca

    if changed and epics.ca.libca is not None:
        log.warning("configure_epics_environment() set %s after Channel Access was initialised; "
                    "it takes effect only in processes started later", ", ".join(changed))


def to_camera_dtype(pixels: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, bool]:
    """Convert a received waveform to the camera dtype by the module's rules; returns (array, clipped)."""
    if pixels.dtype == dtype:
        return pixels, False
    if pixels.dtype.kind in "iu" and dtype.kind in "iu" and pixels.dtype.itemsize == dtype.itemsize:
        return pixels.view(dtype), False
    clipped = False
    if dtype.kind in "iu" and pixels.size:
        info = np.iinfo(dtype)
        low, high = pixels.min(), pixels.max()
        if pixels.dtype.kind == "f" and not (np.isfinite(low) and np.isfinite(high)):
            pixels = np.nan_to_num(pixels, nan=0.0, posinf=info.max, neginf=info.min)
            low, high = pixels.min(), pixels.max()
            clipped = True
        if low < info.min or high > info.max:
            pixels = np.clip(pixels, info.min, info.max)
            clipped = True
    return pixels.astype(dtype), clipped


def _parse_config(config: Mapping[str, Any]) -> tuple[PvNames, str, np.dtype, float]:
    source_type = config.get("source_type") or "epics"
    if source_type not in PV_NAMES:
        raise InvalidConfig(f"EPICS camera 'source_type' must be one of {', '.join(PV_NAMES)}, got {source_type!r}")
    prefix = config.get("source")
    if not isinstance(prefix, str) or not prefix.strip():
        raise InvalidConfig(f"EPICS camera 'source' must be the PV prefix (a non-empty string), got {prefix!r}")
    dtype_name = config.get("dtype") or DEFAULT_DTYPE
    try:
        dtype = np.dtype(dtype_name)
    except (TypeError, ValueError) as exc:
        raise InvalidConfig(f"camera 'dtype' {dtype_name!r} is not a numpy dtype") from exc
    if dtype.kind not in "iuf":
        raise InvalidConfig(f"camera 'dtype' {dtype_name!r} must be an integer or float type")
    timeout = config.get("connection_timeout")
    timeout = DEFAULT_CONNECTION_TIMEOUT if timeout is None else timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise InvalidConfig(f"camera 'connection_timeout' must be a positive number of seconds, got {timeout!r}")
    return PV_NAMES[source_type], prefix.strip(), dtype, float(timeout)


class EpicsCameraSource(FrameSource):
    """A :class:`~cam_server.camera.sources.base.FrameSource` reading an EPICS camera IOC over Channel Access.

    The config's ``source_type`` (``epics``, the default, ``area_detector`` or ``bsread``) picks the PV names.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.names, self.prefix, self.dtype, self.connection_timeout = _parse_config(config)
        self.last_error: str | None = None
        self.stream_address: str | None = None  # value of the stream address PV at the last connect (bsread)
        self.stats = {"received": 0, "queue_dropped": 0, "short_dropped": 0, "truncated": 0, "clipped_frames": 0,
                      "duplicates": 0, "no_pulse_id": 0}
        self._width = 0
        self._height = 0
        self._online_status: str | None = None
        self._counter: int | None = None  # latest pulse id counter value (area_detector)
        self._last_pulse_id: int | None = None
        self._last_counter: int | None = None  # the counter value the previous image was paired with
        self._pvs: dict[str, Any] = {}
        self._pv_connected: dict[str, bool] = {}
        self._frames: deque[tuple[np.ndarray, float, int, int, int | None]] = deque(maxlen=FRAME_QUEUE_SIZE)
        self._frames_ready = threading.Condition()
        self._last_picture: tuple[np.ndarray, float | None] | None = None  # the last image delivered (a reference)
        self._repeat_checks = 0  # image deliveries still checked for a repeat (the first ones of a subscription)
        self._interrupted = False
        self._opened = False
        self.reconnects = 0  # Channel Access connections that came back after a loss (pyepics reconnects itself)
        self._lost = False

    # -- FrameSource ---------------------------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Frames lost here (queue full, waveform shorter than the geometry), for the camera's statistics."""
        return self.stats["queue_dropped"] + self.stats["short_dropped"]

    def connect(self) -> None:
        """Check the online PV, read the geometry and start monitoring; raises :class:`CameraOffline`."""
        self._open_and_check(monitor=True)
        log.info("Camera with prefix %s connected: %dx%d, dtype %s", self.prefix, self._width, self._height,
                 self.dtype.name)

    def check_online(self) -> None:
        """The check :meth:`connect` starts with (online PV, geometry, stream address), then release everything.

        For "is the camera online?" without streaming it: only the checked PVs are connected, none is monitored
        (no image is transferred). Raises :class:`CameraOffline` saying why; ``connection_timeout`` bounds it.
        """
        try:
            self._open_and_check(monitor=False)
        finally:
            self.close()

    def _open_and_check(self, monitor: bool) -> None:
        """Create the PVs (``monitor``: all of them, subscribed; else only those the check reads) and check them."""
        self.close()
        configure_epics_environment()
        import epics

        callbacks = {"online": self._on_online, "width": self._on_width, "height": self._on_height}
        if self.names.pulse_id is not None:  # subscribed before the image, so its first value tends to come first
            callbacks["pulse_id"] = self._on_counter
        if self.names.image is not None:
            callbacks["image"] = self._on_picture
        if not monitor:
            callbacks = {role: None for role in ("online", "width", "height")}
        roles = [*callbacks, *(["stream_address"] if self.names.stream_address is not None else [])]
        names = {role: f"{self.prefix}:{getattr(self.names, role)}" for role in roles}
        self._pv_connected = dict.fromkeys(names.values(), False)
        self._counter = self._last_pulse_id = self._last_counter = None
        self.stream_address = None
        self._watch_for_repeats()
        # Created together so the name searches run in parallel; the image is monitored whatever its size.
        for role, name in names.items():
            self._pvs[role] = epics.PV(name, form="time", auto_monitor=monitor and role in callbacks,
                                       callback=callbacks.get(role), connection_callback=self._on_connection)
        for suffix in self.names.unused if monitor else ():  # subscribed for the record, never waited for
            self._pvs[suffix] = epics.PV(f"{self.prefix}:{suffix}", auto_monitor=True)
        self._opened = True
        try:
            self._check_online(names)
        except CameraOffline as exc:
            self.last_error = str(exc)
            self.close()
            raise
        self.last_error = None

    def geometry(self) -> tuple[int, int]:
        """Raw (width, height) as the camera currently reports it (monitored, so a resize shows up here)."""
        return self._width, self._height

    def read(self, timeout: float) -> RawFrame | None:
        """The next frame reshaped to (HEIGHT, WIDTH) in the camera dtype, or ``None`` if none came in time."""
        deadline = time.monotonic() + timeout
        while True:
            with self._frames_ready:
                while not self._frames:
                    if self._interrupted:
                        return None
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._frames_ready.wait(remaining)
                data, timestamp, width, height, pulse_id = self._frames.popleft()
            frame = self._to_frame(data, timestamp, width, height, pulse_id)
            if frame is not None:
                return frame

    def interrupt(self) -> None:
        """From any thread: a waiting :meth:`read` returns None now, and every later one too."""
        with self._frames_ready:
            self._interrupted = True
            self._frames_ready.notify_all()

    def close(self) -> None:
        """Stop monitoring and release the channels; safe to call twice."""
        if not self._opened:
            return
        self._opened = False
        for pv in self._pvs.values():
            try:
                pv.clear_callbacks()
                pv.connection_callbacks = []
                pv.disconnect()
            except Exception as exc:  # noqa: BLE001 - closing must not fail half way
                log.debug("closing %s: %r", pv.pvname, exc)
        self._pvs.clear()
        for name in self._pv_connected:
            self._pv_connected[name] = False
        with self._frames_ready:
            self._frames.clear()

    # -- state ---------------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while every camera PV the frames need has a live Channel Access connection (``unused`` aside)."""
        return self._opened and bool(self._pv_connected) and all(self._pv_connected.values())

    def health(self) -> tuple[bool, int]:
        """(connected, reconnects), for the camera's state and statistics."""
        return self.connected, self.reconnects

    @property
    def status(self) -> str:
        """One line saying what the source is doing, for logs and the instance info."""
        if not self._opened:
            return f"Camera with prefix {self.prefix} is not connected" + (
                f" (last error: {self.last_error})" if self.last_error else "")
        if not self.connected:
            return self.last_error or f"Camera with prefix {self.prefix} is connecting"
        if self._online_status is not None and self.names.online_value not in (None, self._online_status):
            return f"Camera with prefix {self.prefix} is not initialized - Status {self._online_status}"
        return f"Camera with prefix {self.prefix} is online ({self._width}x{self._height})"

    def __enter__(self) -> EpicsCameraSource:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------------------------

    def _check_online(self, names: dict[str, str]) -> None:
        deadline = time.monotonic() + self.connection_timeout

        def remaining() -> float:
            return max(deadline - time.monotonic(), 0.01)

        online = self._pvs["online"]
        status = (online.get(as_string=True, timeout=remaining(), use_monitor=False)
                  if self._wait_connected(online, remaining) else None)
        if status is None:
            raise CameraOffline(f"Camera with prefix {self.prefix} is offline")
        if self.names.online_value is not None and status != self.names.online_value:
            raise CameraOffline(f"Camera with prefix {self.prefix} is not initialized - Status {status}")
        self._online_status = status
        for role in names:
            if not self._wait_connected(self._pvs[role], remaining):
                raise CameraOffline(f"Camera with prefix {self.prefix} is offline "
                                    f"({names[role]} did not connect within {self.connection_timeout:g} s)")
        for role in [role for role in ("width", "height", "stream_address") if role in names]:
            value = self._pvs[role].get(timeout=remaining(), use_monitor=False, as_string=role == "stream_address")
            if value is None:
                raise CameraOffline(f"Camera with prefix {self.prefix} is offline "
                                    f"(no value from {names[role]} within {self.connection_timeout:g} s)")
            if role == "width":
                self._width = int(value)
            elif role == "height":
                self._height = int(value)
            else:
                self.stream_address = str(value)
        missing = [suffix for suffix in self.names.unused if suffix in self._pvs and not self._pvs[suffix].connected]
        if missing:
            log.info("Camera with prefix %s: %s not connected (monitored but unused; frames are not affected)",
                     self.prefix, ", ".join(f"{self.prefix}:{suffix}" for suffix in missing))

    def _wait_connected(self, pv: Any, remaining: Callable[[], float]) -> bool:
        """``pv.wait_for_connection`` in short slices, so a stop request (:meth:`interrupt`) or the end of the
        server ends a connect that may take up to ``connection_timeout`` (a camera not on the network)."""
        while True:
            if self._interrupted:
                raise CameraOffline(f"Camera with prefix {self.prefix}: stopped while connecting")
            left = remaining()
            if pv.wait_for_connection(min(left, CONNECT_SLICE_S)):
                return True
            if left <= CONNECT_SLICE_S:
                return False

    def _to_frame(self, data: np.ndarray, timestamp: float, width: int, height: int,
                  pulse_id: int | None) -> RawFrame | None:
        pixels = width * height
        if width <= 0 or height <= 0 or data.size < pixels:
            self.stats["short_dropped"] += 1
            if self.stats["short_dropped"] in (1, 10, 100) or self.stats["short_dropped"] % 1000 == 0:
                log.warning("Camera with prefix %s: dropped a frame of %d pixels, %dx%d needs %d (%d dropped so far)",
                            self.prefix, data.size, width, height, pixels, self.stats["short_dropped"])
            return None
        if data.size > pixels:
            self.stats["truncated"] += 1
            data = data[:pixels]
        image, clipped = to_camera_dtype(data, self.dtype)
        if clipped:
            self.stats["clipped_frames"] += 1
            if self.stats["clipped_frames"] in (1, 10, 100) or self.stats["clipped_frames"] % 1000 == 0:
                log.warning("Camera with prefix %s: %s pixels outside the %s range were saturated (%d frames)",
                            self.prefix, data.dtype.name, self.dtype.name, self.stats["clipped_frames"])
        return RawFrame(image=image.reshape(height, width), timestamp=timestamp, pulse_id=pulse_id)

    # Callbacks: run on a Channel Access thread; only bookkeeping, never CA calls.

    def _on_picture(self, value: Any = None, timestamp: float | None = None, **_: Any) -> None:
        if value is None:
            return
        data = value if isinstance(value, np.ndarray) else np.atleast_1d(np.asarray(value))
        if self._is_repeat(data, timestamp):
            return
        pulse_id = None
        if self.names.pulse_id is not None:
            pulse_id = self._next_pulse_id()
            if pulse_id is None:
                return
        entry = (data, timestamp or time.time(), self._width, self._height, pulse_id)
        with self._frames_ready:
            if len(self._frames) == self._frames.maxlen:
                self.stats["queue_dropped"] += 1
            self._frames.append(entry)
            self.stats["received"] += 1
            self._frames_ready.notify()

    def _watch_for_repeats(self) -> None:
        """A (re)subscription starts: check its first deliveries for a repeat (see :meth:`_is_repeat`)."""
        self._repeat_checks = REPEAT_CHECKS

    def _is_repeat(self, data: np.ndarray, timestamp: float | None) -> bool:
        """True for a second delivery of the image delivered last (equal pixels) early in a subscription.

        Channel Access hands a new subscription the record's current value: when it is created while the IOC posts
        an update, that update can come twice, the first time with the previous update's timestamp (seen: frame 1's
        pixels with frame 0's timestamp, then again with its own, 52 ms later); after a reconnection (or a close
        and connect) the initial value is the last image already delivered if the camera posted nothing meanwhile.
        Both happen only at the start of a subscription, so only its first deliveries are checked, by their pixels
        alone; the repeat is dropped, and the first delivery, if still queued, takes its (later) timestamp. The
        cost: a camera with a perfectly static scene loses up to ``REPEAT_CHECKS`` - 1 identical frames as a
        subscription starts, none later. The last image is kept across a loss of the connection for this (one
        reference, no copy).
        """
        last = self._last_picture
        self._last_picture = (data, timestamp)
        if self._repeat_checks <= 0:
            return False
        self._repeat_checks -= 1
        if last is None or not np.array_equal(last[0], data):
            return False
        self.stats["duplicates"] += 1
        if timestamp is not None and timestamp != last[1]:
            with self._frames_ready:  # the first delivery still waits to be read: give it the later timestamp
                if self._frames and self._frames[-1][0] is last[0]:
                    self._frames[-1] = (last[0], timestamp, *self._frames[-1][2:])
        log.debug("Camera with prefix %s: the same image was delivered twice; dropped the repeat", self.prefix)
        return True

    def _next_pulse_id(self) -> int | None:
        """The pulse id of the image just received: the latest counter value; previous id + 1 if it has not moved."""
        counter = self._counter
        if counter is None:
            self.stats["no_pulse_id"] += 1
            log.debug("Camera with prefix %s: an image before the first counter value was dropped", self.prefix)
            return None
        last = self._last_pulse_id
        pulse_id = last + 1 if last is not None and counter == self._last_counter else counter
        self._last_pulse_id, self._last_counter = pulse_id, counter
        return pulse_id

    def _on_counter(self, value: Any = None, **_: Any) -> None:
        if value is not None:
            self._counter = int(value)

    def _on_width(self, value: Any = None, **_: Any) -> None:
        if value is not None:
            self._width = int(value)

    def _on_height(self, value: Any = None, **_: Any) -> None:
        if value is not None:
            self._height = int(value)

    def _on_online(self, char_value: str | None = None, **_: Any) -> None:
        self._online_status = char_value

    def _on_connection(self, pvname: str | None = None, conn: bool = False, **_: Any) -> None:
        if pvname not in self._pv_connected:
            return
        was_connected = self.connected
        self._pv_connected[pvname] = bool(conn)
        if conn and self.names.image is not None and pvname == f"{self.prefix}:{self.names.image}":
            self._watch_for_repeats()  # pyepics subscribes again after a reconnection
        if not conn and was_connected:
            self._lost = True
            self.last_error = (f"Camera with prefix {self.prefix} disconnected ({pvname} lost); "
                               f"waiting for the IOC to come back")
            log.warning(self.last_error)
        elif conn and not was_connected and self.connected and self._lost:
            self._lost = False
            self.reconnects += 1
            log.info("Camera with prefix %s reconnected", self.prefix)
