"""Simulated beam camera (processing spec section 4)."""

from __future__ import annotations

import numpy as np


class SimulatedBeam:
    """Generates frames of a moving gaussian beam with noise and fixed dead pixels."""

    def __init__(self, size_x: int = 1280, size_y: int = 960, dtype: str = "uint16",
                 image_type: str = "beam", seed: int | None = None) -> None:
        self.width = int(size_x)
        self.height = int(size_y)
        self.dtype = np.dtype(dtype)
        self.image_type = image_type

    def next_frame(self) -> np.ndarray:
        raise NotImplementedError
