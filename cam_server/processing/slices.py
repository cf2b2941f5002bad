"""Slices of the good region and the x-y coupling derived from them (spec 3.5)."""

from __future__ import annotations

from typing import Any

import numpy as np

from cam_server.processing.gauss_fit import GaussResult, fit_many
from cam_server.processing.good_region import GoodRegion
from cam_server.processing.parameters import SLICES_NUMBER, SLICES_ORIENTATION, SLICES_SCALE
from cam_server.processing.statistics import sum_dtype

ORIENTATIONS = ("vertical", "horizontal")


def settings(config: dict[str, Any] | None) -> tuple[int, float, str]:
    """(odd number_of_slices, scale, orientation) from an ``image_slices`` block; None entries take defaults."""
    config = config or {}
    number = config.get("number_of_slices")
    scale = config.get("scale")
    orientation = config.get("orientation") or SLICES_ORIENTATION
    try:
        number = int(SLICES_NUMBER if number is None else number)
        scale = float(SLICES_SCALE if scale is None else scale)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Invalid image_slices {config!r}: number_of_slices and scale must be numbers") from exc
    if number < 1:
        raise ValueError(f"Invalid image_slices number_of_slices {number}: must be at least 1")
    if orientation not in ORIENTATIONS:
        raise ValueError(f"Invalid image_slices orientation {orientation!r}: use 'vertical' or 'horizontal'")
    if number % 2 == 0:
        number += 1
    return number, scale, orientation


def axis_index(axis: np.ndarray, value: float) -> int:
    """Index of ``value`` on a monotonic axis as the spec defines it (ascending or descending axes)."""
    n = len(axis)
    if axis[0] <= axis[-1]:
        if value < axis[0]:
            return 0
        if value > axis[-1]:
            return n - 1
        i = int(np.searchsorted(axis, value, side="left"))  # first a[i] >= value
        return i if i < n and axis[i] == value else i - 1
    if value > axis[0]:
        return 0
    if value < axis[-1]:
        return n - 1
    return int(np.searchsorted(-axis, -value, side="left"))  # first a[i] <= value


def slice_boundaries(axis: np.ndarray, mean: float, std: float, scale: float,
                     number: int) -> tuple[list[int], int]:
    """(boundaries, half slice h); boundaries empty when even the central slice does not fit (spec 3.5 1-3)."""
    width = scale * std / number
    ic = axis_index(axis, mean)
    ih = axis_index(axis, mean + width / 2)
    half = max(abs(ih - ic), 1)
    last = len(axis) - 1
    if ic - half < 0 or ic + half > last:
        return [], half
    lo, hi = ic - half, ic + half
    boundaries = [lo, hi]
    for _ in range((number - 1) // 2):
        lo -= 2 * half
        hi += 2 * half
        if lo < 0 or hi > last:
            break
        boundaries.insert(0, lo)
        boundaries.append(hi)
    return boundaries, half


def _band_profiles(image: np.ndarray, boundaries: list[int], along_rows: bool) -> np.ndarray:
    """Sums of each band: column sums of row bands (along_rows) or row sums of column bands; (bands, length)."""
    first, last = boundaries[0], boundaries[-1]
    starts = np.asarray(boundaries[:-1]) - first
    if along_rows:
        part = image[first:last, :]
        sums = np.add.reduceat(part, starts, axis=0, dtype=sum_dtype(image.dtype, last - first))
    else:
        part = image[:, first:last]
        sums = np.add.reduceat(part, starts, axis=1, dtype=sum_dtype(image.dtype, last - first)).T
    return sums.astype(np.float64 if image.dtype.kind == "f" else np.int64, copy=False)


def _intensity(profile: np.ndarray, image_dtype: np.dtype) -> np.generic:
    """Band sum with the dtype numpy's sum gives: uint64 for unsigned, int64 for signed, float for float."""
    total = profile.sum()
    return np.uint64(total) if image_dtype.kind in "ub" else total


def slice_channels(region: GoodRegion | None, number_of_slices: int = SLICES_NUMBER,
                   scale: float = SLICES_SCALE, orientation: str = SLICES_ORIENTATION) -> dict[str, Any]:
    """All slice channels: created up front as None and filled as far as the computation goes."""
    number, scale, orientation = settings(
        {"number_of_slices": number_of_slices, "scale": scale, "orientation": orientation})
    channels: dict[str, Any] = {"slice_orientation": orientation, "slice_amount": number, "slice_length": None}
    for i in range(number):
        for key in ("center_x", "center_y", "standard_deviation", "intensity"):
            channels[f"slice_{i}_{key}"] = None
    channels.update(coupling=None, coupling_slope=None, coupling_offset=None)
    if region is None or region.x_fit is None or region.y_fit is None:
        return channels

    image = region.image
    # Vertical slices: row bands along y; horizontal: column bands along x (always needed for the coupling).
    plans = {
        "vertical": slice_boundaries(region.y_axis, region.y_fit_mean, region.y_fit_std, scale, number),
        "horizontal": slice_boundaries(region.x_axis, region.x_fit_mean, region.x_fit_std, scale, number),
    }
    wanted = ("horizontal",) if orientation == "horizontal" else ("vertical", "horizontal")
    problems: list[tuple[np.ndarray, np.ndarray]] = []
    hints: list[tuple[float, float]] = []
    band_sets: dict[str, np.ndarray] = {}
    for name in wanted:
        boundaries, _ = plans[name]
        if len(boundaries) < 2:
            continue
        bands = _band_profiles(image, boundaries, along_rows=(name == "vertical"))
        band_sets[name] = bands
        fit_axis = region.x_axis if name == "vertical" else region.y_axis
        problems.extend((fit_axis, band) for band in bands)
        # A band of a (nearly separable) beam has about the good region's centre and width along the fit axis.
        hint = (region.x_fit_mean, region.x_fit_std) if name == "vertical" else (region.y_fit_mean, region.y_fit_std)
        hints.extend([hint] * len(bands))
    fits = fit_many(problems, hints=np.array(hints)) if problems else []
    results: dict[str, list[GaussResult]] = {}
    offset = 0
    for name, bands in band_sets.items():
        results[name] = fits[offset:offset + len(bands)]
        offset += len(bands)

    # Chosen orientation -> slice_* values.
    boundaries, half = plans[orientation]
    if orientation in results:
        position_axis = region.y_axis if orientation == "vertical" else region.x_axis
        channels["slice_length"] = np.abs(position_axis[boundaries[0]] - position_axis[boundaries[1]])
        for i, (fit, band) in enumerate(zip(results[orientation], band_sets[orientation], strict=True)):
            position = position_axis[boundaries[i] + half]
            if orientation == "vertical":
                channels[f"slice_{i}_center_x"], channels[f"slice_{i}_center_y"] = fit[3], position
            else:
                channels[f"slice_{i}_center_x"], channels[f"slice_{i}_center_y"] = position, fit[3]
            channels[f"slice_{i}_standard_deviation"] = fit[4]
            channels[f"slice_{i}_intensity"] = _intensity(band, image.dtype)

    # Coupling from the horizontal slices: center_y = slope·center_x + offset.
    if len(results.get("horizontal", ())) >= 2:
        h_boundaries, h_half = plans["horizontal"]
        xs = np.array([region.x_axis[b + h_half] for b in h_boundaries[:-1]], dtype=np.float64)
        ys = np.array([fit[3] for fit in results["horizontal"]], dtype=np.float64)
        dx = xs - xs.mean()
        spread = float(np.dot(dx, dx))
        if spread == 0.0:  # degenerate line fit: coupling stays None
            return channels
        slope = float(np.dot(dx, ys - ys.mean())) / spread
        intercept = float(ys.mean()) - slope * float(xs.mean())
        if np.isfinite(slope) and np.isfinite(intercept):
            channels["coupling"] = float(slope * region.x_fit_std ** 2)
            channels["coupling_slope"] = float(slope)
            channels["coupling_offset"] = float(intercept)
    return channels
