"""PNG rendering of camera frames with numpy colour lookup tables (no matplotlib).

Pixels are scaled linearly from ``[min_value, max_value]`` (default: the frame's own range) to 256 levels and
looked up in a 256×3 table; ``scale`` resizes the picture (nearest neighbour below 1, bilinear above).
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np
from PIL import Image

from cam_server.common.errors import CamServerError

# Control points (position 0..1, r, g, b in 0..1), interpolated linearly into 256 entries.
_CONTROL_POINTS: dict[str, list[tuple[float, float, float, float]]] = {
    "gray": [(0.0, 0, 0, 0), (1.0, 1, 1, 1)],
    "gray_r": [(0.0, 1, 1, 1), (1.0, 0, 0, 0)],
    "hot": [(0.0, 0.04, 0, 0), (0.375, 1, 0, 0), (0.75, 1, 1, 0), (1.0, 1, 1, 1)],
    "jet": [(0.0, 0, 0, 0.5), (0.11, 0, 0, 1), (0.125, 0, 0, 1), (0.34, 0, 0.87, 1), (0.35, 0, 0.9, 0.97),
            (0.64, 1, 1, 0), (0.66, 1, 0.96, 0), (0.89, 1, 0, 0), (1.0, 0.5, 0, 0)],
    "viridis": [(0.0, 0.267, 0.005, 0.329), (0.25, 0.229, 0.322, 0.546), (0.5, 0.128, 0.567, 0.551),
                (0.75, 0.369, 0.789, 0.383), (1.0, 0.993, 0.906, 0.144)],
}
_LUTS: dict[str, np.ndarray] = {}
COLORMAPS = tuple(sorted(_CONTROL_POINTS))
MAX_OUTPUT_PIXELS = 50_000_000
MAX_SCALE = 10.0  # query ``scale``: a picture is at most 10 times as wide and high as the image


def colormap_lut(name: str) -> np.ndarray:
    """256×3 uint8 table of colormap ``name`` (``grey`` = ``gray``)."""
    key = {"grey": "gray", "grey_r": "gray_r", "greys": "gray"}.get(name, name)
    if key not in _CONTROL_POINTS:
        raise CamServerError(f"Unknown colormap '{name}': use one of {', '.join(COLORMAPS)}.")
    lut = _LUTS.get(key)
    if lut is None:
        points = np.array(_CONTROL_POINTS[key], dtype=np.float64)
        x = np.linspace(0.0, 1.0, 256)
        channels = [np.interp(x, points[:, 0], points[:, i]) for i in (1, 2, 3)]
        lut = np.clip(np.round(np.stack(channels, axis=1) * 255), 0, 255).astype(np.uint8)
        _LUTS[key] = lut
    return lut


def to_levels(image: np.ndarray, min_value: float | None = None, max_value: float | None = None) -> np.ndarray:
    """uint8 levels 0..255 of ``image`` mapped linearly from [min_value, max_value]."""
    low = float(np.min(image)) if min_value is None else float(min_value)
    high = float(np.max(image)) if max_value is None else float(max_value)
    if high <= low:
        return np.where(image > low, 255, 0).astype(np.uint8)
    scaled = (image.astype(np.float32) - low) * (255.0 / (high - low))
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def check_render_options(scale: float | None = None, min_value: float | None = None,
                         max_value: float | None = None, colormap: str = "gray") -> None:
    """Refuse bad rendering options (clear 400) before anyone waits for a frame."""
    if scale is not None and not 0 < scale <= MAX_SCALE:
        raise CamServerError(f"Invalid scale {scale}: must be a positive number, at most {MAX_SCALE:g}.")
    for name, value in (("min_value", min_value), ("max_value", max_value)):
        if value is not None and not math.isfinite(value):
            raise CamServerError(f"Invalid {name} {value}: must be a finite number.")
    colormap_lut(colormap)


def render_png(image: np.ndarray, scale: float | None = None, min_value: float | None = None,
               max_value: float | None = None, colormap: str = "gray") -> bytes:
    """PNG bytes of a 2-D frame."""
    if image.ndim != 2:
        raise CamServerError(f"Cannot render an image of shape {image.shape}: expected 2-D.")
    check_render_options(scale, min_value, max_value, colormap)
    lut = colormap_lut(colormap)
    rgb = lut[to_levels(image, min_value, max_value)]
    picture = Image.fromarray(rgb, mode="RGB")
    if scale is not None and scale != 1:
        # At most MAX_OUTPUT_PIXELS: a larger scale of a large image gives the largest picture that fits.
        scale = min(scale, math.sqrt(MAX_OUTPUT_PIXELS / (picture.width * picture.height)))
        width, height = max(1, round(picture.width * scale)), max(1, round(picture.height * scale))
        picture = picture.resize((width, height), Image.BILINEAR if scale > 1 else Image.NEAREST)
    out = io.BytesIO()
    picture.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def image_bytes_payload(image: np.ndarray, header: dict[str, Any] | None = None) -> dict[str, Any]:
    """JSON-able raw image: base64 bytes (C order, native little-endian) plus what is needed to rebuild it."""
    data = np.ascontiguousarray(image)
    payload: dict[str, Any] = {
        "bytes": base64.b64encode(data.tobytes()).decode("ascii"),
        "dtype": data.dtype.name,
        "shape": list(data.shape),  # numpy order: [height, width]
        "width": int(data.shape[1]),
        "height": int(data.shape[0]),
        "encoding": "base64",
        "byteorder": "little",
    }
    if header:
        payload.update({k: header[k] for k in ("pulse_id", "timestamp") if header.get(k) is not None})
        if payload.get("timestamp") is not None:
            payload["timestamp"] = float(payload["timestamp"])
        if payload.get("pulse_id") is not None:
            payload["pulse_id"] = int(payload["pulse_id"])
    return payload
