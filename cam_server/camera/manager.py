"""Camera instance management: start a camera process on the first stream request, track and stop it.

A camera streams from its own process (:mod:`cam_server.camera.instance`), started with
:class:`~cam_server.common.process.InstanceProcess`. The manager waits until the child says it is streaming
(``stats.start_time``) or has failed (exit code + error queue), so a request for an offline camera gets a clear
error while the server itself stays healthy. An :class:`~cam_server.common.instances.InstanceTable` tracks them; its
reaper joins instances that ended on their own (no clients for ``no_client_timeout``) so no zombie process is left
behind, and records how they ended.

A stream request reserves the stream (:data:`STREAM_RESERVATION_S`): whoever asked for the address (a pipeline
server starting an instance, which may take seconds to connect) counts as a client until a client connects, so a
camera with a short ``no_client_timeout`` does not stop before it arrives. A plain request's reservation ends with
the next client connection, whoever's it is (the server cannot tell its clients apart); a request that can say when
its client connected asks for a reservation *held until released* (:meth:`CameraInstanceManager.reserve_stream`,
the pipeline server and its instances): no connection ends it, only :meth:`~CameraInstanceManager.release_stream`
(its client connected) or its expiry.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cam_server.bsread.address import listen_endpoint
from cam_server.camera.config import CameraConfig
from cam_server.camera.instance import announce_address, ipc_address, run_camera_instance
from cam_server.camera.shared_frames import remove_stale_shared_memory
from cam_server.camera.store import CameraConfigStore
from cam_server.common.errors import NotFound, SourceUnavailable
from cam_server.common.frame_ring import DEFAULT_SLOTS, host_id, ring_base
from cam_server.common.instances import InstanceTable
from cam_server.common.limits import DEFAULT_MAX_BLOCKING, Cancelled, Gate
from cam_server.common.process import InstanceProcess, reserve_port
from cam_server.common.psi_stats import format_time, psi_statistics

log = logging.getLogger(__name__)

PRELOAD = ("numpy", "zmq", "cam_server.bsread", "cam_server.processing", "cam_server.processing.camera_transforms",
           "cam_server.processing.simulation", "cam_server.camera.instance", "cam_server.camera.publisher",
           "cam_server.camera.sources.simulation", "cam_server.camera.sources.bsread_source")
START_TIMEOUT = 20.0  # seconds; covers the first fork-server start and an EPICS connection timeout
FRAME_TIMEOUT = 10.0
# How long a stream request counts as a client when nobody connects (a client that connects ends it at once).
STREAM_RESERVATION_S = 30.0
STOPPING_WAIT_S = 5.0  # how long a stream request waits for an instance that is ending by itself
MAX_FRAME_TIMEOUT = 120.0  # the longest wait for a frame a request may ask for (query ``timeout``)


@dataclass
class CameraInstance:
    """A running camera stream, as the manager tracks it."""

    camera: str
    process: InstanceProcess
    config: CameraConfig
    port: int
    stream_address: str  # what clients get
    local_address: str  # what the server itself subscribes to
    started: float

    def info(self) -> dict[str, Any]:
        """Our process info (pid, exit code, counters, last error) plus the fields PSI's tools read.

        ``is_stream_active``: the process runs and its stream is bound (it streams whatever frames the source
        gives); ``camera_geometry``: ``[width, height]`` of the last image sent (None before the first);
        ``last_start_time``: when the instance started, ``"YYYY-MM-DD HH:MM:SS"`` (local time).
        """
        info = self.process.info()
        stats = psi_statistics(info)
        shape = stats["frame_shape"]
        info.update(statistics=stats, stream_address=self.stream_address,
                    is_stream_active=bool(info["is_running"] and stats["start_time"] > 0),
                    camera_geometry=None if shape is None else [shape[1], shape[0]], camera_name=self.camera,
                    config=self.config.to_dict(), last_start_time=format_time(self.started))
        return info


class CameraInstanceManager:
    """All camera instances of one server, keyed by camera name (aliases resolve to the camera)."""

    def __init__(self, store: CameraConfigStore, hostname: str = "localhost", start_timeout: float = START_TIMEOUT,
                 log_level: int | None = None, max_blocking: int = DEFAULT_MAX_BLOCKING,
                 stream_reservation: float = STREAM_RESERVATION_S, stream_interface: str | None = None,
                 shared_memory: bool = True, shared_memory_slots: int = DEFAULT_SLOTS) -> None:
        self.store = store
        # Frames offered to local pipelines through shared memory (camera/shared_frames.py); None: off.
        self.shared_memory = (os.getpid(), shared_memory_slots) if shared_memory else None
        self.host_id = host_id()
        remove_stale_shared_memory()  # of instances killed with an earlier server
        # Instance starts (up to start_timeout each, also those waiting for the same camera's start) hold a thread
        # of the REST server's pool: at most max_blocking at once, more are refused (429).
        self.blocking = Gate(max_blocking, "instance starts")
        self.hostname = hostname
        # Where instance streams listen (None: every interface); the server's own subscriptions connect there.
        self.stream_interface = stream_interface
        self.start_timeout = start_timeout
        self.stream_reservation = stream_reservation
        self.log_level = logging.getLogger().level if log_level is None else log_level
        # Only instances that ended by themselves are recorded as ended (a stopped camera is simply gone).
        self._table: InstanceTable[CameraInstance] = InstanceTable("camera", _ended_record, remember_stopped=False)
        self._start_locks: dict[str, threading.Lock] = {}
        self._start_locks_lock = threading.Lock()

    def warm_up(self) -> None:
        """Start the fork server now (preloading numpy, zmq, ...) so the first stream request is quick."""
        from multiprocessing import forkserver

        from cam_server.common.process import process_context

        if process_context(PRELOAD).get_start_method() == "forkserver":
            forkserver.ensure_running()

    # --- streams ------------------------------------------------------------------------------------------
    def get_instance_stream(self, name: str) -> str:
        """Stream address of camera ``name`` (or alias), starting its instance if needed; the stream is reserved
        for the caller (see the module doc)."""
        return self.get_instance(name, reserve=True).stream_address

    def reserve_stream(self, name: str) -> tuple[str, str, int]:
        """Stream address of camera ``name`` (or alias), starting its instance if needed, the id of a reservation
        held until :meth:`release_stream` (or :attr:`stream_reservation` seconds), for a caller that tells when its
        client connected (see the module doc), and the bytes of one image (0: not known yet)."""
        instance, reservation = self._reserved_instance(name, True)
        return instance.stream_address, str(reservation), _frame_bytes(instance)

    def _reserved_instance(self, name: str, reserve: bool | None) -> tuple[CameraInstance, int | None]:
        """:meth:`get_instance` with a reservation: None the plain one (the next connection ends it), True one held
        until released (its id is returned), False none (the caller's server reserved the stream already)."""
        if not reserve:
            return self.get_instance(name, reserve=reserve is None), None
        held: list[int] = []
        instance = self.get_instance(name, reserve=lambda control: held.append(
            control.reserve_until_released(self.stream_reservation)))
        return instance, held[-1]

    def release_stream(self, name: str, reservation: str) -> bool:
        """End the hold of :meth:`reserve_stream`'s ``reservation`` on camera ``name``; False when it had ended
        already (released, expired, or made on an instance that has ended since)."""
        instance = self._table.get(self.store.resolve(name))
        if instance is None or not (reservation.isascii() and reservation.isdigit()):
            return False
        return instance.process.control.release(int(reservation))

    def get_shared_memory(self, name: str, reserve: bool | None = None) -> dict[str, Any]:
        """Like :meth:`get_instance_stream` (``reserve`` None), :meth:`reserve_stream` (True: the answer has the
        ``reservation``) or neither (False: the caller's server reserved the stream already), plus where a pipeline
        on this host finds the frames in shared memory: ``shared_memory`` is None when this server does not offer
        it."""
        instance, reservation = self._reserved_instance(name, reserve)
        shared = None
        if self.shared_memory is not None and instance.process.pid is not None:
            pid = instance.process.pid
            shared = {"ring": ring_base(self.shared_memory[0], instance.config.name or "camera", pid),
                      "announce": announce_address(pid), "host_id": self.host_id}
        answer = {"stream": instance.stream_address, "shared_memory": shared, "frame_bytes": _frame_bytes(instance)}
        return answer if reservation is None else {**answer, "reservation": str(reservation)}

    def get_instance(self, name: str, reserve: bool | Callable[[Any], None] = False) -> CameraInstance:
        """The running instance of camera ``name`` (or alias), started if needed; ``reserve``: the caller will
        connect to its stream (it must not stop for lack of clients before that): True for a reservation that the
        next connection ends, or ``reserve(control)`` that makes one (:meth:`reserve_stream`)."""
        camera = self.store.resolve(name)
        instance = self._table.get(camera)
        if instance is not None and instance.process.is_alive() and (not reserve or self._reserve(instance, reserve)):
            return instance  # running: no start, nothing to bound
        with self._start_locks_lock:
            lock = self._start_locks.setdefault(camera, threading.Lock())
        with self.blocking, lock:
            instance = self._table.get(camera)
            if (instance is not None and instance.process.is_alive()
                    and (not reserve or self._reserve(instance, reserve))):
                return instance
            if instance is not None:
                self._table.reap()  # it ended and the reaper has not seen it yet: record how
            instance = self._start(camera, reserve)
            self._table.add(camera, instance)
            return instance

    def _make_reservation(self, process: InstanceProcess,
                          reserve: bool | Callable[[Any], None]) -> None:
        if callable(reserve):
            reserve(process.control)
        else:
            process.control.reserve(self.stream_reservation)

    def _reserve(self, instance: CameraInstance, reserve: bool | Callable[[Any], None] = True) -> bool:
        """Reserve the running instance's stream; False if it is ending by itself (it has been waited for then).

        The reservation is written before the state is read; the instance sets "stopping" before it reads the
        reservations: one of the two sees the other.
        """
        control = instance.process.control
        self._make_reservation(instance.process, reserve)
        deadline = time.monotonic() + STOPPING_WAIT_S
        while control.stats.state() == "stopping" and instance.process.is_alive():
            if time.monotonic() > deadline:  # stuck: the caller replaces it
                self._table.stop(instance.camera, timeout=1.0)
                return False
            time.sleep(0.01)  # it either goes on (it saw the reservation) or ends
        return instance.process.is_alive()

    def _used_ports(self) -> set[int]:
        return {i.port for _, i in self._table.items()}

    def _start(self, camera: str, reserve: bool | Callable[[Any], None] = False) -> CameraInstance:
        config = self.store.load(camera)
        port = config.port or reserve_port(exclude=self._used_ports())
        process = InstanceProcess(camera, run_camera_instance,
                                  args=(config, port, self.log_level, self.stream_interface, self.shared_memory),
                                  preload=PRELOAD, ports=() if config.protocol == "ipc" else (port,))
        if reserve:  # before it can look for clients
            self._make_reservation(process, reserve)
        process.start()
        deadline = time.monotonic() + self.start_timeout
        stats = process.control.stats
        while stats.get("start_time") <= 0:
            if not process.is_alive():
                process.stop(timeout=1.0)
                reason = process.last_error or f"instance process exited with code {process.exitcode}"
                prefix = f"Cannot start camera '{camera}': "
                raise SourceUnavailable(reason if reason.startswith(prefix) else prefix + reason)
            if time.monotonic() > deadline:
                process.stop(timeout=2.0)
                raise SourceUnavailable(f"Camera '{camera}' did not start streaming within "
                                        f"{self.start_timeout:g} s")
            time.sleep(0.02)
        if config.protocol == "ipc":
            stream = local = ipc_address(camera, port)
        else:
            listening = listen_endpoint(self.stream_interface, port)
            local = f"tcp://127.0.0.1:{port}" if listening.startswith("tcp://*:") else listening
            stream = f"tcp://{self.hostname}:{port}"
        log.info("camera %s started (pid %s) on %s", camera, process.pid, stream)
        return CameraInstance(camera, process, config, port, stream, local, time.time())

    # --- stopping -----------------------------------------------------------------------------------------
    def stop_instance(self, name: str) -> None:
        """Stop the instance of camera ``name`` (or alias); NotFound when it does not run."""
        try:
            camera = self.store.resolve(name)
        except NotFound:
            camera = name
        if self._table.stop(camera) is None:
            raise NotFound(f"Camera instance '{name}' is not running.")
        remove_stale_shared_memory()  # an instance killed after the grace period could not unlink its ring
        log.info("camera %s stopped", camera)

    def stop_if_running(self, camera: str) -> bool:
        stopped = self._table.stop(camera) is not None
        if stopped:
            remove_stale_shared_memory()
        return stopped

    def stop_all_instances(self) -> None:
        """Stop every camera instance, in parallel."""
        self._table.stop_all()
        remove_stale_shared_memory()

    def close(self) -> None:
        self._table.close()
        remove_stale_shared_memory()

    # --- config changes -----------------------------------------------------------------------------------
    def config_changed(self, camera: str, config: CameraConfig) -> None:
        """Apply a saved config to a running instance (live), or restart-on-demand if the endpoint changes."""
        instance = self._table.get(camera)
        if instance is None or not instance.process.is_alive():
            return
        if config.protocol != instance.config.protocol or (config.port and config.port != instance.port):
            log.info("camera %s: stream endpoint changed, stopping the instance (restarts on next request)", camera)
            self.stop_if_running(camera)
            return
        instance.process.update_config(config)
        instance.config = config

    # --- info ---------------------------------------------------------------------------------------------
    @property
    def changes(self) -> int:
        """Grows whenever an instance starts or leaves (stopped, or ended and reaped): cached answers compare it."""
        return self._table.version

    def running(self) -> list[str]:
        return [c for c, i in self._table.items() if i.process.is_alive()]

    def info(self) -> dict[str, Any]:
        """``active_instances``: camera → info of each running instance; ``finished_instances``: how the recent ones
        that ended by themselves ended. Instances that ended are reaped first, so they are listed as ended at once
        (not only after the reaper's next round); one that ends while this runs is left out of both."""
        self._table.reap()
        instances, ended = self._table.snapshot()
        active = {c: i.info() for c, i in instances.items()}
        return {"active_instances": {c: i for c, i in active.items() if i["is_running"]}, "finished_instances": ended}

    def metrics_instances(self) -> list[dict[str, Any]]:
        """What ``GET /metrics`` reads of each instance, without asking it anything: ``instance_id``, ``camera``,
        ``pipeline_type`` ("" here), ``process`` and ``restarts`` (its earlier runs that ended by themselves)."""
        return [{"instance_id": c, "camera": i.camera, "pipeline_type": "", "process": i.process,
                 "restarts": self._table.ended_runs(c)} for c, i in self._table.items()]

    def is_online(self, name: str) -> tuple[bool, str]:
        """(online, why) for camera ``name`` (or alias), checked without starting its stream (see
        :mod:`cam_server.camera.online`); NotFound for an unknown camera."""
        from cam_server.camera.online import check_camera_online

        config = self.store.load(name)
        online, reason = check_camera_online(config, PRELOAD)
        log.debug("camera %s online check: %s", config.name, reason)
        return online, reason

    # --- frames -------------------------------------------------------------------------------------------
    def get_frame(self, name: str, timeout: float = FRAME_TIMEOUT, keep_waiting: Callable[[], bool] | None = None,
                  ) -> tuple[np.ndarray, dict[str, Any]]:
        """The next image of camera ``name`` (starting it if needed), read from its own stream.

        Returns (image, header) with header = pulse_id, timestamp, width, height, x_axis, y_axis. ``keep_waiting``
        (checked every 0.2 s while no image comes): False ends the wait with :class:`Cancelled`.
        """
        from cam_server.bsread import SUB, Source
        from cam_server.bsread.wait import next_message

        instance = self.get_instance(name)
        alive = instance.process.is_alive
        if keep_waiting is not None:
            alive = lambda: keep_waiting() and instance.process.is_alive()  # noqa: E731
        with Source(address=instance.local_address, mode=SUB, receive_timeout=200, queue_size=2) as stream:
            message = next_message(stream, timeout, accept=lambda m: _value(m.data.data, "image") is not None,
                                   alive=alive)
        if message is not None:
            values = message.data.data
            header = {"pulse_id": message.data.pulse_id,
                      "timestamp": _value(values, "timestamp"),
                      "width": _value(values, "width"), "height": _value(values, "height"),
                      "x_axis": _value(values, "x_axis"), "y_axis": _value(values, "y_axis")}
            return message.data.array("image"), header  # 2-D also for an image one pixel high
        if keep_waiting is not None and not keep_waiting():
            raise Cancelled(f"Wait for an image of camera '{instance.camera}' cancelled: no client waits any more.")
        raise self.no_frame_error(instance.camera, timeout)

    def no_frame_error(self, name: str, timeout: float) -> SourceUnavailable:
        """The error of a wait for an image of camera ``name`` that got none within ``timeout`` seconds (with its
        instance's last error, if it reported one); quick, it reads nothing but the instance table."""
        instance = self._table.get(name)
        error = None if instance is None else instance.process.last_error
        return SourceUnavailable(f"No image from camera '{name}' within {timeout:g} s"
                                 + (f" ({error})" if error else ""))


def _ended_record(instance: CameraInstance) -> dict[str, Any]:
    """What ``finished_instances`` shows of a camera instance that ended by itself (called once it was joined: a
    killed instance's frame ring is removed here)."""
    remove_stale_shared_memory()
    process = instance.process
    return {"exit_code": process.exitcode, "exit_reason": process.exit_reason(), "last_error": process.last_error,
            "last_error_time": process.last_error_time, "ended": time.time(), "pid": process.pid,
            "created": process.created}


def _value(values: dict[str, Any], name: str) -> Any:
    v = values.get(name)
    return None if v is None else v.value


def _frame_bytes(instance: CameraInstance) -> int:
    """Bytes of one image of a running camera instance as it reports them (0: not known yet)."""
    return int(instance.process.control.stats.get("frame_bytes"))
