"""The camera input through shared memory: frames of a camera on this host read in place (docs/shared_memory.md).

Why: receiving an 11 MB image through a socket costs the kernel two copies and the pipeline a page-faulting buffer
per frame; a camera instance on the same host writes each image once into its ring (``common/frame_ring.py``) and
announces it on an ``ipc://`` socket (``camera/shared_frames.py``). This input asks the camera server for that path
(``GET /api/v1/cam/<name>/shared_memory``) instead of the stream address, and uses it when the camera server's
``host_id`` is ours; otherwise (another host, a server with ``--shared_memory off``, an older camera server) it
reads the bsread stream like :class:`StreamInput`, which it extends: the receiving thread, queue, timeouts and
reconnections are the same, only the messages differ.

The image of an announced frame is a read-only view of its slot. A :class:`FrameLease` rides on the message
(``message.data.lease``); the loop wraps the frame's compute step with :meth:`FrameLease.guard`, which copies output
arrays that are views of the slot and then checks the slot's sequence number: a frame overwritten while it was used
is dropped and counted (``dropped_overwritten``), its results never leave.

A frame is copied out of its slot (and checked) as it is taken instead, when using it in place would risk it:
with ``averaging`` (the average keeps what it took), when the frame is already half a ring behind the camera (a
backlog in the input queue), and for :data:`COPY_MODE_S` after a frame was overwritten while in use (a function
slower than the ring is long). A slow pipeline so loses no more frames than on the bsread stream; a pipeline that
keeps up reads every frame in place.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
import zmq

from cam_server.bsread import Message
from cam_server.bsread.message import Value
from cam_server.common.frame_ring import Lease, RingReader, host_id
from cam_server.common.process import INPUT_PATHS, SharedStats
from cam_server.pipeline.config import PipelineConfig
from cam_server.pipeline.instance.input import REQUEST_TIMEOUT_S, StreamInput, request_camera_stream
from cam_server.pipeline.instance.outcomes import FrameOverwritten, ProcessingError
from cam_server.pipeline.instance_spec import InstanceSpec

log = logging.getLogger(__name__)

# The announcement's slot channels (camera/shared_frames.py; not imported: the pipeline side does not import the
# camera package).
SLOT, SEQ, GENERATION, WRITER = "__shm_slot", "__shm_seq", "__shm_generation", "__shm_writer"
BSREAD, SHARED_MEMORY = INPUT_PATHS.index("bsread"), INPUT_PATHS.index("shared_memory")
COPY_MODE_S = 10.0  # after a frame was overwritten while in use, frames are copied as they are taken for this long


class FrameLease:
    """A frame read in place: its slot must still hold it when the results are complete."""

    __slots__ = ("_reader", "_lease", "_counter")

    def __init__(self, reader: RingReader, lease: Lease, counter: SharedMemoryInput) -> None:
        self._reader, self._lease, self._counter = reader, lease, counter

    def valid(self) -> bool:
        return self._lease.valid()

    def guard(self, compute: Callable[[], dict[str, Any] | None]) -> Callable[[], dict[str, Any] | None]:
        """``compute`` whose output holds no view of the slot, checked after use (raises
        :class:`FrameOverwritten` for a frame overwritten meanwhile, also when it made the computation fail)."""

        def checked() -> dict[str, Any] | None:
            try:
                values = compute()
            except ProcessingError:
                if not self._lease.valid():
                    self._counter.overwritten(in_use=True)
                    raise FrameOverwritten() from None
                raise
            if values is not None:
                contains = self._reader.contains
                for name, value in values.items():
                    if contains(value):  # sent after the check: it must not change under the output
                        values[name] = value.copy()
            if not self._lease.valid():
                self._counter.overwritten(in_use=True)
                raise FrameOverwritten()
            return values

        return checked


class SharedMemoryInput(StreamInput):
    """A camera input that takes the camera's shared-memory path when it can (see the module docstring)."""

    def __init__(self, spec: InstanceSpec, context: zmq.Context | None = None) -> None:
        # No address yet: the first connection asks the camera server which path to take.
        super().__init__(None, spec.config, spec.cam_server_url, context=context)
        self._host_id = host_id()
        self._ring: str | None = None  # the ring base negotiated for the current connection (receiving thread)
        self._reader: RingReader | None = None  # the mapped generation (loop's thread)
        self.dropped_overwritten = 0  # counted by the loop's thread and the compute threads (a rare event: a lock)
        self._count_lock = threading.Lock()
        self._copy_until = 0.0  # monotonic time until which frames are copied as they are taken
        self._first_request = spec.camera_stream is not None  # the pipeline server reserved the stream for us
        self._use_shared_memory = True  # False once a ring could not be mapped
        self._path = 0
        self._path_stats: SharedStats | None = None

    def attach(self, stats: SharedStats, report: Callable[[str], None]) -> None:
        super().attach(stats, report)
        stats.set("input_path", 0)  # not known before the first frame
        self._path_stats = stats

    def overwritten(self, in_use: bool = False) -> None:
        """Count a frame whose slot was overwritten before (or, ``in_use``, while) it was used; after the latter,
        frames are copied as they are taken for a while (see the module docstring)."""
        with self._count_lock:
            self.dropped_overwritten += 1
        if in_use:
            self._copy_until = time.monotonic() + COPY_MODE_S

    # -- negotiation (receiving thread) ------------------------------------------------------------------

    def _request_stream(self, cam_server_url: str, camera_name: str) -> tuple[str, str | None]:
        """The announcements' address when the camera offers shared memory on this host, else the stream's; and
        the reservation held until our first frame."""
        url = f"{cam_server_url.rstrip('/')}/api/v1/cam/{camera_name}/shared_memory"
        # The first request: the pipeline server reserved the stream for this instance already (and releases it
        # once we received a frame); later ones (a restarted camera) hold a reservation of their own.
        params = {"reserve": "false" if self._first_request else "true"}
        self._first_request = False
        try:
            response = requests.get(url, params=params, timeout=REQUEST_TIMEOUT_S)
            body = response.json()
        except (requests.RequestException, ValueError):
            body = None
        if not isinstance(body, dict) or body.get("state") != "ok" or not body.get("stream"):
            self._ring = None  # an older camera server, or an error the plain request reports clearly
            return request_camera_stream(cam_server_url, camera_name)
        reservation = None if body.get("reservation") is None else str(body["reservation"])
        offer = body.get("shared_memory") if self._use_shared_memory else None
        if isinstance(offer, dict) and offer.get("host_id") == self._host_id and offer.get("ring") \
                and offer.get("announce"):
            self._ring = str(offer["ring"])
            log.info("camera %s: frames through shared memory (%s)", camera_name, self._ring)
            return str(offer["announce"]), reservation
        self._ring = None
        log.info("camera %s: frames through the bsread stream (%s)", camera_name,
                 "shared memory not offered" if not offer else "another host")
        return str(body["stream"]), reservation

    # -- receiving (loop's thread) -----------------------------------------------------------------------

    def receive(self) -> Message | None:
        while True:
            message = super().receive()
            if message is None:
                return None
            values = message.data.data
            slot = values.pop(SLOT, None)
            if slot is None:  # a bsread stream message
                self._show_path(BSREAD)
                return message
            seq, generation, writer = (values.pop(name, None) for name in (SEQ, GENERATION, WRITER))
            if self._attach_image(message, slot.value, seq, generation, writer):
                self._show_path(SHARED_MEMORY)
                return message
            self.overwritten()  # overwritten (or its ring gone) before it was taken

    def _attach_image(self, message: Message, slot: Any, seq: Value | None, generation: Value | None,
                      writer: Value | None) -> bool:
        """Put the slot's image into ``message`` (a read-only view) with its lease; False when it is gone."""
        ring = self._ring
        spec = message.data.channel("image")
        if ring is None or seq is None or generation is None or spec is None or spec.shape is None:
            return False
        if writer is not None and not ring.endswith(f"-{int(writer.value)}"):
            return False  # queued before a reconnection to another camera instance
        reader = self._reader
        if reader is None or reader.base != ring or reader.generation != int(generation.value):
            try:
                reader = self._reader = RingReader(ring, int(generation.value))
            except OSError as exc:  # not ours to read after all: the bsread stream from now on
                log.warning("cannot map frame ring %s (%s): reading the bsread stream instead", ring, exc)
                self._reader = None
                self._use_shared_memory = False
                self._input_changed = True  # the receiving thread reconnects, asking for the stream
                return False
        lease = reader.lease(int(slot), int(seq.value))
        if lease is None:
            return False
        image = reader.image(lease, spec.dtype, spec.numpy_shape)
        if image is None:
            return False
        if self._config.averaging or reader.behind(lease) >= reader.slots // 2 \
                or time.monotonic() < self._copy_until:  # at risk in place: take a checked copy
            image = image.copy()
            if not lease.valid():
                return False
        else:
            message.data.lease = FrameLease(reader, lease, self)  # type: ignore[attr-defined]
        data = message.data
        data.data["image"] = Value(image, data.global_timestamp, data.global_timestamp_offset)
        return True

    def _show_path(self, path: int) -> None:
        if path != self._path:
            self._path = path
            if self._path_stats is not None:
                self._path_stats.set("input_path", path)


def wants_shared_memory(config: PipelineConfig) -> bool:
    """The config's own switch: the key ``shared_memory`` (not among the defaults, so expanded configs stay as
    they were) set to false or "off" keeps this pipeline on the bsread stream."""
    value = (config.model_extra or {}).get("shared_memory", True)
    return value not in (False, 0, "off", "false")


def camera_input(spec: InstanceSpec, context: zmq.Context | None = None) -> StreamInput:
    """The input of a camera pipeline: through shared memory when the server and the config allow it and the config
    reads a camera (not an ``input_stream``), else the bsread stream."""
    config = spec.config
    if spec.shared_memory and wants_shared_memory(config) and not config.input_stream and config.camera_name \
            and spec.cam_server_url and os.path.isdir("/dev/shm"):
        return SharedMemoryInput(spec, context)
    return StreamInput(spec.camera_stream, spec.config, spec.cam_server_url, context=context)
