"""Turns raw frames into camera stream messages (processing spec section 1) and sends them.

Per frame: camera-side transforms → the six channels ``width, height, timestamp, image, x_axis, y_axis`` (in
that order; image declared ``[W, H]`` in its dtype), then any extra channels of the source. The channel
declarations and the (calibrated) axes are rebuilt only when the geometry, dtype, extra channels or the config
change, so a steady stream costs no per-frame allocation here beyond what the transforms need.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from cam_server.bsread import Sender, derive_type_shape
from cam_server.camera.config import CameraConfig
from cam_server.camera.shared_frames import SharedFrames
from cam_server.camera.sources.base import RawFrame
from cam_server.processing.camera_transforms import apply_camera_transforms, calibrated_axes

log = logging.getLogger(__name__)


class CameraPublisher:
    """Applies a camera config to raw frames and publishes them on ``sender`` (already open)."""

    def __init__(self, sender: Sender, config: CameraConfig, shared: SharedFrames | None = None) -> None:
        self.sender = sender
        # The shared-memory path (local pipelines): each frame is also written to its ring and announced; then the
        # bsread stream is only encoded and sent while it has clients.
        self.shared = shared
        self._layout: tuple | None = None
        self._axes_key: tuple | None = None
        self._x_axis = np.empty(0, np.float32)
        self._y_axis = np.empty(0, np.float32)
        self._next_pulse_id = 0
        self._last_pulse_id = -1
        # Of the current layout, for the statistics: (height, width) of the sent image and its bytes.
        self.frame_shape: tuple[int, int] | None = None
        self.frame_bytes = 0
        self.set_config(config)

    def set_config(self, config: CameraConfig) -> None:
        """Take a new config: transforms apply from the next frame, axes are recomputed."""
        self.config = config
        self._transform: dict[str, Any] = {
            "mirror_x": config.mirror_x, "mirror_y": config.mirror_y, "rotate": config.rotate, "roi": config.roi,
            "binning_x": config.binning_x, "binning_y": config.binning_y, "binning_mean": config.binning_mean,
        }
        self._identity = (not config.mirror_x and not config.mirror_y and config.rotate % 4 == 0
                          and config.roi is None and config.binning_x == 1 and config.binning_y == 1)
        self._calibration = config.calibration_dict()
        self._axes_key = None

    def transform(self, image: np.ndarray) -> np.ndarray:
        if self._identity and image.flags.c_contiguous:
            return image
        return apply_camera_transforms(image, **self._transform)

    def _axes(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        key = (width, height)
        if key != self._axes_key:
            self._x_axis, self._y_axis = calibrated_axes(width, height, self._calibration)
            self._axes_key = key
        return self._x_axis, self._y_axis

    def _declare(self, width: int, height: int, dtype: np.dtype, extra: dict[str, Any] | None) -> None:
        extra_meta: list[tuple[str, dict[str, Any]]] = []
        for name, value in (extra or {}).items():
            if value is None:
                continue
            try:
                type_name, shape, encoding = derive_type_shape(value)
            except ValueError as exc:
                log.warning("extra channel %r not relayed: %s", name, exc)
                continue
            extra_meta.append((name, {"type": type_name, "shape": shape, "encoding": encoding}))
        key = (width, height, dtype.str, tuple((n, m["type"], tuple(m["shape"])) for n, m in extra_meta))
        if key == self._layout:
            return
        channels = [
            {"name": "width", "type": "int64"},
            {"name": "height", "type": "int64"},
            {"name": "timestamp", "type": "float64"},
            {"name": "image", "type": _type_name(dtype), "shape": [width, height]},
            {"name": "x_axis", "type": "float32", "shape": [width]},
            {"name": "y_axis", "type": "float32", "shape": [height]},
        ]
        for name, meta in extra_meta:
            if name not in {c["name"] for c in channels}:
                channels.append({"name": name, **meta})
        encoder = self.sender.encoder
        declared = [{**c, "encoding": c.get("encoding", "little")} for c in channels]
        encoder.set_channels(declared)
        if self.shared is not None:
            self.shared.declare(declared)
        self._layout = key
        self.frame_shape = (height, width)
        self.frame_bytes = height * width * dtype.itemsize
        log.info("camera stream layout: %dx%d %s, %d extra channels", width, height, dtype.name, len(extra_meta))

    def _pulse_id(self, frame: RawFrame) -> int:
        if frame.pulse_id is not None:
            pulse_id = int(frame.pulse_id)
        elif self.config.simulate_pulse_id:
            pulse_id = max(int(frame.timestamp * 100), self._last_pulse_id + 1)
        else:
            pulse_id = self._next_pulse_id
        self._next_pulse_id = pulse_id + 1
        self._last_pulse_id = pulse_id
        return pulse_id

    def publish(self, frame: RawFrame) -> bool:
        """Transform and send one frame; False when the (non-blocking) send dropped it."""
        image = self.transform(frame.image)
        height, width = image.shape
        extra = frame.extra
        if extra or self._layout is None or self._layout[:3] != (width, height, image.dtype.str):
            self._declare(width, height, image.dtype, extra)
        x_axis, y_axis = self._axes(width, height)
        data: dict[str, Any] = {"width": width, "height": height, "timestamp": frame.timestamp, "image": image,
                                "x_axis": x_axis, "y_axis": y_axis}
        if extra:
            for name, value in extra.items():
                data.setdefault(name, value)
        exact = getattr(frame, "global_timestamp", None)  # relayed frames keep the upstream (sec, ns)
        if exact is None:
            sec = int(frame.timestamp)
            exact = (sec, int((frame.timestamp - sec) * 1e9))
        pulse_id = self._pulse_id(frame)
        shared = self.shared
        if shared is None:
            return self.sender.send(data, timestamp=exact, pulse_id=pulse_id, check_data=False)
        if not shared.client_count:  # no local reader: the bsread stream only, as without the shared path
            return self.sender.send(data, timestamp=exact, pulse_id=pulse_id, check_data=False)
        announced = shared.publish(data, exact, pulse_id)
        if not self.sender.client_count:  # only shared-memory readers: no bsread message to encode and send
            return announced
        return self.sender.send(data, timestamp=exact, pulse_id=pulse_id, check_data=False) or announced


def _type_name(dtype: np.dtype) -> str:
    type_name, _, _ = derive_type_shape(np.empty(0, dtype))
    return type_name
