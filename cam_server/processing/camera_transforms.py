"""Camera-side image transforms, geometry and calibrated axes (processing spec section 1.1)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bin_image(image: np.ndarray, bx: int, by: int, mean: bool = False) -> np.ndarray:
    raise NotImplementedError


def apply_camera_transforms(image: np.ndarray, *, mirror_x: bool = False, mirror_y: bool = False, rotate: int = 0,
                            roi: Sequence[int] | None = None, binning_x: int = 1, binning_y: int = 1,
                            binning_mean: bool = False, background: np.ndarray | None = None) -> np.ndarray:
    raise NotImplementedError


def camera_geometry(raw_w: int, raw_h: int, *, rotate: int = 0, binning_x: int = 1, binning_y: int = 1,
                    roi: Sequence[int] | None = None) -> tuple[int, int]:
    raise NotImplementedError


def calibrated_axes(width: int, height: int, calibration: dict | None) -> tuple[np.ndarray, np.ndarray]:
    raise NotImplementedError
