"""The camera instance process: read frames from the source, transform, publish; one process per camera.

Runs as the target of :class:`~cam_server.common.process.InstanceProcess`. Lifecycle signals to the parent:

* ``stats.start_time`` is set once the source is connected and the stream is bound (the parent waits for it);
* a source that cannot connect (offline EPICS camera, bad address) is reported through the error queue and the
  process exits with :data:`EXIT_SOURCE_OFFLINE`;
* the sender's no-client monitor ends the loop after ``no_client_timeout`` seconds without clients, unless a
  client was promised the stream and has not connected yet (:meth:`InstanceControl.reserve
  <cam_server.common.process.InstanceControl.reserve>`: the server's answer to a stream request reserves it, so a
  slow-starting pipeline does not find the camera gone); the reason is reported (``exit_reason``);
* ``statistics.state`` says what it does (``streaming``, ``waiting for source`` when nothing arrived for
  ``RATE_STALE_S``, ``reconnecting`` while the source's connection is down or being replaced, ``stopping``), and
  the source's own counters (dropped, restarts of its pulse ids, reconnections) are copied into the statistics
  every ``CHECK_INTERVAL_S`` and on every idle wake-up, not per frame.

The server validates every config it hands the instance: the instance gets :class:`CameraConfig` models (at start
and with each live change), never dicts to parse. Live config changes (``control.poll_config()``) apply from the
next frame; changes of source keys (:data:`~cam_server.camera.config.SOURCE_KEYS`) reconnect the source in place,
without a new process.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from typing import Any

import numpy as np

from cam_server.bsread.address import listen_endpoint
from cam_server.bsread.queues import send_queue_size
from cam_server.camera.config import SOURCE_KEYS, CameraConfig
from cam_server.camera.sources.base import CameraOffline, FrameSource
from cam_server.common.process import (
    RATE_STALE_S,
    InstanceControl,
    MemoryTrimmer,
    RateMeter,
    SharedStats,
    configure_memory,
    freeze_gc,
    refreeze_gc,
)
from cam_server.processing.camera_transforms import camera_geometry

log = logging.getLogger(__name__)

EXIT_SOURCE_OFFLINE = 3
EXIT_ERROR = 1
READ_TIMEOUT = 0.2  # seconds; bounds how late a stop request or config change is seen
CHECK_INTERVAL_S = 0.25  # while frames flow: how often counters, clients and the state are brought up to date


# Not "/tmp/cam_server": a folder of that name would shadow the package for scripts run from /tmp.
IPC_FOLDER = os.path.join(tempfile.gettempdir(), "cam_server-ipc")


def ipc_address(name: str, port: int) -> str:
    return f"ipc://{IPC_FOLDER}/{name}-{port}"


ANNOUNCE_PREFIX = "shm-"  # the announcement socket files: <IPC_FOLDER>/shm-<camera instance pid>


def announce_address(instance_pid: int) -> str:
    """Where a camera instance announces the frames it writes to shared memory (``camera/shared_frames.py``)."""
    return f"ipc://{IPC_FOLDER}/{ANNOUNCE_PREFIX}{instance_pid}"


def bind_address(config: CameraConfig, port: int, interface: str | None = None) -> str:
    """The endpoint the instance binds (tcp on ``interface``, default all interfaces, or an ipc path)."""
    if config.protocol == "ipc":
        os.makedirs(IPC_FOLDER, exist_ok=True)
        return ipc_address(config.name or "camera", port)
    return listen_endpoint(interface, port)


def _image_bytes(config: CameraConfig, source: FrameSource) -> int:
    """Bytes of the images the camera will send, from the raw size the source reports now (binning, rotation and
    ROI applied, as the publisher will); 0 when the source does not know its size yet."""
    try:
        width, height = camera_geometry(*source.geometry(), rotate=config.rotate, binning_x=config.binning_x,
                                        binning_y=config.binning_y, roi=config.roi)
        return max(0, int(width) * int(height)) * np.dtype(config.dtype).itemsize
    except (TypeError, ValueError, AttributeError):
        return 0


def _connect_source(config: CameraConfig, control: InstanceControl) -> FrameSource:
    """The connected source; a stop request (or the server's end) interrupts a connect still waiting for the
    camera, which may take up to its ``connection_timeout``."""
    from cam_server.camera.sources.factory import create_source

    source = create_source(config)
    control.on_stop(source.interrupt)
    source.connect()
    return source


def run_camera_instance(control: InstanceControl, config: CameraConfig, port: int,
                        log_level: int = logging.WARNING, interface: str | None = None,
                        shared_memory: tuple[int, int] | None = None) -> None:
    """Instance process entry point (module level: forkserver pickles it by reference). ``shared_memory``: (camera
    server pid, ring slots) to also offer frames through shared memory (``camera/shared_frames.py``)."""
    configure_memory()
    logging.basicConfig(level=log_level, format=f"%(asctime)s camera[{config.name}] %(levelname)s "
                                                  "%(name)s: %(message)s")
    try:
        source = _connect_source(config, control)
    except CameraOffline as exc:
        control.report_error(str(exc))
        raise SystemExit(EXIT_SOURCE_OFFLINE) from None
    except Exception as exc:  # noqa: BLE001 - any failure must reach the parent as a readable message
        log.exception("camera instance failed to start")
        control.report_error(f"Cannot start camera '{config.name}': {exc}")
        raise SystemExit(EXIT_SOURCE_OFFLINE) from None
    try:
        _stream(control, config, source, port, interface, shared_memory)
    except Exception as exc:  # noqa: BLE001
        log.exception("camera instance failed")
        control.report_error(f"Camera '{config.name}' stopped: {type(exc).__name__}: {exc}")
        raise SystemExit(EXIT_ERROR) from None


def _stream(control: InstanceControl, config: CameraConfig, source: FrameSource, port: int,
            interface: str | None = None, shared_memory: tuple[int, int] | None = None) -> None:
    from cam_server.bsread import PUB, Sender
    from cam_server.camera.publisher import CameraPublisher
    from cam_server.camera.shared_frames import SharedFrames

    no_clients = threading.Event()
    timeout = config.no_client_timeout
    # The send queue bounded in bytes from the size the source reports now (simulation, EPICS; a bsread camera's size
    # is known only from its first frame: the default count then). Fixed for the stream's life (send_queue_size).
    frame_bytes = _image_bytes(config, source)
    sender = Sender(queue_size=send_queue_size(config.queue_size, frame_bytes), port=None,
                    address=bind_address(config, port, interface), mode=PUB, block=False)
    shared = SharedFrames(shared_memory[0], config.name or "camera", shared_memory[1]) if shared_memory else None

    def no_client() -> None:  # neither a stream client nor a shared-memory reader (each socket's monitor asks)
        if sender.client_count == 0 and (shared is None or shared.client_count == 0):
            no_clients.set()

    sender.open(no_client_action=no_client if timeout > 0 else None,
                no_client_timeout=timeout if timeout > 0 else None)
    if shared is not None:
        shared.open(no_client_action=no_client if timeout > 0 else None,
                    no_client_timeout=timeout if timeout > 0 else None)
    stats = control.stats
    stats.set("send_queue", sender.queue_size)  # fixed for the stream's life
    stats.set("frame_bytes", frame_bytes)  # before start_time: a pipeline server reserving the stream reads it
    rate = RateMeter(stats)
    rate_in = RateMeter(stats, "rate_in", throughput_field=None)
    publisher = CameraPublisher(sender, config, shared)
    counters = _SourceCounters(stats)
    trimmer = MemoryTrimmer()
    latency = control.histograms.latency  # GET /metrics: frame timestamp → sent, per frame
    connections = 0  # the sender's count of client connections at the last check
    frame_shape = None  # the publisher's, as last written to the statistics
    current = [source]  # the source a config change may replace; a stop request interrupts whichever is current

    def stop_requested() -> None:
        stats.set_state("stopping")
        current[0].interrupt()

    control.on_stop(stop_requested)
    stats.set("start_time", time.time())
    stats.set_state("waiting for source")
    streaming = False  # the state shown is "streaming"
    last_frame = next_check = 0.0
    log.info("camera %s streaming on %s", config.name, sender.endpoint)
    freeze_gc()  # the source, sockets and publisher are long-lived
    try:
        while not control.should_stop():
            if no_clients.is_set():
                stats.set_state("stopping")  # before looking at reservations (the server looks the other way)
                connections = _note_connections(control, _connections(sender, shared), connections)
                if not control.held():
                    log.info("camera %s: no clients for %.1f s, stopping", config.name, timeout)
                    control.report_exit_reason(f"no clients for {timeout:g} s")
                    break
                no_clients.clear()  # a client was promised the stream: wait for it (the monitor asks again)
                streaming = False
            new = control.poll_config()
            if new is not None:
                config, source = _apply_config(config, new, source, publisher, stats, control)
                replaced, current[0] = source is not current[0], source
                if replaced:
                    counters.reset()
                    streaming = False
                    refreeze_gc()  # the replaced source was frozen with the set-up
                if control.should_stop():  # a stop that arrived while the source was replaced woke the old one
                    break
            frame = source.read(READ_TIMEOUT)
            now = time.monotonic()
            if frame is None or now >= next_check:  # not per frame: counters, clients, state and stale rates
                next_check = now + CHECK_INTERVAL_S
                connected = counters.update(source)
                connections = _note_connections(control, _connections(sender, shared), connections)
                stats.set("clients", sender.client_count + (shared.client_count if shared is not None else 0))
                # The slowest client's lag, in bytes the kernel holds for it: a stream client's frames, or a local
                # reader's announcements (the high-water mark of the camera's hop, sampled once a second).
                stats.set("output_backlog", max(sender.client_backlog,
                                                shared.client_backlog if shared is not None else 0))
                trimmer.check(now)
                if frame is None:
                    state = ("reconnecting" if not connected else
                             "streaming" if last_frame and now - last_frame <= RATE_STALE_S else "waiting for source")
                    streaming = state == "streaming"
                    stats.set_state(state)
                    rate.expire(RATE_STALE_S)
                    rate_in.expire(RATE_STALE_S)
            if frame is None:
                continue
            last_frame = now
            if not streaming:
                streaming = True
                stats.set_state("streaming")
            stats.add("frames_in")
            rate_in.tick()
            try:
                sent = publisher.publish(frame)
            except ValueError as exc:  # a frame the transforms or encoder refuse (e.g. ROI outside the image)
                stats.add("errors")
                control.report_error(f"Camera '{config.name}': frame not sent: {exc}")
                continue
            if sent:
                rate.sent(sender.bytes_sent + (shared.bytes_sent if shared is not None else 0))
                age = time.time() - frame.timestamp
                latency.observe(age if age > 0.0 else 0.0)
            else:
                stats.add("dropped")
            if publisher.frame_shape is not frame_shape:  # a new layout (geometry, dtype, channels)
                frame_shape = publisher.frame_shape
                if frame_shape is not None:
                    stats.set("frame_height", frame_shape[0])
                    stats.set("frame_width", frame_shape[1])
                    stats.set("frame_bytes", publisher.frame_bytes)
    finally:
        stats.set_state("stopping")
        sender.close()
        if shared is not None:
            shared.close()  # unlinks the ring (a killed instance's ring is removed by its server)
        source.close()


def _connections(sender: Any, shared: Any) -> int:
    """Client connections made so far, to the stream and to the shared-memory announcements."""
    return sender.connections + (shared.connections if shared is not None else 0)


def _note_connections(control: InstanceControl, count: int, before: int) -> int:
    """Client connections made since ``before`` take up stream reservations; returns ``count``."""
    if count > before:
        control.clients_connected(count - before)
    return count


class _SourceCounters:
    """Copies a source's own counters into the shared statistics, as increments: ``dropped`` (late pulse ids,
    messages without an image), ``source_restarts`` (its ``restarts``), ``reconnects`` (from its ``health()``)."""

    def __init__(self, stats: SharedStats) -> None:
        self._stats = stats
        self._seen: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        """A new source object: its counters start from 0."""
        self._seen = {"dropped": 0, "source_restarts": 0, "reconnects": 0}

    def update(self, source: FrameSource) -> bool:
        """Bring the statistics up to date; returns whether the source is connected (True if it cannot tell)."""
        health = getattr(source, "health", None)
        connected, reconnects = health() if health is not None else (True, 0)
        for field, value in (("dropped", getattr(source, "dropped", 0)),
                             ("source_restarts", getattr(source, "restarts", 0)), ("reconnects", reconnects)):
            if value > self._seen[field]:
                self._stats.add(field, value - self._seen[field])
            self._seen[field] = value
        return connected


def _apply_config(config: CameraConfig, updated: CameraConfig, source: FrameSource,
                  publisher: Any, stats: SharedStats, control: InstanceControl) -> tuple[CameraConfig, FrameSource]:
    old, cur = config.to_dict(), updated.to_dict()  # dicts: SOURCE_KEYS include an extra key (connection_timeout)
    if any(old.get(k) != cur.get(k) for k in SOURCE_KEYS):
        log.info("camera %s: source settings changed, reconnecting the source", config.name)
        stats.set_state("reconnecting")
        stats.add("reconnects")
        source.close()
        source = _connect_source(updated, control)
    publisher.set_config(updated)
    return updated, source
