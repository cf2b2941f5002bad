"""What a browser is sent of one frame: pure numpy, no I/O (design and message format: docs/live_view.md).

A received message becomes a :class:`Frame` once (the overlays converted from calibrated to image pixel
coordinates, the scalar values for the side panel); each view then gets :func:`render_view`: the visible region of
the image binned down to at most the viewport's pixels and scaled to 8 bits (the browser applies the colormap), the
profiles and fits cut to the same region. Binning, not the full frame, is what keeps the browser's cost and the
WebSocket traffic bounded whatever the camera size.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cam_server.camera.render import to_levels

# Values a view may ask for, beyond which a request is a mistake (the canvas of a 8K screen is 7680 wide).
MAX_CANVAS = 8192
MAX_RATE = 60.0
DEFAULT_RATE = 10.0
# Profiles and fits go as integers 0..PROFILE_STEPS of a common scale: the browser only draws their shape.
PROFILE_STEPS = 1000
# Scalars shown in the side panel: a user function may output many; the panel shows the first ones.
MAX_VALUES = 400
MAX_TEXT = 200
_SLICE = re.compile(r"slice_(\d+)_(center_x|center_y|standard_deviation|intensity)$")
# The parameters of the processing_parameters channel a view shows and changes (threshold, ROI, ...).
VIEW_PARAMETERS = ("image_threshold", "image_region_of_interest", "image_background_enable", "image_background",
                   "averaging", "paused", "image_good_region", "image_slices")


class ViewRequestError(ValueError):
    """A view's request that cannot be honoured (shown to the user, the connection stays open)."""


@dataclass(frozen=True)
class ViewRequest:
    """What one view shows: the image region (pixels; ``w``/``h`` 0 = the whole image), the canvas size in device
    pixels, the frame rate and the display levels (None = automatic, from each frame's visible pixels)."""

    x: int = 0
    y: int = 0
    w: int = 0
    h: int = 0
    width: int = 800
    height: int = 600
    rate: float = DEFAULT_RATE
    low: float | None = None
    high: float | None = None

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> ViewRequest:
        """Validate a ``{"type": "view", ...}`` message from the browser."""
        def integer(key: str, default: int, low: int, high: int) -> int:
            value = message.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ViewRequestError(f"view: {key} must be a number, not {value!r}")
            return int(min(max(value, low), high))

        def level(key: str) -> float | None:
            value = message.get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ViewRequestError(f"view: {key} must be a number or null, not {value!r}")
            return float(value)

        rate = message.get("rate", DEFAULT_RATE)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
            raise ViewRequestError(f"view: rate must be a positive number, not {rate!r}")
        return cls(x=integer("x", 0, 0, 1 << 30), y=integer("y", 0, 0, 1 << 30), w=integer("w", 0, 0, 1 << 30),
                   h=integer("h", 0, 0, 1 << 30), width=integer("width", 800, 1, MAX_CANVAS),
                   height=integer("height", 600, 1, MAX_CANVAS), rate=min(float(rate), MAX_RATE), low=level("min"),
                   high=level("max"))

    @property
    def period(self) -> float:
        return 1.0 / self.rate


@dataclass
class Frame:
    """One received message, prepared once for every view of its stream."""

    seq: int
    pulse_id: int
    timestamp: float | None
    image: np.ndarray | None
    x_axis: np.ndarray | None
    y_axis: np.ndarray | None
    values: dict[str, Any] = field(default_factory=dict)
    overlays: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image, (0, 0) without one."""
        if self.image is None:
            return 0, 0
        return int(self.image.shape[1]), int(self.image.shape[0])


def frame_from_values(seq: int, pulse_id: int, timestamp: float | None, data: dict[str, Any]) -> Frame:
    """A :class:`Frame` of the channel values ``data`` (name → value) of one message."""
    image = data.get("image")
    if not isinstance(image, np.ndarray) or image.ndim != 2 or image.size == 0:
        image = None
    x_axis = _axis(data.get("x_axis"), None if image is None else image.shape[1])
    y_axis = _axis(data.get("y_axis"), None if image is None else image.shape[0])
    frame = Frame(seq, int(pulse_id), timestamp, image, x_axis, y_axis)
    frame.values = _scalars(data)
    frame.parameters = _parameters(data.get("processing_parameters"))
    frame.overlays = _overlays(frame, data)
    for axis in ("x", "y"):
        for name in (f"{axis}_profile", f"{axis}_fit_gauss_function"):
            value = data.get(name)
            if isinstance(value, np.ndarray) and value.ndim == 1 and value.size:
                frame.profiles[name] = value
    return frame


def render_view(frame: Frame, request: ViewRequest) -> bytes:
    """The binary WebSocket message of ``frame`` for one view: ``<uint32 little-endian n><n bytes JSON header>
    <pixels>``, the pixels uint8, row by row, ``header.width × header.height``."""
    header: dict[str, Any] = {"type": "frame", "seq": frame.seq, "pulse_id": frame.pulse_id,
                              "timestamp": frame.timestamp, "values": frame.values, "overlays": frame.overlays,
                              "parameters": frame.parameters}
    pixels = b""
    if frame.image is not None:
        image_w, image_h = frame.size
        x0, y0, w, h = visible_region(image_w, image_h, request)
        bx, by = bin_factor(w, request.width), bin_factor(h, request.height)
        binned = bin_region(frame.image, x0, y0, w, h, bx, by)
        floats = frame.image.dtype.kind == "f"  # only float images have NaN (a binned integer image has none)
        low, high = display_levels(binned, request.low, request.high, floats)
        pixels = to_levels(np.nan_to_num(binned, nan=low) if floats else binned, low, high).tobytes()
        header.update(image_size=[image_w, image_h], region=[x0, y0, binned.shape[1] * bx, binned.shape[0] * by],
                      bin=[bx, by], width=int(binned.shape[1]), height=int(binned.shape[0]), levels=[low, high],
                      profiles=_view_profiles(frame, x0, y0, binned.shape[1], binned.shape[0], bx, by))
    text = json.dumps(header, default=_json_default, allow_nan=False).encode()
    return struct.pack("<I", len(text)) + text + pixels


def visible_region(image_w: int, image_h: int, request: ViewRequest) -> tuple[int, int, int, int]:
    """(x0, y0, w, h) of the requested region clamped to the image (the whole image when none was asked)."""
    x0, y0 = min(request.x, image_w - 1), min(request.y, image_h - 1)
    w = image_w - x0 if request.w <= 0 else min(request.w, image_w - x0)
    h = image_h - y0 if request.h <= 0 else min(request.h, image_h - y0)
    return x0, y0, max(w, 1), max(h, 1)


def bin_factor(size: int, target: int) -> int:
    """The smallest integer binning that brings ``size`` pixels down to at most ``target``."""
    return max(1, math.ceil(size / max(target, 1)))


def bin_region(image: np.ndarray, x0: int, y0: int, w: int, h: int, bx: int, by: int) -> np.ndarray:
    """Mean of ``bx × by`` blocks of ``image[y0:y0+h, x0:x0+w]`` (the remainder at the right/bottom edge is left
    out), float32; an unbinned region is returned as a view.

    Accumulated by strided slices (one add per row and per column of a block), about 5x faster than a reshaped
    ``sum(axis=(1, 3))`` on a 2560x2160 frame.
    """
    rows, cols = max(h // by, 1), max(w // bx, 1)
    crop = image[y0:y0 + rows * by, x0:x0 + cols * bx]
    if bx == 1 and by == 1:
        return crop
    acc = crop[0::by].astype(np.float32)
    for i in range(1, by):
        acc += crop[i::by]
    blocks = acc.reshape(acc.shape[0], cols, bx)
    out = blocks[:, :, 0].copy()
    for j in range(1, bx):
        out += blocks[:, :, j]
    out *= 1.0 / (bx * by)
    return out


def display_levels(pixels: np.ndarray, low: float | None, high: float | None,
                   may_have_nan: bool = False) -> tuple[float, float]:
    """The levels mapped to 0 and 255: the given ones, else the visible pixels' own minimum and maximum (of the
    finite ones when ``may_have_nan``)."""
    if low is None or high is None:
        if may_have_nan:
            finite = pixels[np.isfinite(pixels)]
            auto = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        else:
            auto = (float(pixels.min()), float(pixels.max()))
        low = auto[0] if low is None else low
        high = auto[1] if high is None else high
    return float(low), float(high)


def probe(frame: Frame, x: int, y: int) -> dict[str, Any]:
    """The pixel value and calibrated position under the cursor (image pixel ``x``, ``y``) in ``frame``."""
    answer: dict[str, Any] = {"type": "probe", "x": x, "y": y, "pulse_id": frame.pulse_id, "value": None,
                              "x_cal": None, "y_cal": None}
    width, height = frame.size
    if 0 <= x < width and 0 <= y < height and frame.image is not None:
        answer["value"] = _number(frame.image[y, x])
        answer["x_cal"] = None if frame.x_axis is None else _number(frame.x_axis[x])
        answer["y_cal"] = None if frame.y_axis is None else _number(frame.y_axis[y])
    return answer


def axis_to_pixel(axis: np.ndarray | None, value: Any) -> float | None:
    """Fractional pixel index of the calibrated ``value`` on ``axis`` (the value itself without an axis)."""
    number = _number(value)
    if number is None:
        return None
    if axis is None or axis.size < 2:
        return number
    index = np.arange(axis.size, dtype=np.float64)
    if axis[-1] < axis[0]:
        return float(np.interp(number, axis[::-1], index[::-1]))
    return float(np.interp(number, axis, index))


def width_to_pixels(axis: np.ndarray | None, value: Any) -> float | None:
    """A calibrated width (sigma, FWHM) in pixels, by the axis' mean spacing."""
    number = _number(value)
    if number is None:
        return None
    if axis is None or axis.size < 2 or axis[-1] == axis[0]:
        return abs(number)
    return abs(number) * (axis.size - 1) / abs(float(axis[-1]) - float(axis[0]))


def _overlays(frame: Frame, data: dict[str, Any]) -> dict[str, Any]:
    """Everything the view draws, in image pixel coordinates (fractional indices)."""
    xa, ya = frame.x_axis, frame.y_axis
    out: dict[str, Any] = {}
    if _number(data.get("x_center_of_mass")) is not None and _number(data.get("y_center_of_mass")) is not None:
        out["center_of_mass"] = [axis_to_pixel(xa, data["x_center_of_mass"]),
                                 axis_to_pixel(ya, data["y_center_of_mass"])]
    fit = [axis_to_pixel(xa, data.get("x_fit_mean")), axis_to_pixel(ya, data.get("y_fit_mean")),
           width_to_pixels(xa, data.get("x_fit_standard_deviation")),
           width_to_pixels(ya, data.get("y_fit_standard_deviation"))]
    if all(v is not None for v in fit):
        out["fit"] = fit  # [mean x, mean y, sigma x, sigma y]
    region = data.get("good_region")
    if isinstance(region, np.ndarray) and region.size == 4:
        out["good_region"] = [int(v) for v in region]  # [xs, ys, xe, ye]
    roi = frame.parameters.get("image_region_of_interest")
    if isinstance(roi, list) and len(roi) == 4:
        out["roi"] = roi  # [offset_x, size_x, offset_y, size_y] of the image before the ROI: this whole image
    slices = _slices(data, xa, ya)
    if slices:
        out["slices"] = slices
    return out


def _slices(data: dict[str, Any], xa: np.ndarray | None, ya: np.ndarray | None) -> dict[str, Any] | None:
    found: dict[int, dict[str, Any]] = {}
    for name, value in data.items():
        match = _SLICE.match(name)
        if match:
            found.setdefault(int(match.group(1)), {})[match.group(2)] = value
    orientation = data.get("slice_orientation")
    orientation = orientation if isinstance(orientation, str) else "vertical"
    # Vertical slices are bands of rows: their width is along x (and their length along y), horizontal ones the
    # other way round.
    along, across = (xa, ya) if orientation == "vertical" else (ya, xa)
    length = width_to_pixels(across, data.get("slice_length"))
    items = []
    for index in sorted(found):
        entry = found[index]
        cx, cy = axis_to_pixel(xa, entry.get("center_x")), axis_to_pixel(ya, entry.get("center_y"))
        sigma = width_to_pixels(along, entry.get("standard_deviation"))
        if cx is not None and cy is not None:
            items.append([cx, cy, sigma])
    if not items:
        return None
    return {"orientation": orientation, "length": length, "items": items}


def _view_profiles(frame: Frame, x0: int, y0: int, cols: int, rows: int, bx: int, by: int) -> dict[str, Any]:
    """The x/y profiles and fits cut to the visible region and binned like the image, as integers of a scale
    common to a profile and its fit."""
    out: dict[str, Any] = {}
    for axis, start, count, step in (("x", x0, cols, bx), ("y", y0, rows, by)):
        curves = {}
        for kind, name in (("profile", f"{axis}_profile"), ("fit", f"{axis}_fit_gauss_function")):
            values = frame.profiles.get(name)
            if values is None or values.size < start + count * step:
                continue
            part = values[start:start + count * step].astype(np.float64).reshape(count, step).mean(axis=1)
            if np.isfinite(part).all():
                curves[kind] = part
        if not curves:
            continue
        low = min(float(c.min()) for c in curves.values())
        high = max(float(c.max()) for c in curves.values())
        span = high - low if high > low else 1.0
        out[axis] = {"scale": [low, high], **{kind: np.rint((c - low) * (PROFILE_STEPS / span)).astype(int).tolist()
                                              for kind, c in curves.items()}}
    return out


def _scalars(data: dict[str, Any]) -> dict[str, Any]:
    """Scalar channels (numbers, short texts) for the side panel, in message order."""
    out: dict[str, Any] = {}
    for name, value in data.items():
        if len(out) >= MAX_VALUES:
            break
        if name == "processing_parameters":
            continue
        if isinstance(value, str):
            if len(value) <= MAX_TEXT:
                out[name] = value
            continue
        if isinstance(value, np.ndarray):
            if value.size != 1:
                continue
            value = value.reshape(-1)[0]
        if isinstance(value, np.generic | int | float) and not isinstance(value, np.str_ | np.bytes_):
            out[name] = _number(value)
    return out


def _parameters(text: Any) -> dict[str, Any]:
    """The view's parameters from the frame's ``processing_parameters`` (JSON text), as applied to that frame."""
    if isinstance(text, np.ndarray):
        text = text.tobytes().decode(errors="replace")
    if not isinstance(text, str) or not text:
        return {}
    try:
        parameters = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(parameters, dict):
        return {}
    return {key: parameters[key] for key in VIEW_PARAMETERS if key in parameters}


def _axis(value: Any, length: int | None) -> np.ndarray | None:
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.size == length and length:
        axis = value.astype(np.float64)
        return axis if np.isfinite(axis).all() else None
    return None


def _number(value: Any) -> float | int | None:
    """A JSON number (None for missing, NaN and infinite values)."""
    if value is None or isinstance(value, str | bytes):
        return None
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return None
        value = value.reshape(-1)[0]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return _number(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
