from __future__ import annotations

import numpy as np
import pytest


def gaussian_image(width: int = 200, height: int = 150, cx: float = 90.3, cy: float = 70.6, sx: float = 12.0,
                   sy: float = 6.0, amplitude: float = 40000.0, offset: float = 100.0) -> np.ndarray:
    """A noiseless separable gaussian spot as uint16 (rounded)."""
    cols = np.arange(width)
    rows = np.arange(height)
    gx = np.exp(-((cols - cx) ** 2) / (2 * sx * sx))
    gy = np.exp(-((rows - cy) ** 2) / (2 * sy * sy))
    return np.rint(offset + amplitude * np.outer(gy, gx)).astype(np.uint16)


@pytest.fixture
def spot() -> np.ndarray:
    return gaussian_image()
