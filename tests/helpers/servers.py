"""Run the real camera and pipeline servers as processes for tests (stopped by PID afterwards).

:func:`camera_server` and :func:`pipeline_server` start one server; :func:`server_pair` starts the pair most tests
share (the root conftest's ``server_pair`` fixture, one for the whole session).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from cam_server.client.cam_client import CamClient
from cam_server.client.pipeline_client import PipelineClient
from tests.helpers.net import free_port
from tests.helpers.procs import ROOT, start_python, stop_pid, wait_until

EXAMPLE_CONFIG = ROOT / "configuration"

TEST_CAMERA: dict[str, Any] = {
    "name": "test_camera",
    "source": "simulation",
    "source_type": "simulation",
    "mirror_x": True,
    "mirror_y": False,
    "rotate": 0,
    "camera_calibration": None,
    "alias": ["tc"],
    "group": ["test", "simulated_small"],
    "size_x": 64,
    "size_y": 48,
    "frame_rate": 20,
    "image_type": "static_beam",
}
"""A small, fast simulated camera (64 x 48 at 20 Hz, the same frame every time) beside the bundled ``simulation``."""


def write_config_dir(folder: Path, test_camera: dict[str, Any] | None = None) -> Path:
    """The bundled example cameras plus ``test_camera`` (default :data:`TEST_CAMERA`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in (EXAMPLE_CONFIG / "camera_config").glob("*.json"):
        shutil.copy(path, folder / path.name)
    (folder / "test_camera.json").write_text(json.dumps(test_camera or TEST_CAMERA, indent=2))
    return folder


@dataclass
class RunningServer:
    url: str
    pid: int
    log: Path
    base: Path     # the config folder (-b)
    scripts: Path  # the user scripts folder (-u)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _wait_ready(proc, url: str, log: Path, what: str) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        return requests.get(url, timeout=1).status_code == 200

    try:
        wait_until(ready, 30, f"{what} at {url}")
    except TimeoutError:
        stop_pid(proc)
        raise


def copy_config(tmp_path: Path, config: str, config_dir: Path | None = None) -> Path:
    """``tmp_path/config``: a copy of ``config_dir`` (default: the bundled ``configuration/<config>``), for a server
    to change as it likes."""
    base = tmp_path / config
    shutil.copytree(config_dir or EXAMPLE_CONFIG / config, base, dirs_exist_ok=True)
    return base


@contextmanager
def _server(tmp_path: Path, what: str, module: str, config: str, config_dir: Path | None, scripts: Path,
            args: list[str], ready_path: str, env: dict[str, str] | None, log_level: str) -> Iterator[RunningServer]:
    """Run ``python -m module`` on a free port with a copy of ``config_dir`` (default: the bundled ``config``)."""
    base = copy_config(tmp_path, config, config_dir)
    port = free_port()
    log = tmp_path / f"{what.replace(' ', '_')}.log"
    proc = start_python(["-m", module, "-p", str(port), "-i", "127.0.0.1", "-b", str(base), "-u", str(scripts), *args,
                         "-n", "127.0.0.1", "--log_level", log_level], env=env, log_path=log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, f"{url}{ready_path}", log, what)
        yield RunningServer(url, proc.pid, log, base, scripts)
    finally:
        stop_pid(proc)


@contextmanager
def camera_server(tmp_path: Path, config_dir: Path | None = None, env: dict[str, str] | None = None,
                  log_level: str = "INFO", extra_args: Sequence[str] = ()) -> Iterator[RunningServer]:
    """A camera server on a free port with a copy of ``config_dir`` (default: the bundled example cameras;
    ``extra_args``: more options)."""
    scripts = tmp_path / "camera_user_scripts"  # not created: the server creates it on the first upload
    with _server(tmp_path, "camera server", "cam_server.start_camera_server", "camera_config", config_dir, scripts,
                 [*extra_args], "/api/v1/cam", env, log_level) as server:
        yield server


@contextmanager
def pipeline_server(tmp_path: Path, cam_url: str, config_dir: Path | None = None, env: dict[str, str] | None = None,
                    log_level: str = "INFO", extra_args: Sequence[str] = ()) -> Iterator[RunningServer]:
    """A pipeline server on a free port using the camera server at ``cam_url`` (``extra_args``: more options); its
    FILE output goes to ``tmp_path/data`` (unless ``extra_args`` say otherwise)."""
    backgrounds = tmp_path / "background_config"
    scripts = tmp_path / "user_scripts"
    backgrounds.mkdir(exist_ok=True)
    scripts.mkdir(exist_ok=True)
    args = ["-c", cam_url, "-g", str(backgrounds), "--file_folder", str(tmp_path / "data"), *extra_args]
    with _server(tmp_path, "pipeline server", "cam_server.start_pipeline_server", "pipeline_config", config_dir,
                 scripts, args, "/api/v1/pipeline", env, log_level) as server:
        yield server


@dataclass
class ServerPair:
    """A camera server and a pipeline server reading it, with the folders tests look into."""

    camera: RunningServer
    pipeline: RunningServer
    backgrounds: Path  # the pipeline server's background folder (-g)
    data: Path         # the pipeline server's --file_folder: FILE outputs of pipeline instances go there

    @property
    def url(self) -> str:
        """The pipeline server's address (what PipelineClient takes)."""
        return self.pipeline.url

    @property
    def scripts(self) -> Path:
        """The pipeline server's user scripts folder (-u)."""
        return self.pipeline.scripts

    def stop_all_instances(self) -> None:
        """Stop every pipeline instance, then every camera instance (those the pipelines left running too)."""
        PipelineClient(self.pipeline.url).stop_all_instances()
        CamClient(self.camera.url).stop_all_instances()

    def saved_configs(self) -> set[str]:
        """Every saved camera and pipeline config, as ``camera:<name>`` and ``pipeline:<name>``."""
        return ({f"camera:{name}" for name in CamClient(self.camera.url).get_cameras()}
                | {f"pipeline:{name}" for name in PipelineClient(self.pipeline.url).get_pipelines()})

    def delete_saved_configs(self, names: set[str]) -> None:
        """Delete saved configs named like :meth:`saved_configs` names them."""
        for name in sorted(names):
            kind, _, config = name.partition(":")
            if kind == "camera":
                CamClient(self.camera.url).delete_camera_config(config)
            else:
                PipelineClient(self.pipeline.url).delete_pipeline_config(config)

    def warm_up(self) -> None:
        """One pipeline instance of the simulation camera through to its first message: the first instance of a
        fresh pipeline server waits for its fork server, which must not count against a test's message timeout."""
        client = PipelineClient(self.pipeline.url)
        instance_id, _ = client.create_instance_from_config({"camera_name": "simulation"})
        client.get_instance_message(instance_id, timeout=60)
        client.stop_instance(instance_id)


@contextmanager
def server_pair(tmp_path: Path) -> Iterator[ServerPair]:
    """A camera server with the bundled cameras plus :data:`TEST_CAMERA`, and a pipeline server with the bundled
    pipelines reading it; warmed up (:meth:`ServerPair.warm_up`)."""
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    with camera_server(tmp_path, config_dir=write_config_dir(tmp_path / "camera_configs")) as cam, \
            pipeline_server(tmp_path, cam.url) as pipe:
        pair = ServerPair(cam, pipe, tmp_path / "background_config", data)
        pair.warm_up()
        yield pair
