"""Is a camera online? Answered without starting its stream (PSI's ``is_camera_online``).

By source type:

* ``simulation``: always online.
* ``epics``, ``area_detector`` and ``bsread`` by PV prefix: the Channel Access check a source makes when it starts
  (:meth:`EpicsCameraSource.check_online <cam_server.camera.sources.epics.EpicsCameraSource.check_online>`: the
  online PV, the geometry and, for ``bsread``, a valid stream address in ``P:BSREADCONFIG``), with at most
  :data:`CHECK_TIMEOUT` seconds for Channel Access. It runs in a short-lived process of its own, started like an
  instance: the server process never creates a Channel Access context (as the fork server, it stays free of EPICS
  threads and state, and a hanging or crashing libca cannot hurt it); the check costs a few hundred milliseconds.
* ``bsread`` with a stream address: the address must accept a connection within :data:`CONNECT_TIMEOUT` (a TCP
  connect, or a Unix socket connect for ``ipc://``), closed at once, before any ZeroMQ handshake: a PUSH upstream
  never counts it as a client, so no message is taken from its real clients. Checked also while the camera's
  instance runs: a running relay does not prove that its upstream is still there (ZeroMQ reconnects silently).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from cam_server.bsread.address import is_stream_address
from cam_server.camera.config import EPICS_SOURCE_TYPES, CameraConfig
from cam_server.camera.sources.base import CameraOffline
from cam_server.common.process import InstanceControl, InstanceProcess

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0  # seconds of Channel Access for the online check (or the camera's connection_timeout if shorter)
CONNECT_TIMEOUT = 1.0  # seconds for a stream address to accept a connection
PROCESS_MARGIN = 5.0  # seconds on top of CHECK_TIMEOUT for the check process to start (import pyepics) and end
EXIT_OFFLINE = 3


def check_camera_online(config: CameraConfig, preload: tuple[str, ...] = ()) -> tuple[bool, str]:
    """(online, why) for the camera ``config``, without starting its stream. ``preload``: the fork server's modules
    (see :class:`InstanceProcess`)."""
    name = config.name
    if config.source_type == "simulation":
        return True, f"Camera '{name}' is online (simulation)."
    if config.source_type == "bsread" and is_stream_address(config.source):
        problem = stream_unreachable(config.source, CONNECT_TIMEOUT)
        if problem is None:
            return True, f"Camera '{name}' is online: {config.source} accepts connections."
        return False, f"Camera '{name}' is offline: {problem}."
    if config.source_type in (*EPICS_SOURCE_TYPES, "bsread"):
        return _check_in_process(config, preload)
    return False, f"Camera '{name}' is offline: source_type {config.source_type!r} cannot be checked."


def stream_unreachable(address: str, timeout: float) -> str | None:
    """None when ``address`` (``tcp://host:port`` or ``ipc://path``) accepts a connection, else what went wrong."""
    try:
        if address.startswith("ipc://"):  # ZeroMQ ipc: a Unix stream socket at that path
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(address.removeprefix("ipc://"))
        else:
            host, _, port = address.removeprefix("tcp://").rpartition(":")
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except TimeoutError:
        return f"{address} did not accept a connection within {timeout:g} s"
    except OSError as exc:
        return f"cannot connect to {address} ({exc.strerror or exc})"
    return None


def _check_in_process(config: CameraConfig, preload: tuple[str, ...]) -> tuple[bool, str]:
    """Run :func:`run_online_check` in a process of its own and read its answer (exit code, reported error)."""
    name = config.name
    process = InstanceProcess(f"{name}:is_online", run_online_check, args=(config.to_dict(),), preload=preload)
    process.start()
    try:
        process.wait(CHECK_TIMEOUT + PROCESS_MARGIN)
        finished = not process.is_alive()
    finally:
        process.stop(timeout=0.5)  # joins it (or terminates a hung check) and collects its report
    if not finished:
        return False, f"Camera '{name}' is offline: the Channel Access check did not finish in time."
    if process.exitcode == 0:
        return True, f"Camera '{name}' is online."
    reason = process.last_error or f"the check process exited with code {process.exitcode}"
    return False, reason if reason.startswith("Camera") else f"Camera '{name}' is offline: {reason}"


def run_online_check(control: InstanceControl, config_dict: dict[str, Any]) -> None:
    """Check process entry point (module level: the fork server pickles it by reference): exit code 0 when online,
    else :data:`EXIT_OFFLINE` after reporting why."""
    from cam_server.camera.config import parse_camera_config
    from cam_server.camera.sources.factory import create_source

    try:
        timeout = min(float(config_dict.get("connection_timeout") or CHECK_TIMEOUT), CHECK_TIMEOUT)
        config = parse_camera_config({**config_dict, "connection_timeout": timeout}, config_dict.get("name"))
        source: Any = create_source(config)
        source.check_online()
    except CameraOffline as exc:
        control.report_error(str(exc))
        raise SystemExit(EXIT_OFFLINE) from None
    except Exception as exc:  # noqa: BLE001 - any failure must reach the server as a readable message
        control.report_error(f"{type(exc).__name__}: {exc}")
        raise SystemExit(EXIT_OFFLINE) from None
