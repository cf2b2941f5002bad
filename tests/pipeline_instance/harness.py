"""Test harness: a fake camera stream (:class:`tests.helpers.streams.CameraStream`), a pipeline instance in a real
forkserver child, and a receiver on its output stream."""

from __future__ import annotations

import atexit
import itertools
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from cam_server.bsread import PULL, SUB, Message, Sender, Source
from cam_server.common.process import InstanceProcess
from cam_server.pipeline.config import parse_pipeline_config
from cam_server.pipeline.instance.main import run_instance
from cam_server.pipeline.instance_spec import InstanceSpec
from tests.helpers.net import free_port
from tests.helpers.procs import wait_until
from tests.helpers.streams import CameraStream, connect

WIDTH, HEIGHT = 80, 60
CENTER_X, CENTER_Y = 30.0, 40.0
SIGMA = 4.0
AMPLITUDE, OFFSET = 4000, 100
PRELOAD = ("cam_server.pipeline.instance.main", "cam_server.processing.default", "numpy", "scipy.ndimage")


_IPC_DIR = tempfile.mkdtemp(prefix="cs-pi-")  # short: ipc paths are limited to ~100 characters
_ipc_counter = itertools.count()
atexit.register(shutil.rmtree, _IPC_DIR, ignore_errors=True)


def unique_ipc_address(what: str) -> str:
    """A stream address nobody else can hold: streams between test processes on one host use ipc, so tests
    running in parallel (other pytest sessions on the machine) can never connect to each other's streams the
    way a reused TCP port would let them."""
    return f"ipc://{_IPC_DIR}/{what}-{os.getpid()}-{next(_ipc_counter)}"


def gaussian_image(width: int = WIDTH, height: int = HEIGHT, cx: float = CENTER_X, cy: float = CENTER_Y,
                   sigma: float = SIGMA, amplitude: int = AMPLITUDE, offset: int = OFFSET) -> np.ndarray:
    """uint16 (height, width) image: offset + a gaussian spot with its peak at column cx, row cy."""
    cols = np.arange(width)[None, :]
    rows = np.arange(height)[:, None]
    spot = amplitude * np.exp(-((cols - cx) ** 2 + (rows - cy) ** 2) / (2 * sigma ** 2))
    return (offset + spot).astype(np.uint16)


class FakeCamera(CameraStream):
    """A camera stream on a private ipc address: the six camera channels (declared up front) plus ``extra``
    channels (constant values) at ``rate`` Hz from a thread."""

    def __init__(self, image: np.ndarray | None = None, rate: float = 50.0, start_pulse_id: int = 0,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(gaussian_image() if image is None else image, unique_ipc_address("camera"), rate,
                         start_pulse_id)
        self.extra = extra or {}

    def declare(self, sender: Sender) -> bool:
        h, w = self.image.shape
        sender.add_channel("width", metadata={"type": "int64", "shape": [1]})
        sender.add_channel("height", metadata={"type": "int64", "shape": [1]})
        sender.add_channel("timestamp", metadata={"type": "float64", "shape": [1]})
        sender.add_channel("image", metadata={"type": str(self.image.dtype), "shape": [w, h]})
        sender.add_channel("x_axis", metadata={"type": "float32", "shape": [w]})
        sender.add_channel("y_axis", metadata={"type": "float32", "shape": [h]})
        for name, value in self.extra.items():
            sender.add_channel(name, metadata={"type": "float64", "shape": [1]} if isinstance(value, float)
                               else {"type": "int64", "shape": [1]})
        return True

    def extra_values(self, pulse_id: int) -> dict[str, Any]:
        return self.extra


@dataclass
class RunningInstance:
    process: InstanceProcess
    spec: InstanceSpec
    folders: Path
    receivers: list[Source] = field(default_factory=list)

    @property
    def config(self) -> dict[str, Any]:
        return self.spec.config.to_dict()

    def update(self, **changes: Any) -> dict[str, Any]:
        """Send a live config update (validated like the server does) and return it expanded."""
        config = parse_pipeline_config({**self.spec.config.to_dict(), **changes})
        self.spec.config = config
        self.process.update_config(config)
        return config.to_dict()

    def receiver(self, mode: int = SUB, queue_size: int = 100) -> Source:
        source = connect(self.spec.stream_address, mode, queue_size)
        self.receivers.append(source)
        return source

    def info(self) -> dict[str, Any]:
        return self.process.info()

    def stats(self) -> dict[str, Any]:
        return self.process.info()["statistics"]

    def wait_exit(self, timeout: float = 15.0) -> int:
        wait_until(lambda: not self.process.is_alive(), timeout, "the instance to exit")
        self.process.wait(1)
        return self.process.exitcode


def parameters(message: Message) -> dict[str, Any]:
    return json.loads(message.data.data["processing_parameters"].value)


@contextmanager
def pipeline(tmp_path: Path, camera: FakeCamera | None = None, cam_server_url: str | None = None,
             camera_stream: str | None = None, allow_external_functions: bool = False,
             **config: Any) -> Iterator[RunningInstance]:
    """A pipeline instance reading ``camera`` (or ``camera_stream``), stopped and checked at the end
    (``allow_external_functions``: as the pipeline server's option)."""
    config.setdefault("camera_name", "fake")
    parsed = parse_pipeline_config(config)
    output = unique_ipc_address("output")
    backgrounds = tmp_path / "backgrounds"
    scripts = tmp_path / "scripts"
    backgrounds.mkdir(exist_ok=True)
    scripts.mkdir(exist_ok=True)
    spec = InstanceSpec(
        instance_id="test",
        config=parsed,
        output_endpoint=output,
        stream_address=output,
        camera_stream=camera_stream or (camera.address if camera is not None else None),
        cam_server_url=cam_server_url or f"http://127.0.0.1:{free_port()}",
        background_folder=str(backgrounds),
        scripts_folder=str(scripts),
        allow_external_functions=allow_external_functions,
    )
    process = InstanceProcess("test", run_instance, (spec,), preload=PRELOAD)
    process.start()
    running = RunningInstance(process, spec, tmp_path)
    try:
        yield running
    finally:
        for source in running.receivers:
            source.disconnect()
        process.stop(5)


class FakeCameraServer:
    """Answers ``GET /api/v1/cam/<name>`` with ``{"state": "ok", "stream": <address>}`` (a real HTTP server)."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.requests = 0
        owner = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                owner.requests += 1
                body = json.dumps({"state": "ok", "status": "ok", "stream": owner.stream}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeCameraServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


__all__ = ["FakeCamera", "FakeCameraServer", "PULL", "SUB", "pipeline", "parameters", "gaussian_image"]
