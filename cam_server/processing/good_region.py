"""Good region (spec 3.4)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GoodRegion:
    """The cropped image and axes plus the fits that slices need."""

    image: np.ndarray
    x_axis: np.ndarray
    y_axis: np.ndarray
    x_fit_mean: float
    x_fit_std: float
    y_fit_mean: float
    y_fit_std: float


def good_region_bounds(profile: np.ndarray, threshold: float = 0.3, gfscale: float = 1.8) -> tuple[int, int]:
    raise NotImplementedError


def good_region_channels(image: np.ndarray, x_axis: np.ndarray, y_axis: np.ndarray,
                         x_profile: np.ndarray, y_profile: np.ndarray,
                         threshold: float = 0.3, gfscale: float = 1.8) -> tuple[dict, GoodRegion | None]:
    raise NotImplementedError
