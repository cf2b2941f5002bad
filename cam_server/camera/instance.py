"""The camera instance process: read frames from the source, transform, publish; one process per camera.

Runs as the target of :class:`~cam_server.common.process.InstanceProcess`. Lifecycle signals to the parent:

* ``stats.start_time`` is set once the source is connected and the stream is bound (the parent waits for it);
* a source that cannot connect (offline EPICS camera, bad address) is reported through the error queue and the
  process exits with :data:`EXIT_SOURCE_OFFLINE`;
* the sender's no-client monitor ends the loop after ``no_client_timeout`` seconds without clients.

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

from cam_server.bsread.address import listen_endpoint
from cam_server.camera.config import SOURCE_KEYS, CameraConfig
from cam_server.camera.sources.base import CameraOffline, FrameSource
from cam_server.common.process import InstanceControl, RateMeter, configure_memory

log = logging.getLogger(__name__)

EXIT_SOURCE_OFFLINE = 3
EXIT_ERROR = 1
READ_TIMEOUT = 0.2  # seconds; bounds how late a stop request or config change is seen


# Not "/tmp/cam_server": a folder of that name would shadow the package for scripts run from /tmp.
IPC_FOLDER = os.path.join(tempfile.gettempdir(), "cam_server-ipc")


def ipc_address(name: str, port: int) -> str:
    return f"ipc://{IPC_FOLDER}/{name}-{port}"


def bind_address(config: CameraConfig, port: int, interface: str | None = None) -> str:
    """The endpoint the instance binds (tcp on ``interface``, default all interfaces, or an ipc path)."""
    if config.protocol == "ipc":
        os.makedirs(IPC_FOLDER, exist_ok=True)
        return ipc_address(config.name or "camera", port)
    return listen_endpoint(interface, port)


def _connect_source(config: CameraConfig) -> FrameSource:
    from cam_server.camera.sources.factory import create_source

    source = create_source(config)
    source.connect()
    return source


def run_camera_instance(control: InstanceControl, config: CameraConfig, port: int,
                        log_level: int = logging.WARNING, interface: str | None = None) -> None:
    """Instance process entry point (module level: forkserver pickles it by reference)."""
    configure_memory()
    logging.basicConfig(level=log_level, format=f"%(asctime)s camera[{config.name}] %(levelname)s "
                                                  "%(name)s: %(message)s")
    try:
        source = _connect_source(config)
    except CameraOffline as exc:
        control.report_error(str(exc))
        raise SystemExit(EXIT_SOURCE_OFFLINE) from None
    except Exception as exc:  # noqa: BLE001 - any failure must reach the parent as a readable message
        log.exception("camera instance failed to start")
        control.report_error(f"Cannot start camera '{config.name}': {exc}")
        raise SystemExit(EXIT_SOURCE_OFFLINE) from None
    try:
        _stream(control, config, source, port, interface)
    except Exception as exc:  # noqa: BLE001
        log.exception("camera instance failed")
        control.report_error(f"Camera '{config.name}' stopped: {type(exc).__name__}: {exc}")
        raise SystemExit(EXIT_ERROR) from None


def _stream(control: InstanceControl, config: CameraConfig, source: FrameSource, port: int,
            interface: str | None = None) -> None:
    from cam_server.bsread import PUB, Sender
    from cam_server.camera.publisher import CameraPublisher

    no_clients = threading.Event()
    timeout = config.no_client_timeout
    sender = Sender(queue_size=config.queue_size, port=None, address=bind_address(config, port, interface), mode=PUB,
                    block=False)
    sender.open(no_client_action=no_clients.set if timeout > 0 else None,
                no_client_timeout=timeout if timeout > 0 else None)
    stats = control.stats
    rate = RateMeter(stats)
    rate_in = RateMeter(stats, "rate_in", throughput_field=None)
    publisher = CameraPublisher(sender, config)
    source_dropped = 0
    frame_shape = None  # the publisher's, as last written to the statistics
    current = [source]  # the source a config change may replace; a stop request interrupts whichever is current
    control.on_stop(lambda: current[0].interrupt())
    stats.set("start_time", time.time())
    log.info("camera %s streaming on %s", config.name, sender.endpoint)
    try:
        while not control.should_stop():
            if no_clients.is_set():
                log.info("camera %s: no clients for %.1f s, stopping", config.name, timeout)
                break
            new = control.poll_config()
            if new is not None:
                config, source = _apply_config(config, new, source, publisher)
                current[0] = source
                if control.should_stop():  # a stop that arrived while the source was replaced woke the old one
                    break
            frame = source.read(READ_TIMEOUT)
            dropped = getattr(source, "dropped", 0)
            if dropped != source_dropped:
                stats.add("dropped", dropped - source_dropped)
                source_dropped = dropped
            stats.set("clients", sender.client_count)
            if frame is None:
                continue
            stats.add("frames_in")
            rate_in.tick()
            try:
                sent = publisher.publish(frame)
            except ValueError as exc:  # a frame the transforms or encoder refuse (e.g. ROI outside the image)
                stats.add("errors")
                control.report_error(f"Camera '{config.name}': frame not sent: {exc}")
                continue
            if sent:
                rate.sent(sender.bytes_sent)
            else:
                stats.add("dropped")
            if publisher.frame_shape is not frame_shape:  # a new layout (geometry, dtype, channels)
                frame_shape = publisher.frame_shape
                if frame_shape is not None:
                    stats.set("frame_height", frame_shape[0])
                    stats.set("frame_width", frame_shape[1])
    finally:
        sender.close()
        source.close()


def _apply_config(config: CameraConfig, updated: CameraConfig, source: FrameSource,
                  publisher: Any) -> tuple[CameraConfig, FrameSource]:
    old, cur = config.to_dict(), updated.to_dict()  # dicts: SOURCE_KEYS include an extra key (connection_timeout)
    if any(old.get(k) != cur.get(k) for k in SOURCE_KEYS):
        log.info("camera %s: source settings changed, reconnecting the source", config.name)
        source.close()
        source = _connect_source(updated)
    publisher.set_config(updated)
    return updated, source
