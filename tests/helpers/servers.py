"""Run the real camera and pipeline servers as processes for tests (stopped by PID afterwards)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.helpers.net import free_port
from tests.helpers.procs import ROOT, start_python, stop_pid, wait_until

EXAMPLE_CONFIG = ROOT / "configuration"


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


@contextmanager
def _server(tmp_path: Path, what: str, module: str, config: str, config_dir: Path | None, scripts: Path,
            args: list[str], ready_path: str, env: dict[str, str] | None, log_level: str) -> Iterator[RunningServer]:
    """Run ``python -m module`` on a free port with a copy of ``config_dir`` (default: the bundled ``config``)."""
    base = tmp_path / config
    shutil.copytree(config_dir or EXAMPLE_CONFIG / config, base, dirs_exist_ok=True)
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
                  log_level: str = "INFO") -> Iterator[RunningServer]:
    """A camera server on a free port with a copy of ``config_dir`` (default: the bundled example cameras)."""
    scripts = tmp_path / "camera_user_scripts"  # not created: the server creates it on the first upload
    with _server(tmp_path, "camera server", "cam_server.start_camera_server", "camera_config", config_dir, scripts,
                 [], "/api/v1/cam", env, log_level) as server:
        yield server


@contextmanager
def pipeline_server(tmp_path: Path, cam_url: str, config_dir: Path | None = None, env: dict[str, str] | None = None,
                    log_level: str = "INFO", extra_args: Sequence[str] = ()) -> Iterator[RunningServer]:
    """A pipeline server on a free port using the camera server at ``cam_url`` (``extra_args``: more options)."""
    backgrounds = tmp_path / "background_config"
    scripts = tmp_path / "user_scripts"
    backgrounds.mkdir(exist_ok=True)
    scripts.mkdir(exist_ok=True)
    with _server(tmp_path, "pipeline server", "cam_server.start_pipeline_server", "pipeline_config", config_dir,
                 scripts, ["-c", cam_url, "-g", str(backgrounds), *extra_args], "/api/v1/pipeline", env,
                 log_level) as server:
        yield server
