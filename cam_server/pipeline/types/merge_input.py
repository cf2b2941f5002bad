"""Camera input merged with a bsread data stream by pulse id (processing pipelines with ``bsread_address``).

:class:`MergedInput` wraps the instance's camera :class:`StreamInput`: a :class:`BsreadDataReceiver` thread reads
``bsread_address`` (``bsread_mode``, PULL by default) and a :class:`PulseMatcher` pairs each camera frame with the
data message of the same pulse id (buffers ``bsread_image_buf`` / ``bsread_data_buf``). ``receive()`` returns only
matched frames, as :class:`MergedMessage` whose ``merged`` dict holds the selected data channels (all channels of
the data message when ``bsread_channels`` is None). Frames without data are dropped and counted (``dropped``).

The merge happens at the input, before the sequential gates (pause, pid_range, downsampling, max_frame_rate), so
those gates see matched frames only and never pass a frame that would then be dropped for lack of data.
Every processing instance's input is wrapped, so merging can be switched on, changed and off by live config
updates; without ``bsread_address`` frames pass straight through. Reading ``bsread_channels`` from a dispatcher
(no ``bsread_address``) is not supported (refused by the config validation, and here).
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
from cam_server.pipeline.config import DISPATCHER_NOT_SUPPORTED, PipelineConfig
from cam_server.pipeline.types.merge import BsreadDataReceiver, PulseMatcher, default_bsread_mode

log = logging.getLogger(__name__)

MERGE_KEYS = ("bsread_address", "bsread_channels", "bsread_mode", "bsread_image_buf", "bsread_data_buf")
MAX_RECEIVE_S = 1.0  # longest receive() keeps reading unmatched frames before returning None (loop housekeeping)


@dataclass
class MergedMessage(Message):
    """A camera message paired with the bsread data of its pulse id (``merged``: channel name → value)."""

    merged: dict[str, Any] = field(default_factory=dict)


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

    def __init__(self, inner: Any, config: PipelineConfig) -> None:
        self._inner = inner
        self._config = config
        self._receiver: BsreadDataReceiver | None = None
        self._pairs: _Pairs | None = None
        self._dropped_before = 0  # drops of matchers replaced by a config change
        self._connected = False
        self._configure(config)

    # -- config ---------------------------------------------------------------------------------------

    def _configure(self, config: PipelineConfig) -> None:
        address = config.bsread_address
        channels = config.bsread_channels
        if not address:
            if channels:
                raise InvalidConfig(DISPATCHER_NOT_SUPPORTED)
            self._disable()
            self._config = config
            return
        mode = config.bsread_mode or default_bsread_mode(address)
        try:
            pairs = _Pairs(PulseMatcher(config.bsread_image_buf, config.bsread_data_buf))
            receiver = BsreadDataReceiver(address, mode, channels, pairs)  # type: ignore[arg-type]
        except ValueError as exc:
            raise InvalidConfig(f"Invalid bsread merge config: {exc}") from None
        restart = self._connected
        self._disable()
        self._pairs, self._receiver, self._config = pairs, receiver, config
        if restart:
            receiver.start()
        log.info("merging bsread data from %s (%s, channels %s)", address, mode, channels or "all")

    def _disable(self) -> None:
        """Stop the data receiver (if any) and forget its buffers; frames then pass straight through."""
        if self._receiver is not None:
            self._receiver.stop()
            log.info("bsread merge stopped")
        if self._pairs is not None:
            self._dropped_before += self._pairs.matcher.dropped_images
        self._receiver = self._pairs = None

    def update_config(self, config: PipelineConfig) -> None:
        """Pass the config on; a changed merge setting restarts the data receiver with fresh buffers."""
        self._inner.update_config(config)
        if any(getattr(config, key) != getattr(self._config, key) for key in MERGE_KEYS):
            try:
                self._configure(config)
            except InvalidConfig as exc:  # the server validates configs first; keep merging as before
                log.error("bsread merge settings not applied: %s", exc)
        else:
            self._config = config

    # -- stream ---------------------------------------------------------------------------------------

    def connect(self) -> None:
        self._inner.connect()
        self._connected = True
        if self._receiver is not None and not self._receiver.is_alive():
            self._receiver.start()

    def receive(self) -> Message | None:
        """The next matched frame, or None when none is ready within about a camera receive timeout (without
        merging: the next camera message)."""
        pairs = self._pairs
        if pairs is None:
            return self._inner.receive()
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
        return self._dropped_before + (self._pairs.matcher.dropped_images if self._pairs is not None else 0)

    @property
    def matcher(self) -> PulseMatcher | None:
        return self._pairs.matcher if self._pairs is not None else None

    def close(self) -> None:
        self._disable()
        self._connected = False
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)


def _merged(message: Message, data: dict[str, Any]) -> MergedMessage:
    return MergedMessage(data=message.data, statistics=message.statistics, merged=data)
