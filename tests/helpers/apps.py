"""The camera and pipeline REST apps built in this process, for tests of answers that need no instance process
(envelopes of bad requests, validation): quick, and no server process to start.

Tests send their requests through FastAPI's ``TestClient`` (:attr:`LocalApp.http`). Our own clients need an address
(a CamClient under test, the pipeline manager's camera client): the same app is also served by uvicorn from a thread
of this process (:attr:`LocalApp.url`); stopping that server closes the app's manager, as a real server does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cam_server.camera.manager import CameraInstanceManager
from cam_server.camera.store import CameraConfigStore
from cam_server.client.cam_client import CamClient
from cam_server.common.log_ring import LogRing
from cam_server.common.scripts_store import ScriptStore
from cam_server.pipeline.server.backgrounds import BackgroundStore
from cam_server.pipeline.server.manager import PipelineManager
from cam_server.pipeline.server.saved_configs import SavedConfigs
from cam_server.rest.camera_app import create_camera_app
from cam_server.rest.pipeline_app import create_pipeline_app
from tests.helpers.net import free_port
from tests.helpers.procs import wait_until
from tests.helpers.servers import copy_config


@dataclass
class LocalApp:
    """One REST app in this process."""

    http: TestClient  # requests straight into the app
    url: str          # the same app served on 127.0.0.1, for our clients
    base: Path        # its config folder (-b)
    logs: LogRing     # records of cam_server's loggers while it runs (also its /api/v1/logs)
    backgrounds: Path | None = None  # the pipeline app's background folder (-g)

    def errors(self) -> list[list[str]]:
        """The ERROR (and worse) records logged while it ran: an unexpected error behind a 500 shows here."""
        return [r for r in self.logs.records() if r[2] in ("ERROR", "CRITICAL")]


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """``app`` served by uvicorn from a thread of this process on a free port; its address."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 10, f"the app to serve on port {port}")
        if not server.started:
            raise RuntimeError(f"uvicorn could not serve on port {port}")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def _local(app: FastAPI, base: Path, logs: LogRing, backgrounds: Path | None = None) -> Iterator[LocalApp]:
    logger = logging.getLogger("cam_server")
    logger.addHandler(logs)
    try:
        with serve(app) as url:
            yield LocalApp(TestClient(app), url, base, logs, backgrounds)
    finally:
        logger.removeHandler(logs)


@contextmanager
def camera_app(tmp_path: Path, config_dir: Path | None = None, api_token: str | None = None) -> Iterator[LocalApp]:
    """The camera server's app with a copy of ``config_dir`` (default: the bundled cameras), a user scripts folder,
    streams handed out for 127.0.0.1 (``api_token``: as the server's --api_token)."""
    base = copy_config(tmp_path, "camera_config", config_dir)
    manager = CameraInstanceManager(CameraConfigStore(base), hostname="127.0.0.1")
    logs = LogRing()
    with _local(create_camera_app(manager, ScriptStore(tmp_path / "camera_user_scripts"), logs, api_token=api_token),
                base,
                logs) as local:
        yield local


@contextmanager
def pipeline_app(tmp_path: Path, cam_url: str, config_dir: Path | None = None, api_token: str | None = None,
                 ) -> Iterator[LocalApp]:
    """The pipeline server's app with a copy of ``config_dir`` (default: the bundled pipelines), its camera server
    at ``cam_url`` (an in-process camera app's :attr:`LocalApp.url`, or an address nobody answers when the routes
    under test never ask the camera server), background and user scripts folders (``api_token``: as the server's
    --api_token)."""
    base = copy_config(tmp_path, "pipeline_config", config_dir)
    backgrounds, scripts = tmp_path / "background_config", tmp_path / "user_scripts"
    backgrounds.mkdir(exist_ok=True)
    scripts.mkdir(exist_ok=True)
    manager = PipelineManager(CamClient(cam_url), SavedConfigs(base), BackgroundStore(backgrounds), str(scripts),
                              "127.0.0.1")
    logs = LogRing()
    with _local(create_pipeline_app(manager, logs, api_token=api_token), base, logs, backgrounds) as local:
        yield local


@dataclass
class LocalApps:
    """The camera app and a pipeline app asking it, both in this process."""

    camera: LocalApp
    pipeline: LocalApp


@contextmanager
def local_apps(tmp_path: Path) -> Iterator[LocalApps]:
    """Both apps on copies of the bundled configuration (what :func:`tests.helpers.servers.server_pair` serves,
    without test_camera)."""
    with camera_app(tmp_path / "camera") as cam, pipeline_app(tmp_path / "pipeline", cam.url) as pipe:
        yield LocalApps(cam, pipe)
