"""The interface between a camera instance loop and whatever produces its raw frames.

Every source type (EPICS, bsread, simulation) implements :class:`FrameSource`, so the instance loop that applies
the camera-side transforms and publishes the bsread stream never needs to know where frames come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from cam_server.common.errors import SourceUnavailable


@dataclass
class RawFrame:
    image: np.ndarray  # (H, W) in the camera's configured dtype, C-contiguous; the consumer never mutates it
    timestamp: float  # seconds since epoch (EPICS: the PV monitor timestamp)
    pulse_id: int | None = None  # None → the instance numbers frames itself
    extra: dict[str, Any] | None = None  # additional channels (bsread sources)


class CameraOffline(SourceUnavailable, RuntimeError):
    """The camera cannot be reached or is not ready; the message says which and why."""


class FrameSource(Protocol):
    def connect(self) -> None: ...  # raises CameraOffline with a clear message

    def geometry(self) -> tuple[int, int]: ...  # raw (width, height) as the camera reports it

    def read(self, timeout: float) -> RawFrame | None: ...  # next frame, None on timeout

    def interrupt(self) -> None: ...  # from any thread: a waiting read returns None now, and every later read too

    def close(self) -> None: ...
