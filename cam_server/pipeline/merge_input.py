"""Camera input merged with a bsread data stream by pulse id (processing pipelines with ``bsread_address``).

:class:`MergedInput` wraps the instance's camera :class:`StreamInput`: a :class:`BsreadDataReceiver` thread reads
``bsread_address`` (``bsread_mode``, PULL by default) and a :class:`PulseMatcher` pairs each camera frame with the
data message of the same pulse id (buffers ``bsread_image_buf`` / ``bsread_data_buf``). ``receive()`` returns only
matched frames, as :class:`MergedMessage` whose ``merged`` dict holds the selected data channels (all channels of
the data message when ``bsread_channels`` is None). Frames without data are dropped and counted (``dropped``).

The merge happens at the input, before the sequential gates (pause, pid_range, downsampling, max_frame_rate), so
those gates see matched frames only and never pass a frame that would then be dropped for lack of data.
Reading ``bsread_channels`` from a dispatcher (no ``bsread_address``) is not supported.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cam_server.bsread import Message
from cam_server.common.errors import InvalidConfig
from cam_server.pipeline.merge import (
    DEFAULT_DATA_BUF,
    DEFAULT_IMAGE_BUF,
    BsreadDataReceiver,
    PulseMatcher,
    default_bsread_mode,
)

log = logging.getLogger(__name__)

MERGE_KEYS = ("bsread_address", "bsread_channels", "bsread_mode", "bsread_image_buf", "bsread_data_buf")
MAX_RECEIVE_S = 1.0  # longest receive() keeps reading unmatched frames before returning None (loop housekeeping)


@dataclass
class MergedMessage(Message):
    """A camera message paired with the bsread data of its pulse id (``merged``: channel name → value)."""

    merged: dict[str, Any] = field(default_factory=dict)


def merge_configured(config: dict[str, Any]) -> bool:
    return bool(config.get("bsread_address") or config.get("bsread_channels"))


class _Pairs:
    """The matcher plus the queue of completed pairs, under one lock so pairs are queued in pulse-id order even
    when the data thread and the camera thread complete them at the same moment."""

    def __init__(self, matcher: PulseMatcher) -> None:
        self.matcher = matcher
        self.ready: collections.deque[tuple[Message, dict[str, Any]]] = collections.deque()
        self.lock = threading.Lock()

    def add_image(self, pulse_id: int, message: Message) -> None:
        with self.lock:
            self.ready.extend(self.matcher.add_image(pulse_id, message))

    def add_data(self, pulse_id: int, data: dict[str, Any]) -> None:  # called by BsreadDataReceiver
        with self.lock:
            self.ready.extend(self.matcher.add_data(pulse_id, data))

    def pop(self) -> tuple[Message, dict[str, Any]] | None:
        with self.lock:
            return self.ready.popleft() if self.ready else None


class MergedInput:
    """A :class:`StreamInput` whose messages are paired with bsread data; other attributes are the inner input's."""

    def __init__(self, inner: Any, config: dict[str, Any]) -> None:
        self._inner = inner
        self._config: dict[str, Any] = {}
        self._receiver: BsreadDataReceiver | None = None
        self._pairs: _Pairs | None = None
        self._dropped_before = 0  # drops of matchers replaced by a config change
        self._configure(config)

    # -- config ---------------------------------------------------------------------------------------

    def _configure(self, config: dict[str, Any]) -> None:
        address = config.get("bsread_address")
        channels = config.get("bsread_channels")
        if not address:
            raise InvalidConfig(f"bsread_channels {channels!r} without bsread_address would read from the dispatcher, "
                                "which is not supported: set bsread_address to the bsread stream to merge "
                                "(e.g. tcp://host:port)")
        mode = config.get("bsread_mode") or default_bsread_mode(address)
        image_buf = config.get("bsread_image_buf") or DEFAULT_IMAGE_BUF
        data_buf = config.get("bsread_data_buf") or DEFAULT_DATA_BUF
        try:
            pairs = _Pairs(PulseMatcher(image_buf, data_buf))
            receiver = BsreadDataReceiver(address, mode, channels, pairs)  # type: ignore[arg-type]
        except ValueError as exc:
            raise InvalidConfig(f"Invalid bsread merge config: {exc}") from None
        old = self._receiver
        if old is not None:
            old.stop()
            assert self._pairs is not None
            self._dropped_before += self._pairs.matcher.dropped_images
        self._pairs, self._receiver, self._config = pairs, receiver, dict(config)
        if old is not None:
            receiver.start()
        log.info("merging bsread data from %s (%s, channels %s)", address, mode, channels or "all")

    def update_config(self, config: dict[str, Any]) -> None:
        """Pass the config on; a changed merge setting restarts the data receiver with fresh buffers."""
        self._inner.update_config(config)
        if any(config.get(key) != self._config.get(key) for key in MERGE_KEYS):
            self._configure(config)
        else:
            self._config = dict(config)

    # -- stream ---------------------------------------------------------------------------------------

    def connect(self) -> None:
        self._inner.connect()
        assert self._receiver is not None
        if not self._receiver.is_alive():
            self._receiver.start()

    def receive(self) -> MergedMessage | None:
        """The next matched frame, or None when none is ready within about a camera receive timeout."""
        pairs = self._pairs
        assert pairs is not None
        deadline = time.monotonic() + MAX_RECEIVE_S
        while True:
            pair = pairs.pop()
            if pair is not None:
                return _merged(*pair)
            message = self._inner.receive()
            if message is not None:
                pairs.add_image(message.data.pulse_id, message)
                pair = pairs.pop()
                if pair is not None:
                    return _merged(*pair)
            if message is None or time.monotonic() > deadline:
                return None

    @property
    def dropped(self) -> int:
        """Camera frames dropped for lack of matching data (buffer overflow, older than the last match)."""
        assert self._pairs is not None
        return self._dropped_before + self._pairs.matcher.dropped_images

    @property
    def matcher(self) -> PulseMatcher:
        assert self._pairs is not None
        return self._pairs.matcher

    def close(self) -> None:
        if self._receiver is not None:
            self._receiver.stop()
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)


def _merged(message: Message, data: dict[str, Any]) -> MergedMessage:
    return MergedMessage(data=message.data, statistics=message.statistics, merged=data)
