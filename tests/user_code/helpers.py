"""Servers and streams for the user code tests: a camera server with a user scripts folder (``-u``), a pipeline
server on top of it, an upstream bsread camera stream and readers of pipeline output streams."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from cam_server.bsread import PUB, PUSH, Message, Sender
from tests.helpers.net import free_port
from tests.helpers.servers import EXAMPLE_CONFIG, RunningServer, camera_server, pipeline_server
from tests.helpers.streams import receive_from, values  # noqa: F401 - values is re-exported

WIDTH, HEIGHT = 48, 32
SPOT_X, SPOT_Y = 30.0, 10.0  # peak column / row of the upstream image


Server = RunningServer  # url, pid, log, base (-b), scripts (-u)


@contextmanager
def camera_server_with_scripts(tmp: Path, cameras: dict[str, dict]) -> Iterator[Server]:
    """A camera server (``-u`` folder not created: the server creates it on the first upload) with the example
    cameras plus ``cameras``."""
    config = tmp / "camera_config_source"
    shutil.copytree(EXAMPLE_CONFIG / "camera_config", config, dirs_exist_ok=True)
    for name, camera in cameras.items():
        (config / f"{name}.json").write_text(json.dumps({"name": name, **camera}))
    with camera_server(tmp, config_dir=config) as server:
        yield server


@contextmanager
def pipeline_server_with_scripts(tmp: Path, cam_url: str) -> Iterator[Server]:
    """A pipeline server with its ``-u`` folder created, as a deployment would."""
    with pipeline_server(tmp, cam_url) as server:
        yield server


def spot_image(width: int = WIDTH, height: int = HEIGHT, cx: float = SPOT_X, cy: float = SPOT_Y) -> np.ndarray:
    """uint16 (height, width): a gaussian spot (peak at column cx, row cy) on a small offset; every pixel distinct
    enough that any flip or rotation is visible."""
    cols = np.arange(width)[None, :]
    rows = np.arange(height)[:, None]
    spot = 3000 * np.exp(-((cols - cx) ** 2 + (rows - cy) ** 2) / (2 * 3.0 ** 2))
    return (10 + spot).astype(np.uint16)


class Upstream:
    """A camera stream (PUB, channel ``image`` = :func:`spot_image`) from ``start_pulse_id`` at ~``rate`` Hz, and
    optionally a bsread data stream (PUSH, non-blocking) for the pulse ids ``data_for(pid)`` accepts, sent just
    before the frame of the same pulse id. Read by bsread-source cameras with ``bsread_mode: SUB``."""

    def __init__(self, rate: float = 100.0, start_pulse_id: int = 1000,
                 data_for: Callable[[int], dict[str, Any] | None] | None = None) -> None:
        self.image = spot_image()
        self.image.flags.writeable = False
        self.camera_port = free_port()
        self.data_port = free_port()
        self.rate = rate
        self.pulse_id = start_pulse_id
        self.data_for = data_for
        self.data_sent: dict[int, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="upstream", daemon=True)

    @property
    def camera_address(self) -> str:
        return f"tcp://127.0.0.1:{self.camera_port}"

    @property
    def data_address(self) -> str:
        return f"tcp://127.0.0.1:{self.data_port}"

    def _run(self) -> None:
        camera = Sender(port=self.camera_port, address="tcp://127.0.0.1", mode=PUB, block=False, queue_size=20)
        camera.open()
        data_sender = None
        if self.data_for is not None:
            data_sender = Sender(port=self.data_port, address="tcp://127.0.0.1", mode=PUSH, block=False,
                                 queue_size=200)
            data_sender.open()
        try:
            while not self._stop.wait(1.0 / self.rate):
                pid = self.pulse_id
                timestamp = (1_700_000_000 + pid // 100, (pid % 100) * 10_000_000)
                if data_sender is not None:
                    data = self.data_for(pid)  # type: ignore[misc]
                    if data is not None and data_sender.send(data, pulse_id=pid, timestamp=timestamp):
                        self.data_sent[pid] = data
                camera.send({"image": self.image}, pulse_id=pid, timestamp=timestamp)
                self.pulse_id += 1
        finally:
            camera.close()
            if data_sender is not None:
                data_sender.close()

    def __enter__(self) -> Upstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def relay_camera(upstream: Upstream, **overrides: Any) -> dict[str, Any]:
    """Camera config of a bsread-source camera reading ``upstream`` (SUB, so several cameras can share it)."""
    return {"source": upstream.camera_address, "source_type": "bsread", "bsread_mode": "SUB", "mirror_x": False,
            "mirror_y": False, "rotate": 0, "camera_calibration": None, **overrides}


def receive(stream: str, count: int, predicate: Callable[[Message], bool] | None = None, timeout: float = 15.0,
            ) -> list[Message]:
    """``count`` messages (each satisfying ``predicate``) of a pipeline stream; raises TimeoutError."""
    return receive_from(stream, count, predicate, timeout)
