"""The camera configuration model: every key a camera config may hold, its type and its default (one place).

Unknown keys are kept (users store extra information in camera configs) and passed on untouched. Validation
errors become :class:`~cam_server.common.errors.InvalidConfig` with a message naming the field.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cam_server.bsread.address import is_stream_address
from cam_server.bsread.queues import DEFAULT_SEND_QUEUE
from cam_server.common.errors import InvalidConfig, InvalidName, describe_validation_errors
from cam_server.common.names import validate_name

EPICS_SOURCE_TYPES = ("epics", "area_detector")  # source = PV prefix
# bsread: source = a stream address, or the PV prefix of a camera that publishes its own bsread stream (spec 5)
DEFAULT_DTYPE = "uint16"  # pixel type of a config without dtype (also read by the EPICS source for plain dicts)
# Sanity bounds: larger values are typing mistakes that would only fail later, inside the camera process.
MAX_IMAGE_SIDE = 65536
MAX_QUEUE = 1_000_000
MAX_CONNECTION_TIMEOUT_S = 3600.0  # an EPICS camera's connect: longer is a typo (a stop interrupts it anyway)
# What the hardware means (issue 11 item 6): frame rates, image sizes and calibrations beyond these are typing
# mistakes (a 1e9 Hz simulation busy-loops, an angle of 1e308 fails every frame).
MAX_FRAME_RATE = 1000.0  # Hz
MAX_ROI = 2**31 - 1  # roi offsets and sizes (as the pipeline's image_region_of_interest)
MAX_SIMULATED_SIDE = 8192  # size_x, size_y of a simulated camera: at most 67 Mpixel (134 MB uint16) per frame
MAX_MARKER = 1e7  # reference_marker coordinates (pixels)
MAX_MARKER_SIZE = 1e12  # reference_marker_width / _height (engineering units, e.g. micrometres)
MAX_ANGLE = 90.0  # camera_calibration angles (degrees, exclusive): the pixel size scales with cos(angle)
# Boolean keys: JSON true/false only (pydantic would read "yes", "no", 1, 0 as booleans).
BOOL_KEYS = ("mirror_x", "mirror_y", "binning_mean", "simulate_pulse_id")
# Numeric keys: JSON true/false is not a number here (pydantic would read it as 1/0).
NUMBER_KEYS = ("rotate", "connections", "buffer_size", "frame_rate", "size_x", "size_y", "binning_x", "binning_y",
               "port", "no_client_timeout", "queue_size")

# Keys whose change requires a new frame source in a running instance (the rest applies per frame).
SOURCE_KEYS = ("source", "source_type", "size_x", "size_y", "dtype", "frame_rate", "image_type", "connections",
               "buffer_size", "bsread_mode", "connection_timeout")


class CameraCalibration(BaseModel):
    """Pixel → engineering units (processing spec 1.1); missing keys take these defaults."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    reference_marker: list[int | float] = Field(default_factory=lambda: [0, 0, 100, 100], min_length=4, max_length=4)
    reference_marker_width: float = Field(100.0, gt=0, le=MAX_MARKER_SIZE)
    reference_marker_height: float = Field(100.0, gt=0, le=MAX_MARKER_SIZE)
    angle_horizontal: float = Field(0.0, gt=-MAX_ANGLE, lt=MAX_ANGLE)
    angle_vertical: float = Field(0.0, gt=-MAX_ANGLE, lt=MAX_ANGLE)

    @field_validator("reference_marker", "reference_marker_width", "reference_marker_height", "angle_horizontal",
                     "angle_vertical", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, bool | str) for v in values):  # pydantic would read true as 1 and "5" as 5
            raise ValueError(f"must be a number, not {_short(value)}")
        return value

    @field_validator("reference_marker")
    @classmethod
    def _marker(cls, value: list[int | float]) -> list[int | float]:
        if any(not -MAX_MARKER <= v <= MAX_MARKER for v in value):
            raise ValueError(f"coordinates must be pixels within +-{MAX_MARKER:g}, not {value!r}")
        return value


class CameraConfig(BaseModel):
    """One camera. ``source`` meaning depends on ``source_type`` (PV prefix, bsread address, anything)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    name: str | None = None
    source: Any
    source_type: Literal["epics", "area_detector", "bsread", "simulation"]
    mirror_x: bool = False
    mirror_y: bool = False
    rotate: int = 0
    camera_calibration: CameraCalibration | None = None
    protocol: Literal["tcp", "ipc"] = "tcp"
    alias: list[str] = Field(default_factory=list)
    group: list[str] = Field(default_factory=list)
    # bsread sources
    connections: int = Field(default=1, ge=1, le=64)
    buffer_size: int | None = Field(default=None, ge=0, le=MAX_QUEUE)  # None → connections * 5
    bsread_mode: Literal["PULL", "SUB"] = "PULL"
    # acquisition / simulation
    frame_rate: float | None = Field(default=None, gt=0, le=MAX_FRAME_RATE)
    size_x: int | None = Field(default=None, gt=0, le=MAX_IMAGE_SIDE)
    size_y: int | None = Field(default=None, gt=0, le=MAX_IMAGE_SIDE)
    dtype: str = DEFAULT_DTYPE
    image_type: str | None = None  # simulation: raw, static_raw, static_beam; anything else = moving beam (spec 4)
    simulate_pulse_id: bool = False
    # camera-side transforms
    roi: list[int] | None = Field(default=None, min_length=4, max_length=4)
    binning_x: int = Field(default=1, ge=1, le=MAX_IMAGE_SIDE)
    binning_y: int = Field(default=1, ge=1, le=MAX_IMAGE_SIDE)
    binning_mean: bool = False
    # stream
    port: int | None = Field(default=None, ge=1, le=65535)
    no_client_timeout: float = 10.0  # seconds; <= 0 keeps the instance running without clients
    # The stream's send queue per client (SNDHWM), in frames. 10, not the reference's 100 (issue 13): a client that
    # falls behind (a pipeline on a busy machine) would find up to 100 old frames waiting (1.1 GB and 1 s at
    # 2560x2160, 100 Hz) instead of the newest; beyond it ZeroMQ drops for that client only.
    queue_size: int = Field(default=DEFAULT_SEND_QUEUE, ge=1, le=MAX_QUEUE)

    @field_validator(*NUMBER_KEYS, "roi", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, bool | str) for v in values):  # pydantic would read true as 1 and "5" as 5
            raise ValueError(f"must be a number, not {_short(value)}")
        return value

    @field_validator(*BOOL_KEYS, mode="before")
    @classmethod
    def _strict_bool(cls, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {_short(value)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _connection_timeout(cls, data: Any) -> Any:
        """An extra key read by the EPICS source; checked here so a bad value fails on save, not on first stream."""
        if isinstance(data, dict) and data.get("connection_timeout") is not None:
            timeout = data["connection_timeout"]
            number = isinstance(timeout, int | float) and not isinstance(timeout, bool)
            if not number or not 0 < _as_float(timeout) <= MAX_CONNECTION_TIMEOUT_S:
                raise ValueError(f"'connection_timeout' must be a positive number of seconds up to "
                                 f"{MAX_CONNECTION_TIMEOUT_S:g}, not {timeout!r}")
        return data

    @field_validator("source", mode="before")
    @classmethod
    def _source_not_none(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError("source must not be None or empty")
        return value

    @field_validator("alias", "group", mode="before")
    @classmethod
    def _list_of_names(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ValueError("must be a list of names")
        for item in value:
            try:
                validate_name(item, "name")
            except InvalidName as exc:
                raise ValueError(str(exc)) from None
        return list(value)

    @field_validator("dtype", mode="before")
    @classmethod
    def _numpy_dtype(cls, value: Any) -> Any:
        if value is None:
            return DEFAULT_DTYPE
        try:
            dtype = np.dtype(value)
        except TypeError:
            raise ValueError(f"{value!r} is not a numpy dtype") from None
        if dtype.kind not in "iuf" or dtype.itemsize > 8:
            raise ValueError(f"{value!r} must be an integer or float pixel type")
        return dtype.name

    @field_validator("roi")
    @classmethod
    def _roi(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            offset_x, size_x, offset_y, size_y = value
            if offset_x < 0 or offset_y < 0 or size_x <= 0 or size_y <= 0:
                raise ValueError("roi must be [offset_x, size_x, offset_y, size_y] with offsets >= 0 and sizes > 0")
            if max(value) > MAX_ROI:
                raise ValueError(f"roi values must be at most {MAX_ROI}, not {value!r}")
        return value

    @model_validator(mode="after")
    def _derived_defaults(self) -> CameraConfig:
        if self.source_type == "bsread" and not (is_stream_address(self.source) or _is_bsread_pv_prefix(self.source)):
            raise ValueError(f"'source' of a bsread camera must be a stream address like tcp://host:port, or the PV "
                             f"prefix of a camera that publishes its own bsread stream, got {self.source!r}")
        if self.source_type in EPICS_SOURCE_TYPES and not isinstance(self.source, str):
            raise ValueError(f"'source' of an {self.source_type} camera must be the PV prefix (a string), "
                             f"got {self.source!r}")
        if self.buffer_size is None:
            self.buffer_size = self.connections * 5
        if self.source_type == "simulation":
            self._check_simulated_geometry()
        return self

    def _check_simulated_geometry(self) -> None:
        """A simulated camera renders every frame: at most MAX_SIMULATED_SIDE pixels a side."""
        for key in ("size_x", "size_y"):
            value = getattr(self, key)
            if value is not None and value > MAX_SIMULATED_SIDE:
                raise ValueError(f"'{key}' of a simulated camera must be at most {MAX_SIMULATED_SIDE} (a frame of "
                                 f"at most {MAX_SIMULATED_SIDE}^2 pixels is rendered for every frame), not {value}")

    # --- convenience ------------------------------------------------------------------------------------------
    def calibration_dict(self) -> dict[str, Any] | None:
        return None if self.camera_calibration is None else self.camera_calibration.model_dump()

    def to_dict(self) -> dict[str, Any]:
        """The complete config (defaults filled in, extra keys kept) as plain JSON-able data."""
        return self.model_dump(mode="json")


def _as_float(value: int | float) -> float:
    """``value`` as a float; inf for an integer too large for one."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _short(v: Any) -> str:
    """``repr(v)`` cut to a readable length."""
    text = repr(v)
    return text if len(text) <= 40 else text[:30] + f"... ({len(text)} characters)"


def _is_bsread_pv_prefix(value: Any) -> bool:
    """A string that cannot be meant as a stream address: no ``scheme://`` (a broken address stays an error) and,
    like every EPICS PV name, no white space."""
    return isinstance(value, str) and "://" not in value and bool(value) and not any(c.isspace() for c in value)


def parse_camera_config(config: Any, name: str | None = None) -> CameraConfig:
    """Validate a camera config dict; ``name`` (the store name) wins over the ``name`` key."""
    if not isinstance(config, dict):
        raise InvalidConfig(f"Camera config must be a JSON object, got {type(config).__name__}.")
    data = dict(config)
    if name is not None:
        data["name"] = name
    try:
        return CameraConfig.model_validate(data)
    except ValidationError as exc:
        label = f" '{name}'" if name else ""
        raise InvalidConfig(f"Invalid camera config{label}: {describe_validation_errors(exc.errors())}") from None
