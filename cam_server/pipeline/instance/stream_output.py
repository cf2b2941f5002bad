"""The instance's output: a bsread Sender (bound at the instance's endpoint, or connected to ``output_stream``)
with the pipeline's header strategy, pulse-id enforcement, record counting, no-client detection and optional
buffered (threaded) sending (``buffer_size``).

Header strategies (``create_header``):
* ``on_change`` (default): a cheap signature of the channel set (names, Python types, dtypes, shapes, list
  lengths) is compared per message; the declared channels are rebuilt only when it changes;
* ``once``: channels are declared from the first message and never again (values are converted to them);
* ``always``: channels are declared from every message.
Value mapping (README): int → int64, float → float64, str → string, list → array, None → empty value; we also
send bool as int64, bool arrays as uint8 and dicts as JSON text, which bsread cannot derive.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import zmq

from cam_server.bsread import PUB, PUSH, Sender
from cam_server.bsread.channels import ChannelError, derived_header
from cam_server.bsread.endpoints import BIND, CONNECT
from cam_server.bsread.queues import send_queue_size
from cam_server.pipeline.config import PipelineConfig

log = logging.getLogger(__name__)

BLOCK_TIMEOUT_MS = 1000


def to_bsread_value(value: Any) -> Any:
    """A value bsread can derive a channel from (see module docstring); arrays are never copied here except
    bool arrays."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, np.ndarray):
        return value.view(np.uint8) if value.dtype == np.bool_ else value
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return value


def value_signature(value: Any) -> Any:
    """What the derived channel definition depends on, computed without touching array data."""
    if isinstance(value, np.ndarray):
        return value.dtype.str, value.shape
    if isinstance(value, list):
        return list, len(value), type(value[0]) if value else None
    if isinstance(value, np.generic):
        return value.dtype.str
    return type(value)


def to_bsread_values(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: to_bsread_value(v) for name, v in values.items()}


class OutputStream:
    """Sends processed messages; ``finished`` / ``no_clients`` tell the loop when the instance should end."""

    def __init__(self, endpoint: str, config: PipelineConfig, context: zmq.Context | None = None,
                 image_bytes: int = 0) -> None:
        """``image_bytes``: of the camera's images (0: not known), to bound the default send queue in bytes (see
        :func:`send_queue_size`). Also when the messages leave the image out: a few of them cost nothing, and which
        channels go (include/exclude, a store's ``<camera>:FPICTURE``, a live change) is not known at the start."""
        mode = config.mode
        if mode not in ("PUB", "PUSH"):
            raise ValueError(f"Output mode {mode!r} is not supported by this pipeline (use PUB or PUSH)")
        self.mode = mode
        self.block = config.block
        self.queue_size = send_queue_size(config.queue_size, image_bytes)
        # A blocking send gives up after BLOCK_TIMEOUT_MS (frame counted as dropped) so that a stuck client
        # never stops the loop from seeing stop requests and config changes.
        # output_stream: send to someone else's bound socket (e.g. a fan-in pipeline) instead of binding ours.
        target = config.output_stream
        self._sender = Sender(queue_size=self.queue_size, address=target or endpoint, port=None,
                              conn_type=CONNECT if target else BIND, mode=PUSH if mode == "PUSH" else PUB,
                              block=self.block, send_timeout=BLOCK_TIMEOUT_MS if self.block else None,
                              context=context)
        self._no_client_timeout = config.no_client_timeout
        self._no_clients = threading.Event()
        self._signature: tuple | None = None
        self._declared_once = False
        self.sent = 0
        self.dropped = 0
        self.last_pulse_id: int | None = None
        self._buffer: queue.Queue | None = None
        self._buffer_thread: threading.Thread | None = None
        self.queued_max = 0  # the most messages the buffer held at once (its high-water mark)
        self._closing = False
        self.update_config(config)

    def update_config(self, config: PipelineConfig) -> None:
        """Apply the parts of a live config change the output can follow (not mode/queue_size: those need a
        new socket and are fixed at start)."""
        self.create_header = config.create_header
        self.enforce_pid = config.enforce_pid
        self.records = config.records or None  # 0: no limit
        self._buffer_size = config.buffer_size or 0

    # -- lifecycle ------------------------------------------------------------------------------------

    def open(self) -> OutputStream:
        if self._no_client_timeout > 0:
            self._sender.open(no_client_action=self._no_clients.set, no_client_timeout=self._no_client_timeout)
        else:
            self._sender.open()
        if self._buffer_size > 0:
            self._buffer = queue.Queue(self._buffer_size)
            self._buffer_thread = threading.Thread(target=self._drain, name="output-buffer", daemon=True)
            self._buffer_thread.start()
        return self

    def close(self) -> None:
        self._closing = True
        if self._buffer_thread is not None and self._buffer is not None:
            try:  # unsent buffered messages are discarded on close
                while True:
                    self._buffer.get_nowait()
            except queue.Empty:
                pass
            self._buffer.put(None)
            self._buffer_thread.join(2.0)
            if self._buffer_thread.is_alive():
                log.warning("output thread still blocked in send; leaving the socket to process exit")
                return
            self._buffer_thread = None
        self._sender.close()

    @property
    def endpoint(self) -> str:
        return self._sender.endpoint

    @property
    def client_count(self) -> int:
        return self._sender.client_count

    @property
    def bytes_sent(self) -> int:
        """Bytes of all messages sent so far (also by the buffer thread)."""
        return self._sender.bytes_sent

    @property
    def queued(self) -> int:
        """Messages waiting in the buffer (``buffer_size``; 0 without one)."""
        return self._buffer.qsize() if self._buffer is not None else 0

    @property
    def client_backlog(self) -> int:
        """Bytes the kernel holds for the slowest client (sampled once a second, see ``bsread/monitor.py``): about 0
        while every client keeps up; a full socket buffer for a client that falls behind, after which ZeroMQ drops
        its messages at the queue_size limit (PUB: silently, per client; PUSH: the send fails and is counted)."""
        return self._sender.client_backlog

    @property
    def no_clients(self) -> bool:
        """True once nobody was connected for ``no_client_timeout`` seconds (never when it is <= 0)."""
        return self._no_clients.is_set()

    @property
    def finished(self) -> bool:
        """True when ``records`` messages were sent."""
        return self.records is not None and self.sent >= self.records

    # -- sending --------------------------------------------------------------------------------------

    def send(self, values: Mapping[str, Any], pulse_id: int, timestamp: tuple[int, int] | float) -> bool:
        """Send (or buffer) one message; False if it was dropped (enforce_pid, full queue or buffer).

        Raises :class:`ChannelError` (a ValueError naming the channel) for a value bsread cannot carry.
        """
        if self.enforce_pid and self.last_pulse_id is not None and pulse_id <= self.last_pulse_id:
            self.dropped += 1
            return False
        values = to_bsread_values(values)
        if self._buffer is not None:
            try:
                self._buffer.put_nowait((values, pulse_id, timestamp))
            except queue.Full:
                self.dropped += 1
                self.queued_max = self._buffer.maxsize
                return False
            if self.queued_max < self._buffer.maxsize:  # one look at the queue per message until it was full once
                self.queued_max = max(self.queued_max, self._buffer.qsize())
            self.last_pulse_id = pulse_id
            self.sent += 1
            return True
        sent = self._send_now(values, pulse_id, timestamp)
        if sent:
            self.last_pulse_id = pulse_id
            self.sent += 1
        else:
            self.dropped += 1
        return sent

    def _send_now(self, values: dict[str, Any], pulse_id: int, timestamp: tuple[int, int] | float) -> bool:
        self._declare(values)
        return self._sender.send(values, timestamp=timestamp, pulse_id=pulse_id, check_data=False)

    def _declare(self, values: dict[str, Any]) -> None:
        strategy = self.create_header
        if strategy == "once":
            if self._declared_once:
                return
        elif strategy == "on_change":
            signature = tuple((name, value_signature(v)) for name, v in values.items())
            if signature == self._signature:
                return
            self._signature = signature
        entries = [derived_header(name, v) for name, v in values.items()]
        self._sender.encoder.set_channels(entries)
        self._declared_once = True

    @property
    def send_queue(self) -> int:
        """Messages queued per client at most (SNDHWM: the config's queue_size, the default bounded in bytes by the
        camera's image size when it was known at the start, see ``send_queue_size``)."""
        return self._sender.queue_size

    def _drain(self) -> None:
        """Buffer thread: sends queued messages in order. A blocking send that times out is retried (the buffer
        exists to hold messages until a client reads them) until the stream closes."""
        assert self._buffer is not None
        while True:
            item = self._buffer.get()
            if item is None:
                return
            try:
                while not self._send_now(*item):
                    if not self.block or self._closing:
                        self.dropped += 1
                        break
            except (ChannelError, ValueError, zmq.ZMQError) as exc:  # keep the thread: later messages still go
                log.error("buffered send of pulse %s failed: %s", item[1], exc)
                self.dropped += 1
