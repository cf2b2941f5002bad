"""Camera-side image transforms, geometry and calibrated axes (processing spec section 1.1).

Order: binning → mirror_x → mirror_y → rotate (90° counter-clockwise steps) → roi crop → background → contiguous.
The camera ``roi`` uses the same layout as the pipeline ROI: ``[offset_x, size_x, offset_y, size_y]``, clamped the
same way (see :func:`roi_bounds`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

CALIBRATION_DEFAULTS: dict[str, Any] = {
    "reference_marker": [0, 0, 100, 100],
    "reference_marker_width": 100.0,
    "reference_marker_height": 100.0,
    "angle_horizontal": 0.0,
    "angle_vertical": 0.0,
}


def bin_image(image: np.ndarray, bx: int, by: int, mean: bool = False) -> np.ndarray:
    """Crop to multiples of (by, bx) and block-sum (clipped to 0..65535) or block-mean; result uint16."""
    bx, by = int(bx), int(by)
    if bx < 1 or by < 1:
        raise ValueError(f"Invalid binning {bx}, {by}: must be positive integers")
    height, width = image.shape
    h, w = height // by, width // bx
    if h == 0 or w == 0:
        raise ValueError(f"Invalid binning {bx}x{by} for an image of {width}x{height}")
    blocks = image[:h * by, :w * bx]
    accumulator = np.float64 if image.dtype.kind == "f" else np.int64
    summed = np.add.reduce(blocks.reshape(h * by, w, bx), axis=2, dtype=accumulator)
    summed = np.add.reduce(summed.reshape(h, by, w), axis=1)
    if mean:
        summed = summed / (bx * by)
    return np.clip(summed, 0, 65535).astype(np.uint16)


def roi_bounds(width: int, height: int, roi: Sequence[int]) -> tuple[int, int, int, int]:
    """Clamped (ox, sx, oy, sy) of an ``[offset_x, size_x, offset_y, size_y]`` ROI (spec 2 step 9.4)."""
    try:
        offset_x, size_x, offset_y, size_y = (int(v) for v in roi)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Invalid image_region_of_interest {roi!r}: expected [offset_x, size_x, offset_y, "
                         f"size_y] integers") from exc
    if size_x < 1 or size_y < 1:
        raise ValueError(f"Invalid image_region_of_interest {list(roi)!r}: sizes must be positive")
    sx, sy = min(size_x, width), min(size_y, height)
    ox = max(0, min(offset_x, width - sx))
    oy = max(0, min(offset_y, height - sy))
    return ox, sx, oy, sy


def roi_outside(roi: Sequence[int] | None, width: int, height: int) -> str | None:
    """Why an ``[offset_x, size_x, offset_y, size_y]`` ROI does not start inside a ``width`` x ``height`` image, or
    None. Sizes beyond the image edge are clamped (:func:`roi_bounds`, as processing.md defines), but an offset
    outside the image would be clamped to a region nobody asked for: refused where the geometry is known."""
    if roi is None:
        return None
    offset_x, _, offset_y, _ = (int(v) for v in roi)
    if offset_x >= width or offset_y >= height:
        return (f"{list(roi)} starts outside the {width} x {height} image (offsets must be < {width} and < "
                f"{height})")
    return None


def apply_camera_transforms(image: np.ndarray, *, mirror_x: bool = False, mirror_y: bool = False, rotate: int = 0,
                            roi: Sequence[int] | None = None, binning_x: int = 1, binning_y: int = 1,
                            binning_mean: bool = False, background: np.ndarray | None = None) -> np.ndarray:
    """Spec 1.1 transforms; returns a C-contiguous array (the input itself when nothing had to change)."""
    out = image
    if int(binning_x or 1) != 1 or int(binning_y or 1) != 1:
        out = bin_image(out, int(binning_x or 1), int(binning_y or 1), bool(binning_mean))
    if mirror_x:
        out = out[:, ::-1]
    if mirror_y:
        out = out[::-1, :]
    turns = int(rotate or 0) % 4
    if turns:
        out = np.rot90(out, turns)
    if roi is not None:
        height, width = out.shape
        ox, sx, oy, sy = roi_bounds(width, height, roi)
        out = out[oy:oy + sy, ox:ox + sx]
    if background is not None:
        if background.shape != out.shape:
            raise ValueError(f"Invalid background_image size {background.shape} compared to image size "
                             f"{out.shape}")
        result = np.empty(out.shape, dtype=out.dtype)  # C-contiguous by construction
        np.maximum(out, background, out=result, casting="unsafe")
        np.subtract(result, background, out=result, casting="unsafe")
        return result
    return np.ascontiguousarray(out)


def camera_geometry(raw_w: int, raw_h: int, *, rotate: int = 0, binning_x: int = 1, binning_y: int = 1,
                    roi: Sequence[int] | None = None) -> tuple[int, int]:
    """(width, height) of the transformed image: raw size / binning, swapped for odd rotations, then ROI."""
    width, height = int(raw_w) // int(binning_x or 1), int(raw_h) // int(binning_y or 1)
    if int(rotate or 0) % 2:
        width, height = height, width
    if roi is not None:
        _, width, _, height = roi_bounds(width, height, roi)
    return width, height


def calibrated_axes(width: int, height: int, calibration: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """(x_axis, y_axis) float32: pixel indices, or calibrated units (descending) when a calibration is given."""
    if not calibration:
        return np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
    cal = {**CALIBRATION_DEFAULTS, **{k: v for k, v in calibration.items() if v is not None}}
    try:
        x1, y1, x2, y2 = (float(v) for v in cal["reference_marker"])
        marker_width = float(cal["reference_marker_width"])
        marker_height = float(cal["reference_marker_height"])
        angle_h = float(cal["angle_horizontal"])
        angle_v = float(cal["angle_vertical"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Invalid camera_calibration {calibration!r}: reference_marker must be 4 numbers, the "
                         f"widths and angles numbers") from exc
    origin_x = int(x1 + (x2 - x1) / 2)
    origin_y = int(y1 + (y2 - y1) / 2)
    try:
        pixel_x = marker_width / (x2 - x1) * math.cos(angle_h * math.pi / 180)
        pixel_y = marker_height / (y2 - y1) * math.cos(angle_v * math.pi / 180)
    except ZeroDivisionError:
        pixel_x = pixel_y = 1.0
    x_axis = (-(np.arange(width, dtype=np.float64) - origin_x) * pixel_x).astype(np.float32)
    y_axis = (-(np.arange(height, dtype=np.float64) - origin_y) * pixel_y).astype(np.float32)
    return x_axis, y_axis
