"""Simulated camera: frames of :class:`~cam_server.processing.simulation.SimulatedBeam` on a fixed schedule.

Frames are due at ``t0 + k / frame_rate`` (the schedule accumulates, so a late frame is followed by a burst that
catches up, as the reference camera does). Generating inside :meth:`read` instead of in a thread means no
frame is produced that nobody sends, and there is no thread to stop.
"""

from __future__ import annotations

import time

import numpy as np

from cam_server.bsread import Wakeup
from cam_server.camera.config import CameraConfig
from cam_server.camera.sources.base import RawFrame
from cam_server.processing.simulation import DEFAULT_SIZE_X, DEFAULT_SIZE_Y, SimulatedBeam

DEFAULT_FRAME_RATE = 10.0  # Hz, when the config has no frame_rate


def simulation_geometry(config: CameraConfig) -> tuple[int, int]:
    """Raw (width, height) of a simulated camera."""
    return config.size_x or DEFAULT_SIZE_X, config.size_y or DEFAULT_SIZE_Y


class SimulationSource:
    """A :class:`~cam_server.camera.sources.base.FrameSource` that is always online."""

    def __init__(self, config: CameraConfig, seed: int | None = None) -> None:
        self.width, self.height = simulation_geometry(config)
        self.frame_rate = float(config.frame_rate or DEFAULT_FRAME_RATE)
        self.dtype = np.dtype(config.dtype)
        self._beam = SimulatedBeam(size_x=self.width, size_y=self.height, dtype=self.dtype.name,
                                   image_type=config.image_type, seed=seed)
        self._period = 1.0 / self.frame_rate
        self._t0 = 0.0
        self._k = 0
        self._wakeup = Wakeup()

    def connect(self) -> None:
        self._t0 = time.monotonic()
        self._k = 0

    def geometry(self) -> tuple[int, int]:
        return self.width, self.height

    def read(self, timeout: float) -> RawFrame | None:
        due = self._t0 + self._k * self._period
        wait = due - time.monotonic()
        if wait > 0:
            if wait > timeout:
                self._wakeup.wait(timeout)
                return None
            if self._wakeup.wait(wait):
                return None
        elif self._wakeup.is_set():
            return None
        self._k += 1
        image = self._beam.next_frame()
        return RawFrame(image=image, timestamp=time.time())

    def interrupt(self) -> None:
        self._wakeup.set()

    def close(self) -> None:
        pass

