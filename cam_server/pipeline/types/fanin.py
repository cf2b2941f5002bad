"""``pipeline_type: fanin``: collect the results of worker pipelines and publish them in pulse-id order.

The fan-in binds a PULL socket on the port of its ``input_stream`` (the pipeline server assigns
``tcp://<host>:<port>`` when the config has none); workers connect to it with ``output_pipeline`` (or
``output_stream``) and PUSH. With ``pid_buffer`` = N > 0, up to N messages are held and the smallest pulse id is
always sent first (:class:`PidReorderBuffer`); messages older than one already sent and duplicates are dropped
(counted in ``dropped``). Held messages are released when nothing arrived for ``IDLE_FLUSH_S`` and when the
instance stops. Messages are forwarded unchanged (every channel) through the usual gates, include/exclude and
output options (a fan-in can itself write a FILE).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

import zmq

from cam_server.bsread import PULL, Message, Source, Wakeup
from cam_server.bsread.address import listen_endpoint
from cam_server.bsread.endpoints import BIND, endpoint_port
from cam_server.common.errors import InvalidConfig
from cam_server.common.process import InstanceControl
from cam_server.pipeline.config import PipelineConfig
from cam_server.pipeline.instance.input import INPUT_QUEUE_SIZE
from cam_server.pipeline.instance.loop import InstanceLoop
from cam_server.pipeline.instance.outcomes import EXIT_OK, Job
from cam_server.pipeline.instance.output import open_output
from cam_server.pipeline.instance_spec import InstanceSpec
from cam_server.pipeline.types.reorder import PidReorderBuffer
from cam_server.pipeline.types.store import StoreHandler

log = logging.getLogger(__name__)

RECEIVE_TIMEOUT_MS = 200
IDLE_FLUSH_S = 1.0


class _Late:
    """Marker handed to the handler for a message the reorder buffer dropped (so the loop counts it)."""


LATE = _Late()


def bind_endpoint(config: PipelineConfig, interface: str | None = None) -> str:
    """``tcp://<interface>:<port>`` (default ``*``) of the fan-in's ``input_stream``; clear errors for a missing
    address or SUB mode."""
    address = config.input_stream
    if not address:
        raise InvalidConfig("fanin pipeline has no input address: give input_stream (tcp://host:port) or let the "
                            "pipeline server assign one")
    if config.input_mode != "PULL":
        raise InvalidConfig("fanin pipelines receive with input_mode PULL (workers PUSH to them); "
                            f"input_mode {config.input_mode!r} is not supported")
    port = endpoint_port(address)
    if port is None:
        raise InvalidConfig(f"fanin input_stream must be tcp://host:port, got {address!r}")
    return listen_endpoint(interface, port)


class FaninInput:
    """Bound PULL input with pulse-id reordering; ``receive()`` returns the next message in order, :data:`LATE`
    for a dropped one, or None after a receive timeout."""

    def __init__(self, config: PipelineConfig, context: zmq.Context | None = None,
                 interface: str | None = None) -> None:
        self.endpoint = bind_endpoint(config, interface)
        self._context = context
        self._source: Source | None = None
        self._buffer = PidReorderBuffer(config.pid_buffer)
        self._ready: deque[Message] = deque()
        self._last_message = time.monotonic()
        self._wakeup = Wakeup()

    def interrupt(self) -> None:
        """From any thread: make a blocked :meth:`receive` (and every later one) return None at once."""
        self._wakeup.set()

    def update_config(self, config: PipelineConfig) -> None:
        size = config.pid_buffer
        if size != self._buffer.size:
            log.info("pid_buffer %d -> %d", self._buffer.size, size)
            self._ready.extend(self._buffer.flush())
            self._buffer = PidReorderBuffer(size)

    def connect(self) -> None:
        if self._source is None:
            self._source = Source(address=self.endpoint, mode=PULL, conn_type=BIND,
                                  receive_timeout=RECEIVE_TIMEOUT_MS, queue_size=INPUT_QUEUE_SIZE,
                                  context=self._context, wakeup=self._wakeup).connect()
            log.info("fan-in bound to %s (PULL), pid_buffer %d", self.endpoint, self._buffer.size)

    def close(self) -> None:
        if self._source is not None:
            self._source.disconnect()
            self._source = None

    def flush(self) -> list[Message]:
        """Everything still held, in pulse-id order (at shutdown)."""
        held = list(self._ready) + self._buffer.flush()
        self._ready.clear()
        return held

    def receive(self) -> Message | _Late | None:
        if self._ready:
            return self._ready.popleft()
        if self._wakeup.is_set():
            return None
        if self._source is None:
            self.connect()
        assert self._source is not None
        buffer = self._buffer
        while True:
            message = self._source.receive()
            now = time.monotonic()
            if message is None:
                if len(buffer) and now - self._last_message >= IDLE_FLUSH_S:
                    self._ready.extend(buffer.flush())  # the workers are idle: nothing older can still come
                    return self._ready.popleft()
                return None
            self._last_message = now
            dropped = buffer.dropped
            self._ready.extend(buffer.push(message.data.pulse_id, message))
            if buffer.dropped != dropped:
                log.debug("dropped late or duplicate pulse id %s", message.data.pulse_id)
                return LATE
            if self._ready:
                return self._ready.popleft()


class FaninHandler(StoreHandler):
    """Forwards messages like a store pipeline; late ones are dropped (counted by the loop)."""

    def prepare(self, message: Message | _Late) -> Job | None:  # type: ignore[override]
        if message is LATE:
            return None
        return super().prepare(message)  # type: ignore[arg-type]


def run_fanin_pipeline(control: InstanceControl, spec: InstanceSpec) -> int:
    """Receive from the workers, reorder, publish; held messages are sent before the instance ends."""
    config = spec.config
    handler = FaninHandler(config)
    context = zmq.Context(io_threads=2)
    source = FaninInput(config, context, spec.stream_interface)
    output = open_output(spec, context)
    try:
        source.connect()
        loop = InstanceLoop(control, handler, source, output, config.processing_threads)  # type: ignore[arg-type]
        loop.run()
        if not output.finished:
            _send_held(handler, source, output)
    finally:
        source.close()
        output.close()
        context.destroy(linger=1000)
    return EXIT_OK


def _send_held(handler: FaninHandler, source: FaninInput, output: Any) -> None:
    held = source.flush()
    for message in held:
        try:
            job = handler.prepare(message)
            if job is not None:
                values = job.compute()
                if values is not None:
                    output.send(values, job.pulse_id, job.timestamp)
        except Exception as exc:  # noqa: BLE001 - best effort at shutdown
            log.warning("held message %s not sent: %s", message.data.pulse_id, exc)
            continue
        if output.finished:
            break
    if held:
        log.info("sent %d held messages at shutdown", len(held))
