"""``python -m cam_server.cli.demo``: camera server + pipeline server + a live processed simulation stream.

Starts both servers as child processes with a copy of the bundled ``configuration/`` folder, creates an instance of
the saved pipeline ``simulation_sp``, prints the URL of its live view and one line per second with values of the
received messages, until Ctrl-C (or SIGTERM). Then it stops the instance and both servers (by PID) and removes the
temporary copy.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

import requests

CONFIGURATION = Path(__file__).resolve().parents[2] / "configuration"
PIPELINE = "simulation_sp"
READY_TIMEOUT = 60.0


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if the demo itself dies without cleaning up (e.g. SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _wait_ready(proc: subprocess.Popen, url: str, log_path: Path, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}:\n"
                               f"{log_path.read_text(errors='replace')[-2000:]}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer at {url} within {READY_TIMEOUT:.0f} s (log: {log_path})")


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _fmt(value: object) -> str:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    return "nan" if math.isnan(number) else f"{number:.2f}"


def _print_stream(stream_address: str) -> None:
    from cam_server.bsread import SUB, source
    from cam_server.bsread.address import host_and_port

    host, port = host_and_port(stream_address)
    last_print = 0.0
    with source(host=host, port=port, mode=SUB, receive_timeout=1000) as stream:
        while True:
            message = stream.receive()
            if message is None:
                print("(waiting for data ...)", flush=True)
                continue
            now = time.monotonic()
            if now - last_print < 1.0:
                continue
            last_print = now
            data = message.data.data
            x, y, i = (_fmt(data[n].value) if n in data else "-"
                       for n in ("x_center_of_mass", "y_center_of_mass", "intensity"))
            print(f"pulse_id={message.data.pulse_id} x_center_of_mass={x} y_center_of_mass={y} intensity={i}",
                  flush=True)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class Demo:
    """The processes of a demo (this one, ``cluster_demo``), their logs and its work folder (a copy of the bundled
    configuration): :meth:`run` runs the demo's body until Ctrl-C or SIGTERM, then stops the processes by PID (last
    started first) and removes the folder, however the body ended."""

    def __init__(self, prefix: str) -> None:
        self.work, self.config = work_folder(prefix)
        self.children: list[subprocess.Popen] = []
        self._logs: list[IO[bytes]] = []

    def log_path(self, name: str) -> Path:
        return self.work / f"{name}.log"

    def start(self, name: str, args: list[str], module: bool = True) -> subprocess.Popen:
        """Start ``python -m args`` (``module``) or the program ``args``, its output in ``<name>.log``. Own session:
        Ctrl-C reaches only the demo, which then stops the processes in order."""
        log = open(self.log_path(name), "wb")  # noqa: SIM115 - closed by run()
        self._logs.append(log)
        child = subprocess.Popen([sys.executable, "-m", *args] if module else args, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_die_with_parent)
        self.children.append(child)
        return child

    def wait_ready(self, child: subprocess.Popen, url: str, name: str) -> None:
        _wait_ready(child, url, self.log_path(name), name)

    def run(self, what: str, body: Callable[[], None]) -> int:
        """Run ``body`` (it starts the processes and watches them); exit code 1 when it failed, else 0."""
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            body()
        except KeyboardInterrupt:
            print("stopping ...", flush=True)
        except Exception as exc:  # noqa: BLE001 - a demo reports and cleans up
            print(f"{what} failed: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            for child in reversed(self.children):
                _stop(child)
            for log in self._logs:
                log.close()
            shutil.rmtree(self.work, ignore_errors=True)
        print("stopped.", flush=True)
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run camera + pipeline server and print a processed simulation "
                                                 "stream until Ctrl-C.")
    parser.add_argument("--camera-port", type=int, default=8888)
    parser.add_argument("--pipeline-port", type=int, default=8889)
    args = parser.parse_args(argv)
    from cam_server.client.pipeline_client import PipelineClient

    demo = Demo("cam_server_demo_")
    config = demo.config
    cam_url = f"http://127.0.0.1:{args.camera_port}"
    pipe_url = f"http://127.0.0.1:{args.pipeline_port}"

    def body() -> None:
        camera = demo.start("camera_server", ["cam_server.start_camera_server", "-p", str(args.camera_port),
                                              "-i", "127.0.0.1", "-b", str(config / "camera_config"),
                                              "-n", "127.0.0.1", "--log_level", "INFO"])
        pipeline = demo.start("pipeline_server", ["cam_server.start_pipeline_server", "-c", cam_url,
                                                  "-p", str(args.pipeline_port), "-i", "127.0.0.1",
                                                  "-b", str(config / "pipeline_config"),
                                                  "-g", str(config / "background_config"),
                                                  "-u", str(config / "user_scripts"), "-n", "127.0.0.1",
                                                  "--log_level", "INFO"])
        demo.wait_ready(camera, f"{cam_url}/api/v1/cam", "camera_server")
        demo.wait_ready(pipeline, f"{pipe_url}/api/v1/pipeline", "pipeline_server")
        print(f"camera server:   {cam_url}/api/v1/cam", flush=True)
        print(f"pipeline server: {pipe_url}/api/v1/pipeline", flush=True)

        client = PipelineClient(pipe_url)
        instance_id, stream_address = client.create_instance_from_name(PIPELINE)
        print(f"pipeline instance {instance_id} of '{PIPELINE}'", flush=True)
        print(f"pipeline stream: {stream_address}", flush=True)
        print(f"live view:       {pipe_url}/view/{instance_id}  (all views: {pipe_url}/)", flush=True)
        print("Ctrl-C to stop.", flush=True)
        _print_stream(stream_address)

    return demo.run("demo", body)


def work_folder(prefix: str) -> tuple[Path, Path]:
    """A temporary folder with a copy of the bundled configuration (so the demo changes nothing in the clone):
    (the folder, its ``configuration``)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    config = work / "configuration"
    shutil.copytree(CONFIGURATION, config)
    for sub in ("camera_config", "pipeline_config", "background_config", "user_scripts"):
        (config / sub).mkdir(exist_ok=True)
    return work, config


if __name__ == "__main__":
    sys.exit(main())
