"""EPICS Channel Access camera source: frames from the ``P:FPICTURE`` waveform of a camera IOC.

PVs (``P`` = the camera config ``source``): ``P:INIT`` (online check, must read "INIT"), ``P:WIDTH`` /
``P:HEIGHT`` (raw geometry, read at connect then monitored), ``P:FPICTURE`` (monitored image waveform, one update =
one frame).

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
from collections.abc import Mapping
from typing import Any

import numpy as np

from cam_server.camera.sources.base import CameraOffline, FrameSource, RawFrame
from cam_server.common.errors import InvalidConfig

log = logging.getLogger(__name__)

DEFAULT_DTYPE = "uint16"
DEFAULT_CONNECTION_TIMEOUT = 5.0
FRAME_QUEUE_SIZE = 4  # frames kept while the consumer is busy; the oldest is dropped first
EPICS_ENVIRONMENT_DEFAULTS = {
    # A 1280x1024 int32 frame is 5 MB; CA refuses arrays above this limit (default 16 kB).
    "EPICS_CA_MAX_ARRAY_BYTES": "40000000",
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


def _parse_config(config: Mapping[str, Any]) -> tuple[str, np.dtype, float]:
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
    return prefix.strip(), dtype, float(timeout)


class EpicsCameraSource(FrameSource):
    """A :class:`~cam_server.camera.sources.base.FrameSource` reading an EPICS camera IOC over Channel Access."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.prefix, self.dtype, self.connection_timeout = _parse_config(config)
        self.last_error: str | None = None
        self.stats = {"received": 0, "queue_dropped": 0, "short_dropped": 0, "truncated": 0, "clipped_frames": 0,
                      "duplicates": 0}
        self._width = 0
        self._height = 0
        self._init_status: str | None = None
        self._pvs: dict[str, Any] = {}
        self._pv_connected: dict[str, bool] = {}
        self._frames: deque[tuple[np.ndarray, float, int, int]] = deque(maxlen=FRAME_QUEUE_SIZE)
        self._frames_ready = threading.Condition()
        self._last_picture: tuple[np.ndarray, float | None] | None = None
        self._interrupted = False
        self._opened = False

    # -- FrameSource ---------------------------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Frames lost here (queue full, waveform shorter than the geometry), for the camera's statistics."""
        return self.stats["queue_dropped"] + self.stats["short_dropped"]

    def connect(self) -> None:
        """Check ``P:INIT``, read the geometry and start monitoring; raises :class:`CameraOffline`."""
        self.close()
        configure_epics_environment()
        import epics

        names = {suffix: f"{self.prefix}:{suffix}" for suffix in ("INIT", "WIDTH", "HEIGHT", "FPICTURE")}
        callbacks = {"INIT": self._on_init, "WIDTH": self._on_width, "HEIGHT": self._on_height,
                     "FPICTURE": self._on_picture}
        self._pv_connected = dict.fromkeys(names.values(), False)
        # Created together so the name searches run in parallel; FPICTURE is monitored whatever its size.
        for suffix, name in names.items():
            self._pvs[suffix] = epics.PV(name, form="time", auto_monitor=True, callback=callbacks[suffix],
                                         connection_callback=self._on_connection)
        self._opened = True
        try:
            self._check_online(names)
        except CameraOffline as exc:
            self.last_error = str(exc)
            self.close()
            raise
        self.last_error = None
        log.info("Camera with prefix %s connected: %dx%d, dtype %s", self.prefix, self._width, self._height,
                 self.dtype.name)

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
                data, timestamp, width, height = self._frames.popleft()
            frame = self._to_frame(data, timestamp, width, height)
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
        self._last_picture = None

    # -- state ---------------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while every camera PV has a live Channel Access connection."""
        return self._opened and bool(self._pv_connected) and all(self._pv_connected.values())

    @property
    def status(self) -> str:
        """One line saying what the source is doing, for logs and the instance info."""
        if not self._opened:
            return f"Camera with prefix {self.prefix} is not connected" + (
                f" (last error: {self.last_error})" if self.last_error else "")
        if not self.connected:
            return self.last_error or f"Camera with prefix {self.prefix} is connecting"
        if self._init_status is not None and self._init_status != "INIT":
            return f"Camera with prefix {self.prefix} is not initialized - Status {self._init_status}"
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

        init = self._pvs["INIT"]
        status = (init.get(as_string=True, timeout=remaining(), use_monitor=False)
                  if init.wait_for_connection(remaining()) else None)
        if status is None:
            raise CameraOffline(f"Camera with prefix {self.prefix} is offline")
        if status != "INIT":
            raise CameraOffline(f"Camera with prefix {self.prefix} is not initialized - Status {status}")
        self._init_status = status
        for suffix in ("WIDTH", "HEIGHT", "FPICTURE"):
            pv = self._pvs[suffix]
            if not pv.wait_for_connection(remaining()):
                raise CameraOffline(f"Camera with prefix {self.prefix} is offline "
                                    f"({names[suffix]} did not connect within {self.connection_timeout:g} s)")
        for suffix in ("WIDTH", "HEIGHT"):
            value = self._pvs[suffix].get(timeout=remaining(), use_monitor=False)
            if value is None:
                raise CameraOffline(f"Camera with prefix {self.prefix} is offline "
                                    f"(no value from {names[suffix]} within {self.connection_timeout:g} s)")
            if suffix == "WIDTH":
                self._width = int(value)
            else:
                self._height = int(value)

    def _to_frame(self, data: np.ndarray, timestamp: float, width: int, height: int) -> RawFrame | None:
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
        return RawFrame(image=image.reshape(height, width), timestamp=timestamp)

    # Callbacks: run on a Channel Access thread; only bookkeeping, never CA calls.

    def _on_picture(self, value: Any = None, timestamp: float | None = None, **_: Any) -> None:
        if value is None:
            return
        data = value if isinstance(value, np.ndarray) else np.atleast_1d(np.asarray(value))
        if self._is_repeat(data, timestamp):
            return
        entry = (data, timestamp or time.time(), self._width, self._height)
        with self._frames_ready:
            if len(self._frames) == self._frames.maxlen:
                self.stats["queue_dropped"] += 1
            self._frames.append(entry)
            self.stats["received"] += 1
            self._frames_ready.notify()

    def _is_repeat(self, data: np.ndarray, timestamp: float | None) -> bool:
        """True for a second delivery of the frame just seen (same record timestamp and pixels).

        Channel Access can deliver one record update twice when a subscription is created while the IOC is posting
        it (the initial value and the posted event carry the same update). Pixels are compared only when the
        timestamps match, so the normal path costs one float comparison.
        """
        last = self._last_picture
        self._last_picture = (data, timestamp)
        if last is None or timestamp is None or last[1] != timestamp or not np.array_equal(last[0], data):
            return False
        self.stats["duplicates"] += 1
        log.debug("Camera with prefix %s: the same frame was delivered twice; dropped the repeat", self.prefix)
        return True

    def _on_width(self, value: Any = None, **_: Any) -> None:
        if value is not None:
            self._width = int(value)

    def _on_height(self, value: Any = None, **_: Any) -> None:
        if value is not None:
            self._height = int(value)

    def _on_init(self, char_value: str | None = None, **_: Any) -> None:
        self._init_status = char_value

    def _on_connection(self, pvname: str | None = None, conn: bool = False, **_: Any) -> None:
        if pvname not in self._pv_connected:
            return
        was_connected = self.connected
        self._pv_connected[pvname] = bool(conn)
        if not conn and was_connected:
            self.last_error = (f"Camera with prefix {self.prefix} disconnected ({pvname} lost); "
                               f"waiting for the IOC to come back")
            log.warning(self.last_error)
        elif conn and not was_connected and self.connected and self.last_error:
            log.info("Camera with prefix %s reconnected", self.prefix)
