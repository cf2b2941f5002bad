"""Streams for the user code tests: an upstream bsread camera stream (and data stream), and the configs of
cameras relaying it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from cam_server.bsread import PUB, PUSH, Sender
from tests.helpers.net import free_port

WIDTH, HEIGHT = 48, 32
SPOT_X, SPOT_Y = 30.0, 10.0  # peak column / row of the upstream image


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
