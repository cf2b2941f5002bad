"""The pipeline server's state: running instances (shared read-only and private), saved configs and backgrounds.

Each instance is an OS process (:class:`InstanceProcess`) running ``cam_server.pipeline.instance.main.run_instance``.
The instances are tracked by an :class:`~cam_server.common.instances.InstanceTable` (reaper, stop, bounded history
of finished instances); its lock only guards the bookkeeping, everything slow (camera server calls, process
start/stop, file IO) runs outside it, so concurrent REST clients do not queue behind each other.

Shared instances have the saved pipeline's name as instance id (or, started from a config, a uuid4 id and are found
again by that config) and refuse config changes, so that two users watching the same pipeline cannot change what the
other sees. Private instances accept live, incremental config changes. An instance whose process ended (or that was
stopped) is gone: only its exit code and last info stay, in the table's history.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests

from cam_server.bsread.address import listen_endpoint
from cam_server.common.errors import (
    CamServerError,
    Conflict,
    InvalidCombination,
    InvalidConfig,
    NotFound,
    SourceUnavailable,
)
from cam_server.common.instances import InstanceTable
from cam_server.common.limits import DEFAULT_MAX_BLOCKING, Cancelled, Gate
from cam_server.common.names import validate_name
from cam_server.common.process import (
    CONFIG_ENDED,
    CONFIG_PENDING,
    CONFIG_REFUSED,
    InstanceControl,
    InstanceProcess,
    reserve_port,
)
from cam_server.common.psi_stats import format_time, psi_statistics
from cam_server.common.usage import server_usage
from cam_server.pipeline.config import (
    PipelineConfig,
    expand_config,
    parse_pipeline_config,
    roi_problem,
    update_config,
)
from cam_server.pipeline.file_path import FileOutputError, check_output_target, resolve_output_file
from cam_server.pipeline.function_names import external_function, refusal
from cam_server.pipeline.instance_spec import InstanceSpec
from cam_server.pipeline.registry import DEFAULT_TYPE, INSTANCE_ENTRY, PIPELINE_TYPES
from cam_server.pipeline.server.backgrounds import BackgroundStore, average_stream_images, check_n_images
from cam_server.pipeline.server.saved_configs import SavedConfigs, validate_pipeline_name

log = logging.getLogger(__name__)

PRELOAD = ("numpy", "scipy.optimize", "zmq", "cam_server.bsread", "cam_server.processing.default")
# Also preloaded when it imports cleanly (saves ~80 ms of imports per instance start); a module that fails to
# import must not be preloaded, the forkserver would die on it.
INSTANCE_MODULES = (INSTANCE_ENTRY.partition(":")[0], PIPELINE_TYPES[DEFAULT_TYPE].module_path)
# Keys that define the instance's sockets and source; changing them needs a new instance.
STRUCTURAL_KEYS = ("camera_name", "pipeline_type", "mode", "input_stream", "input_pipeline", "input_mode",
                   "output_stream", "output_pipeline", "file")
# A background is "enabled" (must exist and match the image) for these values of image_background_enable.
_BACKGROUND_APPLIED = (True, "signed", "passive")
MESSAGE_TIMEOUT = 10.0
# How long a live config change waits for the instance to apply or refuse it (it takes configs between frames,
# at least about once a second; a starting instance once its loop runs).
CONFIG_TIMEOUT = 10.0
MAX_INSTANCES = 100  # running instances per server (--max_instances): each is a process with its own memory
GEOMETRY_TIMEOUT = 3.0  # the camera server's wait for a frame, when a check needs the camera geometry
# A camera stream reserved for a new instance is released once the instance received a frame (it polls the
# instance's frames_in), at the latest after the camera server's own expiry of a reservation (30 s).
RESERVATION_WATCH_S = 30.0
RESERVATION_POLL_S = 0.1
ROI_KEYS = ("image_region_of_interest", "binning_x", "binning_y", "rotation")  # what the ROI check depends on


class InstanceLimit(CamServerError):
    """The server runs as many instances as it may (``max_instances``): 429, try again when one has ended."""

    status_code = 429


def _default_target() -> Callable[..., Any]:
    """The instance entry point, imported by name (the server side imports nothing of the instance side)."""
    module, _, function = INSTANCE_ENTRY.partition(":")
    return getattr(importlib.import_module(module), function)


def _noop_instance(control: InstanceControl) -> None:
    """Started once at server start so the forkserver (and its preloaded modules) is ready for the first client."""


@dataclass
class _Instance:
    instance_id: str
    config: dict[str, Any]
    stream_address: str
    port: int
    read_only: bool
    camera_stream: str | None
    # The full (expanded) config as requested, before the server resolved input/output pipelines into streams:
    # what a shared instance started from a config is recognised by (get_instance_stream_from_config).
    requested: dict[str, Any]
    process: InstanceProcess | None = None  # None while starting
    created: float = field(default_factory=time.time)
    update_lock: threading.Lock = field(default_factory=threading.Lock)  # live config changes, one at a time


class PipelineManager:
    """Creates, configures, lists and stops pipeline instances; stores configs and backgrounds."""

    def __init__(self, cam_client: Any, config_store: SavedConfigs, background_store: BackgroundStore,
                 scripts_folder: str, hostname: str, target: Callable[..., Any] | None = None,
                 stop_timeout: float = 3.0, file_folder: str | None = None,
                 max_blocking: int = DEFAULT_MAX_BLOCKING,
                 instance_memory_limit: int = 0, stream_interface: str | None = None,
                 allow_external_functions: bool = False, config_timeout: float = CONFIG_TIMEOUT,
                 max_instances: int = MAX_INSTANCES, shared_memory: bool = True) -> None:
        self.cam_client = cam_client
        self.shared_memory = shared_memory  # instances may read a local camera's frames in shared memory
        # What holds a REST thread for seconds (instance starts, which wait for the camera; calls to the camera
        # server): at most max_blocking at once, more are refused (429).
        self.blocking = Gate(max_blocking, "blocking requests (instance starts, camera server calls)")
        self.stream_interface = stream_interface  # where instance streams listen (None: every interface)
        self.allow_external_functions = allow_external_functions  # `function` may be any .py path or module
        self.config_store = config_store
        self.background_store = background_store
        self.scripts_folder = str(scripts_folder)
        # FILE output: confined to file_folder (None: anywhere, pipeline_server --file_folder_any), never inside the
        # server's own folders (pipeline/file_path.py).
        self.file_folder = str(file_folder) if file_folder is not None else None
        self.protected_folders = protected_folders(config_store, background_store, self.scripts_folder)
        self.hostname = hostname
        self.instance_memory_limit = instance_memory_limit  # bytes of RSS per instance unless its config says; 0: none
        self._target = target
        self._stop_timeout = stop_timeout
        self._config_timeout = config_timeout
        self.max_instances = max_instances
        self._instances: InstanceTable[_Instance] = InstanceTable("pipeline", self._info, stop_timeout=stop_timeout)
        # One lock per requested config (while someone uses it): identical concurrent shared requests start one
        # instance, different configs do not wait for each other.
        self._shared_locks: dict[str, tuple[threading.Lock, list[int]]] = {}
        self._shared_locks_guard = threading.Lock()

    # --- saved pipelines ----------------------------------------------------------------------------------
    def get_pipeline_list(self) -> list[str]:
        return self.config_store.names()

    def get_pipeline_config(self, name: str) -> dict[str, Any]:
        validate_pipeline_name(name)
        return self.config_store.load(name)

    def save_pipeline_config(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """Validate (incl. the camera and background) and save the expanded config; returns it."""
        validate_pipeline_name(name)
        expanded = expand_config(config)
        self._check_output_file(expanded)
        self._check_function(expanded)
        self._check_camera_known(expanded)
        self._check_background(expanded)
        self.config_store.save(name, expanded)
        return expanded

    def delete_pipeline_config(self, name: str) -> Path | None:
        """Delete the saved config; a broken entry of that name is moved aside instead: returns where it went."""
        validate_pipeline_name(name)
        return self.config_store.delete(name)

    def get_pipeline_groups(self) -> dict[str, list[str]]:
        """group → saved pipelines of that group (the configs' ``group`` key)."""
        return self.config_store.groups()

    # --- cameras and backgrounds --------------------------------------------------------------------------
    def get_camera_list(self) -> list[str]:
        try:
            with self.blocking:
                return list(self.cam_client.get_cameras())
        except requests.RequestException as exc:
            raise self._camera_server_failure(exc) from None
        except ValueError as exc:
            if _server_error(exc):
                raise self._camera_server_failure(exc) from None
            raise

    def collect_background(self, camera_name: str, n_images: int | None = None,
                           keep_waiting: Callable[[], bool] | None = None) -> str:
        """Average ``n_images`` (default 10) frames of the camera stream, save them, return the background id.
        ``keep_waiting`` (checked every 0.2 s while no image comes): False ends the collection with
        :class:`Cancelled`, nothing saved."""
        validate_name(camera_name, "camera name")
        n = check_n_images(n_images)
        self.background_store.check_space()  # refused at once, not after collecting for nothing
        stream = self._camera_stream(camera_name)[0]
        array = average_stream_images(stream, n, keep_waiting=keep_waiting)
        background_id = self.background_store.save(camera_name, array)
        self._apply_retention(camera_name)
        return background_id

    def delete_background(self, background_id: str) -> Path | None:
        """Delete a background (a broken entry of that name is moved aside: returns where it went); Conflict while
        a running instance's config names it."""
        validate_name(background_id, "background id")
        self.reap()
        with self._instances.lock:  # no instance can start with it between the check and the delete (_create)
            users = self._backgrounds_in_use().get(background_id)
            if users:
                raise Conflict(f"Background '{background_id}' is used by running instance(s) {', '.join(users)}: "
                               "stop them (or change their image_background) first.")
            return self.background_store.delete(background_id)

    def get_background_list(self) -> dict[str, Any]:
        """Every background id, the broken entries, and the storage bounds (bytes used and allowed, retention)."""
        ids, broken = self.background_store.scan()
        return {"background_ids": ids, "broken": broken, "disk_usage": self.background_store.disk_usage(),
                "disk_limit": self.background_store.disk_limit, "retention": self.background_store.retention}

    def _apply_retention(self, camera_name: str) -> None:
        """Keep at most ``retention`` collected backgrounds of the camera: delete the oldest not in use."""
        self.reap()
        with self._instances.lock:
            self.background_store.prune(camera_name, in_use=self._backgrounds_in_use())

    def _backgrounds_in_use(self) -> dict[str, list[str]]:
        """background id → the running (or starting) instances whose config names it (enabled or not: a live
        change may enable it)."""
        used: dict[str, list[str]] = {}
        for instance_id, instance in self._instances.items():
            background = instance.config.get("image_background")
            if background and self._alive(instance):
                used.setdefault(background, []).append(instance_id)
        return used

    def _check_background_still_there(self, config: dict[str, Any]) -> None:
        """Under the instance table's lock: the enabled background checked before was not deleted meanwhile."""
        background = config.get("image_background")
        if (background and config.get("image_background_enable") in _BACKGROUND_APPLIED
                and not self.background_store.path(background).is_file()):
            raise NotFound(f"Background '{background}' does not exist (it was just deleted).")

    def get_latest_background(self, camera_name: str) -> str:
        return self.background_store.latest(camera_name)

    def get_background_ids(self, camera_name: str) -> list[str]:
        """The camera's background ids, sorted (oldest first); empty for a camera without any (the store lists files,
        it does not know which cameras exist)."""
        return self.background_store.ids(camera_name)

    def get_background_image(self, background_id: str) -> np.ndarray:
        """The 2-D background array (NotFound for an unknown id)."""
        return self.background_store.image(background_id)

    def save_background(self, background_id: str, array: np.ndarray) -> bool:
        """Store an uploaded background under exactly ``background_id`` (see :meth:`BackgroundStore.save_as`)."""
        return self.background_store.save_as(background_id, array)

    # --- instances ----------------------------------------------------------------------------------------
    def get_instance_stream(self, instance_id: str) -> str:
        """The stream of a running instance, or of the shared (read-only) instance of a saved pipeline.

        A saved pipeline named ``instance_id`` that is not running is started as a shared instance.
        """
        validate_name(instance_id, "instance id")
        running = self._instances.get(instance_id)
        if running is not None and self._alive(running):
            return running.stream_address
        if running is not None:
            self.reap()  # it ended: record how, for the message below and a restart under its name
        if not self.config_store.exists(instance_id):
            ended = self._instances.ended(instance_id)
            if ended is not None:
                raise NotFound(f"Instance '{instance_id}' is not running any more{_how_it_ended(ended)} and there "
                               "is no saved pipeline of that name.")
            raise NotFound(f"Instance '{instance_id}' is not running and there is no saved pipeline of that name.")
        config = self.config_store.load(instance_id)
        try:
            _, stream, _ = self._create(config, instance_id, read_only=True)
        except Conflict:  # somebody else started it between our check and now
            running = self._instances.get(instance_id)
            if running is None:
                raise
            return running.stream_address
        return stream

    def create_instance_from_name(self, pipeline_name: str, instance_id: str | None = None,
                                  ) -> tuple[str, str, dict[str, Any]]:
        """A private instance of a saved pipeline; returns (instance_id, stream, config)."""
        config = self.get_pipeline_config(pipeline_name)
        return self._create(config, instance_id, read_only=False)

    def create_instance_from_config(self, config: dict[str, Any], instance_id: str | None = None,
                                    ) -> tuple[str, str, dict[str, Any]]:
        """A private instance of ``config``; returns (instance_id, stream, config)."""
        return self._create(config, instance_id, read_only=False)

    def get_instance_stream_from_config(self, config: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        """A shared (read-only) instance of ``config``; returns (instance_id, stream, config).

        A running read-only instance whose full (defaulted) config equals this one is reused, so that everybody
        watching the same processing shares one instance; else one starts with a new uuid4 id.
        """
        requested = _without_reload(expand_config(config))
        running = self._running_shared(requested)
        if running is not None:
            return running
        # Bounded before waiting for the lock: clients waiting for the same start hold threads too.
        with self.blocking, self._shared_config_lock(json.dumps(requested, sort_keys=True, default=str)):
            self.reap()  # an ended instance must not be handed out
            running = self._running_shared(requested)
            if running is not None:
                return running
            return self._create(config, None, read_only=True)

    def _running_shared(self, requested: dict[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
        for _, instance in self._instances.items():
            if instance.read_only and instance.requested == requested and self._alive(instance):
                log.info("reusing shared instance %s", instance.instance_id)
                return instance.instance_id, instance.stream_address, dict(instance.config)
        return None

    def get_instance_config(self, instance_id: str) -> dict[str, Any]:
        return dict(self._get(instance_id).config)

    def set_instance_config(self, instance_id: str, update: dict[str, Any]) -> dict[str, Any]:
        """Apply an incremental config change to a private instance, live; returns the complete new config.

        Applied completely or not at all: the server checks what it can (the config, its structure, the background,
        the ROI against the camera geometry), then the instance, which takes the config, applies or refuses it (a
        function that does not load, ...) and says which; the server waits for that answer (``config_timeout``)
        and only then changes the config it reports. A refusal is a 400 with the reason, no answer in time a 503,
        and in both cases the previous config keeps running (GET config shows what runs).
        """
        instance = self._get(instance_id)
        if instance.read_only:
            raise Conflict(f"Instance '{instance_id}' is a shared (read-only) instance: its config cannot be changed. "
                           "Create a private instance (create_instance_from_name/config) to change parameters.")
        with instance.update_lock:  # one change at a time per instance: each waits for its own answer
            previous = instance.config
            try:
                new = update_config(previous, update)
            except InvalidCombination as exc:  # valid values, but not together with the rest of the running config
                raise Conflict(f"{exc} (after merging the change into the config of instance '{instance_id}')") \
                    from None
            self._check_structural(instance, new)
            self._check_function(new)
            self._check_background(new)
            if any(new.get(key) != previous.get(key) for key in ROI_KEYS):
                self._check_roi(new)
            with self._instances.lock:  # a background deleted meanwhile (delete_background) is refused here
                self._check_background_still_there(new)
            process = instance.process
            if process is not None and self._target is None:  # every pipeline type acknowledges its configs
                # with reload: true, once; the instance resets it after reloading
                self._send_and_wait(instance_id, process, parse_pipeline_config(new), previous)
            elif process is not None:  # a stand-in target (tests): sent, not waited for
                process.update_config(parse_pipeline_config(new))
            instance.config = _without_reload(new)
        log.info("instance %s config updated: %s", instance_id, sorted(update))
        return _without_reload(new)

    def _send_and_wait(self, instance_id: str, process: InstanceProcess, config: PipelineConfig,
                       previous: dict[str, Any]) -> None:
        """Send ``config`` and wait for the instance to take it; raises (nothing changed) unless it was applied."""
        outcome, reason = process.wait_config(process.update_config(config), self._config_timeout)
        if outcome == CONFIG_REFUSED:
            kind = NotFound if process.control.refusal_status() == 404 else InvalidConfig
            raise kind(f"Config not applied to instance '{instance_id}' (the previous config keeps running): "
                       f"{reason}")
        if outcome == CONFIG_ENDED:
            info = process.info()
            raise Conflict(f"Instance '{instance_id}' ended before it applied the config (exit code "
                           f"{info['exit_code']}, last error: {info['last_error']}).")
        if outcome == CONFIG_PENDING:
            # Withdrawn: the previous config, sent after it, is what the instance takes (it takes the newest).
            process.update_config(parse_pipeline_config(previous))
            raise SourceUnavailable(f"Instance '{instance_id}' did not take the config change within "
                                    f"{self._config_timeout:g} s (starting, or busy with a frame): the change was "
                                    "withdrawn and the previous config keeps running; try again.")

    def get_instance_info(self, instance_id: str) -> dict[str, Any]:
        """Info of a live instance; one that ended or was stopped no longer exists here (see exit code)."""
        return self._info(self._get(instance_id))

    def get_instance_exit_code(self, instance_id: str) -> int | None:
        """None while the instance runs (or starts), its process exit code once it ended or was stopped.

        Ended instances stay readable here (the last ``ENDED_HISTORY``), unlike their info and config.
        """
        validate_name(instance_id, "instance id")
        with self._instances.lock:
            instance = self._instances.get(instance_id)
            ended = self._instances.ended(instance_id)
        if instance is not None:
            return None if instance.process is None else instance.process.exitcode
        if ended is not None:
            return ended["exit_code"]
        raise NotFound(f"Instance '{instance_id}' does not exist (or ended too long ago to be remembered).")

    @property
    def changes(self) -> int:
        """Grows whenever an instance starts or leaves (stopped, or ended and reaped): cached answers compare it."""
        return self._instances.version

    def get_info(self) -> dict[str, Any]:
        """Server info as PSI's tools read it: ``active_instances`` {id: info} of the running instances, the
        server's ``version``, ``cpu``, ``memory``, and ``finished_instances`` {id: last info} (oldest first)."""
        self.reap()
        instances, finished = self._instances.snapshot()
        active = {iid: self._info(i) for iid, i in instances.items()
                  if i.process is not None and i.process.is_alive()}
        return {**server_usage(), "active_instances": active, "finished_instances": finished}

    def metrics_instances(self) -> list[dict[str, Any]]:
        """What ``GET /metrics`` reads of each started instance, without asking it anything: ``instance_id``,
        ``camera``, ``pipeline_type``, ``process`` and ``restarts`` (earlier runs of its id that ended)."""
        return [{"instance_id": iid, "camera": i.config.get("camera_name") or "",
                 "pipeline_type": i.config.get("pipeline_type") or "", "process": i.process,
                 "restarts": self._instances.ended_runs(iid)}
                for iid, i in self._instances.items() if i.process is not None]

    def stop_instance(self, instance_id: str) -> None:
        validate_name(instance_id, "instance id")
        if self._instances.stop(instance_id) is None:
            raise NotFound(f"Instance '{instance_id}' is not running.")
        log.info("stopped instance %s", instance_id)

    def stop_all_instances(self) -> None:
        """Stop every instance, in parallel."""
        for instance_id in self._instances.stop_all():
            log.info("stopped instance %s", instance_id)

    def close(self) -> None:
        """Stop everything (server shutdown); idempotent."""
        self.stop_all_instances()  # logs each instance it stops
        self._instances.close()
        log.info("pipeline manager closed")

    def reap(self) -> list[str]:
        """Remove instances whose process ended (no clients, records reached, pid range done, crash)."""
        return self._instances.reap()

    def warm_up(self) -> None:
        """Start the forkserver now (preloading numpy, scipy, zmq, ...) instead of on the first client's request."""
        process = InstanceProcess("warm-up", _noop_instance, preload=self._preload())
        process.start()
        process.stop(10)

    def _preload(self) -> tuple[str, ...]:
        modules = list(PRELOAD)
        if self._target is None:
            for name in INSTANCE_MODULES:
                try:
                    importlib.import_module(name)
                except Exception as exc:  # noqa: BLE001 - reported when an instance is created
                    log.warning("not preloading %s: %s", name, exc)
                else:
                    modules.append(name)
        return tuple(modules)

    # --- single message -----------------------------------------------------------------------------------
    def get_instance_message(self, instance_id: str, timeout: float = MESSAGE_TIMEOUT,
                             keep_waiting: Callable[[], bool] | None = None) -> dict[str, Any]:
        """One message of the instance stream: {"pulse_id", "global_timestamp", "data": {channel: JSON value}}.
        ``keep_waiting`` (checked every 0.2 s while no message comes): False ends the wait with :class:`Cancelled`.
        """
        from cam_server.bsread import source
        from cam_server.bsread.address import host_and_port
        from cam_server.bsread.endpoints import reader_mode
        from cam_server.bsread.wait import next_message

        instance = self._get(instance_id)
        config = instance.config
        # 409: a valid request, but not for an instance of this kind
        if config.get("pipeline_type") == "store":
            raise Conflict(f"Instance '{instance_id}' is a 'store' pipeline: reading a message would take it "
                           "from the store's consumer. Read messages from a processing pipeline instead.")
        if config.get("mode") == "FILE":
            raise Conflict(f"Instance '{instance_id}' writes to a file (mode FILE) and has no stream to read.")
        mode = reader_mode(config.get("mode"))
        host, port = host_and_port(instance.stream_address)
        process = instance.process
        alive = None if process is None else process.is_alive
        if keep_waiting is not None:
            alive = lambda: keep_waiting() and (process is None or process.is_alive())  # noqa: E731
        with source(host=host, port=port, mode=mode, receive_timeout=200) as stream:
            message = next_message(stream, timeout, alive=alive)
        if message is None:
            if keep_waiting is not None and not keep_waiting():
                raise Cancelled(f"Wait for a message of instance '{instance_id}' cancelled: no client waits any more.")
            if process is not None and not process.is_alive():
                info = process.info()
                raise SourceUnavailable(f"Instance '{instance_id}' stopped (exit code {info['exit_code']}, "
                                        f"last error: {info['last_error']}).")
            raise SourceUnavailable(f"No message from instance '{instance_id}' in {timeout:.0f} s.")
        data = message.data
        return {
            "pulse_id": data.pulse_id,
            "global_timestamp": [data.global_timestamp, data.global_timestamp_offset],
            "data": {name: to_json_value(value.value) for name, value in data.data.items()},
        }

    # --- internals ----------------------------------------------------------------------------------------
    def _get(self, instance_id: str) -> _Instance:
        """A live instance (running or starting); one whose process ended is reaped first, so it is gone."""
        validate_name(instance_id, "instance id")
        with self._instances.lock:
            instance = self._instances.get(instance_id)
            if instance is not None and not self._alive(instance):
                self.reap()
                instance = self._instances.get(instance_id)
            finished = self._instances.ended(instance_id)
        if instance is None:
            if finished is not None:
                raise NotFound(f"Instance '{instance_id}' is not running any more{_how_it_ended(finished)}.")
            raise NotFound(f"Instance '{instance_id}' does not exist.")
        return instance

    @contextmanager
    def _shared_config_lock(self, key: str) -> Iterator[None]:
        """Hold the lock of one requested config; the entry is dropped when its last user leaves."""
        with self._shared_locks_guard:
            lock, users = self._shared_locks.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._shared_locks_guard:
                users[0] -= 1
                if not users[0]:
                    del self._shared_locks[key]

    def _check_output_file(self, config: dict[str, Any]) -> None:
        """A FILE path outside ``--file_folder`` is a 400 at creation, not an instance that fails to start."""
        if config["mode"] == "FILE":  # an expanded config: mode is resolved and upper case
            try:
                resolve_output_file(config["file"], self.file_folder, self.protected_folders)
            except FileOutputError as exc:
                raise InvalidConfig(str(exc)) from None

    def _check_function(self, config: dict[str, Any]) -> None:
        """A ``function`` outside the built-ins and the scripts folder is a 400 unless the server allows it."""
        if not self.allow_external_functions:
            reason = external_function(config.get("function"), self.scripts_folder)
            if reason is not None:
                raise InvalidConfig(refusal(reason))

    def _check_output_target(self, config: dict[str, Any]) -> None:
        """A FILE target that exists, sits in no writable folder or is written by a running instance is a 4xx at
        creation (see :func:`check_output_target`), not an instance that ends with exit code 1 after a 200."""
        if config["mode"] != "FILE":
            return
        path = resolve_output_file(config["file"], self.file_folder)  # checked by _check_output_file
        for _, instance in self._instances.items():
            other = instance.config
            if other.get("mode") == "FILE" and self._alive(instance):
                try:
                    same = resolve_output_file(other["file"], self.file_folder) == path
                except FileOutputError:
                    same = False
                if same:
                    raise Conflict(f"FILE output: instance '{instance.instance_id}' is writing {path}.")
        try:
            check_output_target(path)
        except FileOutputError as exc:  # 409: the file system's state, not the config, is in the way
            raise Conflict(str(exc)) from None

    @staticmethod
    def _alive(instance: _Instance) -> bool:
        return instance.process is None or instance.process.is_alive()

    def _info(self, instance: _Instance) -> dict[str, Any]:
        """Instance info with the keys PSI's tools read (psi-interface.md 2) beside ours (pid, is_running,
        exit_code, last_error, ...); also the "ended" record of the instance table."""
        if instance.process is not None:
            info = instance.process.info()
        else:
            info = {"instance_id": instance.instance_id, "pid": None, "is_running": False, "exit_code": None,
                    "created": instance.created, "statistics": {}, "last_error": None, "last_error_time": None}
        streaming = info["is_running"] and info["statistics"].get("start_time", 0) > 0
        info.update(stream_address=instance.stream_address, read_only=instance.read_only,
                    camera_name=instance.config.get("camera_name"), config=dict(instance.config),
                    is_stream_active=bool(streaming), last_start_time=format_time(instance.created),
                    statistics=psi_statistics(info))
        return info

    def _create(self, config: dict[str, Any], instance_id: str | None, read_only: bool,
                ) -> tuple[str, str, dict[str, Any]]:
        with self.blocking:  # it may wait for the camera server to start the camera
            return self._create_now(config, instance_id, read_only)

    def _create_now(self, config: dict[str, Any], instance_id: str | None, read_only: bool,
                    ) -> tuple[str, str, dict[str, Any]]:
        if instance_id is not None:
            validate_name(instance_id, "instance id")
        expanded = expand_config(config)
        requested = _without_reload(dict(expanded))  # before inputs/outputs are resolved into expanded
        if instance_id is not None and instance_id in self._instances:
            self.reap()  # a finished, not yet reaped instance must not block its id
        self._check_output_file(expanded)
        self._check_function(expanded)
        self._check_output_target(expanded)
        camera_stream, reservation, frame_bytes = self._resolve_inputs(expanded)
        if not PIPELINE_TYPES[expanded["pipeline_type"]].needs_input or expanded.get("bsread_address"):
            frame_bytes = 0  # it does not read the camera's images: they say nothing of its messages
        self._check_background(expanded)
        self._check_roi(expanded)
        target = self._target or _default_target()
        with self._instances.lock:
            if instance_id is None:
                instance_id = str(uuid.uuid4())
            if instance_id in self._instances:
                raise Conflict(f"Instance id '{instance_id}' is already in use.")
            self._check_background_still_there(expanded)
            if len(self._instances.items()) >= self.max_instances:
                self.reap()  # ended ones do not count
                running = len(self._instances.items())
                if running >= self.max_instances:
                    raise InstanceLimit(f"This server runs {running} pipeline instances, its limit (--max_instances "
                                        f"{self.max_instances}): stop one, or try again when one has ended.")
            used = {i.port for _, i in self._instances.items()}
            port = reserve_port(exclude=used)
            if PIPELINE_TYPES[expanded["pipeline_type"]].binds_input and not expanded.get("input_stream"):
                in_port = reserve_port(exclude=used | {port})
                expanded["input_stream"] = f"tcp://{self.hostname}:{in_port}"
            model = parse_pipeline_config(expanded)  # what the instance runs with: the resolved config
            instance = _Instance(instance_id, _without_reload(expanded), f"tcp://{self.hostname}:{port}", port,
                                 read_only, camera_stream, requested)
            self._instances.add(instance_id, instance)
        spec = InstanceSpec(instance_id=instance_id, config=model,
                            output_endpoint=listen_endpoint(self.stream_interface, port),
                            stream_address=instance.stream_address, camera_stream=camera_stream,
                            camera_frame_bytes=frame_bytes,
                            cam_server_url=self.cam_client.get_address(),
                            background_folder=str(self.background_store.folder), scripts_folder=self.scripts_folder,
                            file_folder=self.file_folder, protected_folders=self.protected_folders,
                            memory_limit=self.instance_memory_limit,
                            stream_interface=self.stream_interface,
                            allow_external_functions=self.allow_external_functions,
                            shared_memory=self.shared_memory)
        try:
            process = InstanceProcess(instance_id, target, (spec,), preload=self._preload(),
                                      ports=_listening_ports(port, expanded))
            process.start()
        except Exception as exc:
            self._instances.remove(instance_id, instance)
            log.exception("could not start instance %s", instance_id)
            raise CamServerError(f"Could not start instance '{instance_id}': {exc}") from exc
        with self._instances.lock:
            instance.process = process
            stopped_while_starting = self._instances.get(instance_id) is not instance
        if stopped_while_starting:  # stop / stop-all came while we started it: it must not run untracked
            process.stop(self._stop_timeout)
            raise Conflict(f"Instance '{instance_id}' was stopped while it was starting.")
        log.info("started %s instance %s (pid %s) on %s", "shared" if read_only else "private", instance_id,
                 process.pid, instance.stream_address)
        if reservation is not None:
            self._release_when_connected(expanded["camera_name"], reservation, process)
        return instance_id, instance.stream_address, dict(expanded)

    def _resolve_inputs(self, config: dict[str, Any]) -> tuple[str | None, str | None, int]:
        """Start what the instance reads from / writes to; returns the camera stream (None without camera), the
        camera server's reservation of it (see :meth:`_release_when_connected`) and the bytes of one of its images
        (0: not known)."""
        if config.get("input_pipeline"):
            config["input_stream"] = self.get_instance_stream(config["input_pipeline"])
            source = self._instances.get(config["input_pipeline"])
            if source is not None and source.config.get("mode") == "PUSH" and config.get("input_mode") == "SUB":
                config["input_mode"] = "PULL"  # a SUB socket never receives from PUSH (e.g. workers of a fanout)
        if config.get("output_pipeline"):
            target = config["output_pipeline"]
            self.get_instance_stream(target)
            receiver = self._instances.get(target)
            if receiver is None or not receiver.config.get("input_stream"):
                raise Conflict(f"output_pipeline '{target}' has no input address (it must be a 'fanin' pipeline).")
            config["output_stream"] = receiver.config["input_stream"]
        camera = config.get("camera_name")
        if camera and not config.get("input_stream"):
            return self._camera_stream(camera, reserve=True)
        return None, None, 0

    def _camera_stream(self, camera: str, reserve: bool = False) -> tuple[str, str | None, int]:
        """The camera's stream from the camera server, with NotFound for cameras it does not know; ``reserve``: and
        the id of a reservation that holds the camera until released (None if the server gives none) and the bytes
        of one image (0: not known)."""
        try:
            with self.blocking:  # the camera server may start the camera (seconds)
                if reserve:
                    answer = self.cam_client.reserve_camera_stream(camera)
                    return answer["stream"], answer.get("reservation"), int(answer.get("frame_bytes") or 0)
                return self.cam_client.get_instance_stream(camera), None, 0
        except requests.RequestException as exc:
            raise self._camera_server_failure(exc) from None
        except ValueError as exc:
            if _server_error(exc):
                raise self._camera_server_failure(exc, f" for camera '{camera}'") from None
            if not self._camera_exists(camera):
                raise NotFound(f"Camera '{camera}' does not exist on the camera server.") from None
            raise SourceUnavailable(f"Camera '{camera}' cannot be streamed: {exc}") from None

    def _release_when_connected(self, camera: str, reservation: str, process: InstanceProcess) -> None:
        """Release the camera's reservation once the instance received its first frame (it is a client of the
        camera now), or once it ended, or after :data:`RESERVATION_WATCH_S` (the camera server's own bound).

        Why not on any connection: the camera cannot tell its clients apart, and another client that comes and goes
        (a frame or geometry read, another pipeline) would end the hold before a slow-starting instance connects.
        """
        def watch() -> None:
            deadline = time.monotonic() + RESERVATION_WATCH_S
            stats = process.control.stats
            while stats.get("frames_in") <= 0 and process.is_alive() and time.monotonic() < deadline:
                time.sleep(RESERVATION_POLL_S)
            try:
                self.cam_client.release_stream(camera, reservation)
            except (requests.RequestException, ValueError) as exc:  # it expires by itself
                log.info("could not release reservation %s of camera %s: %s", reservation, camera, exc)

        threading.Thread(target=watch, name=f"release-{camera}", daemon=True).start()

    def _camera_server_failure(self, exc: Exception, what: str = "") -> SourceUnavailable:
        """What went wrong asking the camera server, told apart: not reachable (no connection), no answer in time,
        or an answer of its own failure (HTTP 5xx: it is reachable, something failed there)."""
        address = self.cam_client.get_address()
        if isinstance(exc, requests.ConnectionError):
            return SourceUnavailable(f"Camera server {address} is not reachable{what}: {exc}")
        if isinstance(exc, requests.Timeout):
            return SourceUnavailable(f"Camera server {address} did not answer in time{what}: {exc}")
        if isinstance(exc, requests.RequestException):
            return SourceUnavailable(f"Request to the camera server {address} failed{what}: {exc}")
        return SourceUnavailable(f"Camera server {address} answered with an error (HTTP {_server_error(exc)}){what}: "
                                 f"{exc}")

    def _check_camera_known(self, config: dict[str, Any]) -> None:
        """A saved config must name a camera the camera server knows (409: the saved pipeline itself is fine, the
        camera server's state is in the way)."""
        camera = config.get("camera_name")
        if camera and not self._camera_exists(camera):
            raise Conflict(f"Camera '{camera}' does not exist on the camera server.")

    def _camera_exists(self, camera: str) -> bool:
        """A camera name or alias known to the camera server."""
        if camera in self.get_camera_list():
            return True
        try:
            with self.blocking:
                return camera in self.cam_client.get_camera_aliases()
        except Exception:  # noqa: BLE001 - older camera servers may not list aliases
            return False

    def _check_background(self, config: dict[str, Any]) -> None:
        """An enabled background must exist, be readable and (if the camera server tells) match the image shape."""
        background = config.get("image_background")
        if not background or config.get("image_background_enable") not in _BACKGROUND_APPLIED:
            return
        shape = self.background_store.shape(background)
        camera = config.get("camera_name")
        if not camera or config.get("input_stream"):
            return
        try:
            with self.blocking:  # the camera server may wait for a frame (seconds)
                width, height = self.cam_client.get_camera_geometry(camera)
        except Exception as exc:  # noqa: BLE001 - the instance re-checks every frame; this is an early, helpful check
            log.info("no geometry for camera %s to check background %s: %s", camera, background, exc)
            return
        bx, by = config.get("binning_x") or 1, config.get("binning_y") or 1
        if isinstance(bx, int) and isinstance(by, int) and bx > 0 and by > 0:
            width, height = width // bx, height // by
        if tuple(shape) != (height, width):
            raise InvalidConfig(f"Background '{background}' has shape {list(shape)} (rows, columns) but camera "
                                f"'{camera}' images are {height} x {width}: use a background of this camera.")

    def _check_roi(self, config: dict[str, Any]) -> None:
        """An ROI must start inside the camera's image (when the camera server tells its geometry quickly); the
        instance checks it again against the frames it gets (processing handler)."""
        camera = config.get("camera_name")
        if not config.get("image_region_of_interest") or not camera or config.get("input_stream"):
            return
        try:
            width, height = self.cam_client.get_camera_geometry(camera, timeout=GEOMETRY_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - an early, helpful check; the instance checks again
            log.info("no geometry for camera %s to check the ROI: %s", camera, exc)
            return
        problem = roi_problem(config, width, height)
        if problem:
            raise InvalidConfig(f"Invalid pipeline config: {problem} of camera '{camera}'.")

    @staticmethod
    def _check_structural(instance: _Instance, new: dict[str, Any]) -> None:
        changed = [k for k in STRUCTURAL_KEYS if new.get(k) != instance.config.get(k)]
        if changed:  # 409: a valid config, but not for the sockets and source this instance already has
            raise Conflict(f"Cannot change {', '.join(changed)} of running instance '{instance.instance_id}': "
                                "create a new instance with the new config.")


def protected_folders(config_store: SavedConfigs, background_store: BackgroundStore, scripts_folder: str,
                      ) -> dict[str, str]:
    """The folders FILE output never writes in: {what: absolute folder} of the server's stores."""
    return {"pipeline config": str(config_store.folder.absolute()),
            "background": str(background_store.folder.absolute()),
            "user scripts": os.path.abspath(scripts_folder)}


def _listening_ports(port: int, config: dict[str, Any]) -> tuple[int, ...]:
    """The TCP ports an instance listens on: its output, and the input a fan-in binds."""
    ports = [port]
    if PIPELINE_TYPES[config["pipeline_type"]].binds_input and config.get("input_stream"):
        tail = str(config["input_stream"]).rpartition(":")[2]
        if tail.isdigit():
            ports.append(int(tail))
    return tuple(ports)


def _server_error(exc: Exception) -> int | None:
    """The HTTP status of a client's error answer when it is a failure of that server (5xx but 503, which says a
    camera is unavailable), else None."""
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) and status >= 500 and status != 503 else None


def _how_it_ended(record: dict[str, Any]) -> str:
    """`` (exit code N, last error: ...)`` for messages about an instance that ended."""
    error = record.get("last_error")
    return f" (exit code {record.get('exit_code')}" + (f", last error: {error})" if error else ")")


def _without_reload(config: dict[str, Any]) -> dict[str, Any]:
    """README: ``reload`` resets itself once the function was reloaded, so the config the server shows (and merges
    later updates into) has ``reload: false``; only the config sent to the instance carries ``reload: true``."""
    return {**config, "reload": False} if config.get("reload") else config


def to_json_value(value: Any) -> Any:
    """A received channel value as plain JSON: arrays as (nested) lists, NaN/inf as None."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return np.where(np.isfinite(value), value, None).tolist()
        return value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value
