"""The instance's input: a bsread connection to the camera (or any) stream, with timeout reconnection.

``camera_timeout`` (camera input; None or <= 0 disables it): when no message arrived for that long,
the stream address is asked again from the camera server (a restarted camera gets a new port) and the socket
reconnected. If the camera server cannot give the stream, the instance gives up with :class:`SourceUnavailable`.
``stream_timeout`` (plain ``input_stream`` input) does the same for a stream that is not a camera's:
the socket is reconnected to the same address. With ``abort_on_timeout`` either timeout ends the instance instead.
"""

from __future__ import annotations

import logging
import time

import requests
import zmq

from cam_server.bsread import Message, Source, Wakeup
from cam_server.bsread.endpoints import mode_name, receive_mode
from cam_server.common.errors import SourceUnavailable
from cam_server.pipeline.config import PipelineConfig

log = logging.getLogger(__name__)

RECEIVE_TIMEOUT_MS = 1000
INPUT_QUEUE_SIZE = 20  # messages; large frames: 20 x 11 MB already bounds memory at ~220 MB
REQUEST_TIMEOUT_S = 10.0
INPUT_KEYS = ("camera_name", "input_stream", "input_mode")


def request_camera_stream(cam_server_url: str, camera_name: str) -> str:
    """Ask the camera server to start (or keep) the camera stream and return its address."""
    url = f"{cam_server_url.rstrip('/')}/api/v1/cam/{camera_name}"
    try:
        response = requests.get(url, timeout=REQUEST_TIMEOUT_S)
        body = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise SourceUnavailable(f"Cannot reach camera server at {cam_server_url} for camera {camera_name!r}: "
                                f"{exc}") from exc
    if body.get("state") != "ok" or not body.get("stream"):
        raise SourceUnavailable(f"Camera server cannot stream camera {camera_name!r}: "
                                f"{body.get('status', response.status_code)}")
    return str(body["stream"])


class StreamInput:
    """Receives messages from one bsread stream; returns None on timeout (after handling the camera timeout)."""

    def __init__(self, address: str | None, config: PipelineConfig, cam_server_url: str | None = None,
                 receive_timeout_ms: int = RECEIVE_TIMEOUT_MS, context: zmq.Context | None = None) -> None:
        self._config = config
        self._context = context
        self._cam_server_url = cam_server_url
        self._receive_timeout_ms = receive_timeout_ms
        self.address = address
        self.reconnects = 0
        self._source: Source | None = None
        self._last_message = time.monotonic()
        self._wakeup = Wakeup()

    def interrupt(self) -> None:
        """From any thread: make a blocked :meth:`receive` (and every later one) return None at once."""
        self._wakeup.set()

    # -- config ---------------------------------------------------------------------------------------

    def update_config(self, config: PipelineConfig) -> None:
        """Take a new config; a changed input (camera_name, input_stream, input_mode) reconnects on the next
        receive, asking the camera server for the new camera's stream."""
        changed = any(getattr(config, key) != getattr(self._config, key) for key in INPUT_KEYS)
        self._config = config
        if changed:
            log.info("input changed; reconnecting")
            self.close()
            self.address = None

    @property
    def camera_name(self) -> str | None:
        """The camera to re-request on timeout (None when reading a plain stream via input_stream)."""
        if self._config.input_stream:
            return None
        return self._config.camera_name

    @property
    def timeout(self) -> float | None:
        """``camera_timeout`` for a camera input, ``stream_timeout`` for a plain stream; None when disabled."""
        timeout = self._config.camera_timeout if self.camera_name else self._config.stream_timeout
        return timeout if timeout is not None and timeout > 0 else None

    # -- connection -----------------------------------------------------------------------------------

    def connect(self) -> None:
        if self.address is None:
            self.address = self._resolve_address()
        mode = receive_mode(self._config.input_mode, "input_mode")
        self._source = Source(address=self.address, mode=mode, receive_timeout=self._receive_timeout_ms,
                              queue_size=INPUT_QUEUE_SIZE, context=self._context, wakeup=self._wakeup)
        self._source.connect()
        self._last_message = time.monotonic()
        log.info("connected to %s (%s)", self.address, mode_name(mode))

    def _resolve_address(self) -> str:
        stream = self._config.input_stream
        if stream:
            return stream
        name = self.camera_name
        if not name or not self._cam_server_url:
            raise SourceUnavailable("Pipeline has no input: set camera_name or input_stream")
        return request_camera_stream(self._cam_server_url, name)

    def reconnect(self) -> None:
        """Re-request the camera stream (when reading a camera) and reconnect; raises SourceUnavailable."""
        self.reconnects += 1
        if self._source is not None:
            self._source.disconnect()
            self._source = None
        if self.camera_name and self._cam_server_url:
            self.address = request_camera_stream(self._cam_server_url, self.camera_name)
        self.connect()

    def close(self) -> None:
        if self._source is not None:
            self._source.disconnect()
            self._source = None

    # -- receiving ------------------------------------------------------------------------------------

    def receive(self) -> Message | None:
        """Next message, or None after a receive timeout (reconnects first if the camera timeout elapsed)."""
        if self._wakeup.is_set():
            return None
        if self._source is None:
            self.connect()
        assert self._source is not None
        message = self._source.receive()
        now = time.monotonic()
        if message is not None:
            self._last_message = now
            return message
        timeout = self.timeout
        if timeout is not None and now - self._last_message > timeout and self._source.timed_out:
            if self._config.abort_on_timeout:
                raise SourceUnavailable(f"No message from {self.address} for {now - self._last_message:.1f} s "
                                        "(abort_on_timeout)")
            log.warning("no message from %s for %.1f s; reconnecting", self.address, now - self._last_message)
            self.reconnect()
        return None
