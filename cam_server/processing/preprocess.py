"""Pipeline pre-processing (spec section 2, steps 5, 6 and 9)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bin_for_pipeline(image: np.ndarray, x_axis: np.ndarray, y_axis: np.ndarray, binning_x: int = 1,
                     binning_y: int = 1, mean: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    raise NotImplementedError


def subtract_background(image: np.ndarray, background: np.ndarray, mode: bool | str = True) -> np.ndarray:
    raise NotImplementedError


def rotate_image(image: np.ndarray, angle: float, order: int = 1, mode: str | float = "0.0") -> np.ndarray:
    raise NotImplementedError


def rotate_axes_ortho(x_axis: np.ndarray, y_axis: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    raise NotImplementedError


def apply_roi(image: np.ndarray, x_axis: np.ndarray, y_axis: np.ndarray,
              roi: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    raise NotImplementedError


def apply_threshold(image: np.ndarray, threshold: float | None, *, in_place: bool = False) -> np.ndarray:
    raise NotImplementedError


class Averager:
    """Pixel-wise averaging of frames (``averaging`` parameter)."""

    def __init__(self, n: int) -> None:
        self.n = int(n)

    def add(self, image: np.ndarray) -> np.ndarray | None:
        """Add a frame; returns the averaged frame (float64) when one is due, else None."""
        raise NotImplementedError
