"""Good region: the part of the image around the beam where the fits are repeated (spec 3.4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cam_server.processing.gauss_fit import GaussResult, fit_channels
from cam_server.processing.parameters import GOOD_REGION_GFSCALE, GOOD_REGION_THRESHOLD
from cam_server.processing.statistics import profiles

GOOD_REGION_KEYS = (
    "good_region", "gr_x_axis", "gr_y_axis", "gr_x_profile", "gr_y_profile",
    "gr_x_fit_gauss_function", "gr_x_fit_offset", "gr_x_fit_amplitude", "gr_x_fit_standard_deviation",
    "gr_x_fit_mean",
    "gr_y_fit_gauss_function", "gr_y_fit_offset", "gr_y_fit_amplitude", "gr_y_fit_standard_deviation",
    "gr_y_fit_mean",
    "gr_intensity",
)


@dataclass
class GoodRegion:
    """The cropped image, axes and profiles; the fit results are filled in by :func:`good_region_channels`."""

    image: np.ndarray
    x_axis: np.ndarray
    y_axis: np.ndarray
    x_profile: np.ndarray
    y_profile: np.ndarray
    bounds: tuple[int, int, int, int]  # xs, ys, xe, ye (end exclusive)
    x_fit: GaussResult | None = None
    y_fit: GaussResult | None = None

    @property
    def x_fit_mean(self) -> float:
        return self.x_fit[3]

    @property
    def x_fit_std(self) -> float:
        return self.x_fit[4]

    @property
    def y_fit_mean(self) -> float:
        return self.y_fit[3]

    @property
    def y_fit_std(self) -> float:
        return self.y_fit[4]


def settings(config: dict[str, Any] | None) -> tuple[float, float]:
    """(threshold, gfscale) from an ``image_good_region`` block, None entries taking the defaults."""
    config = config or {}
    threshold = config.get("threshold")
    gfscale = config.get("gfscale")
    try:
        return (float(GOOD_REGION_THRESHOLD if threshold is None else threshold),
                float(GOOD_REGION_GFSCALE if gfscale is None else gfscale))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Invalid image_good_region {config!r}: threshold and gfscale must be numbers") from exc


def good_region_bounds(profile: np.ndarray, threshold: float = GOOD_REGION_THRESHOLD,
                       gfscale: float = GOOD_REGION_GFSCALE) -> tuple[int, int]:
    """(start, end) of the good region along one profile, end exclusive when used as a slice (spec 3.4)."""
    n = len(profile)
    low = profile.min()
    level = low + (profile.max() - low) * threshold
    m = int(np.argmax(profile))
    below = profile < level
    down = below[1:m + 1][::-1]  # indices m down to 1
    start = m - int(np.argmax(down)) if down.any() else m
    up = below[m:]
    end = m + int(np.argmax(up)) if up.any() else m
    extra = (end - start) * (gfscale - 1)
    start_f = max(start - extra / 2, 0)
    end_f = min(end + extra / 2, n - 1)
    return int(start_f), int(end_f)


def find_good_region(image: np.ndarray, x_axis: np.ndarray, y_axis: np.ndarray, x_profile: np.ndarray,
                     y_profile: np.ndarray, threshold: float = GOOD_REGION_THRESHOLD,
                     gfscale: float = GOOD_REGION_GFSCALE) -> GoodRegion | None:
    """Crop image/axes to the good region and compute its profiles; None when the region is empty."""
    try:
        xs, xe = good_region_bounds(x_profile, threshold, gfscale)
        ys, ye = good_region_bounds(y_profile, threshold, gfscale)
    except ValueError:  # empty profiles
        return None
    if xe <= xs or ye <= ys:
        return None
    cropped = image[ys:ye, xs:xe]
    gr_x_profile, gr_y_profile = profiles(cropped)
    return GoodRegion(cropped, x_axis[xs:xe], y_axis[ys:ye], gr_x_profile, gr_y_profile, (xs, ys, xe, ye))


def good_region_channels(region: GoodRegion | None) -> dict[str, Any]:
    """The 16 ``gr_*`` channels (all None when there is no region or its fits are missing)."""
    channels: dict[str, Any] = dict.fromkeys(GOOD_REGION_KEYS)
    if region is None or region.x_fit is None or region.y_fit is None:
        return channels
    xs, ys, xe, ye = region.bounds
    channels["good_region"] = np.array([xs, ys, xe, ye], dtype=np.int64)
    channels["gr_x_axis"] = region.x_axis
    channels["gr_y_axis"] = region.y_axis
    channels["gr_x_profile"] = region.x_profile
    channels["gr_y_profile"] = region.y_profile
    channels.update(fit_channels("gr_x", region.x_fit))
    channels.update(fit_channels("gr_y", region.y_fit))
    channels["gr_intensity"] = region.x_profile.sum()
    return channels
