"""Pipeline configuration: every documented parameter with its default, validation, expansion and updates.

A user config needs only its input (usually ``camera_name``). :func:`parse_pipeline_config` validates it into a
:class:`PipelineConfig` with every default filled: the model a pipeline instance runs with (the server parses each
config it hands an instance once, the instance reads its fields). :func:`expand_config` is the same as a plain dict
(:meth:`PipelineConfig.to_dict`): what the server stores and shows, and what user functions (and the
``processing_parameters`` channel) get. Keys we do not know are kept untouched (``model_extra``) because user
processing functions read their own parameters from the same dict.

Defaults live in :class:`PipelineConfig` only (the processing blocks' defaults come from
:mod:`cam_server.processing.parameters`, shared with the processing functions). Five defaults depend on other
fields, see :func:`derived_defaults`: ``mode`` (PUSH for store and fanout, else PUB), ``block`` (True for PUSH, else
False), ``input_mode`` (PULL for fanin, else SUB), ``input_queue_size`` (the pipeline type's, see the registry) and
``input_catch_up_after`` (the pipeline type's; 0 when writing a file: every frame it can hold, in order).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cam_server.bsread.address import is_stream_address
from cam_server.bsread.queues import DEFAULT_SEND_QUEUE
from cam_server.common.errors import InvalidCombination, InvalidConfig, InvalidName, describe_validation_errors
from cam_server.common.names import validate_name
from cam_server.pipeline.registry import DEFAULT_TYPE, PIPELINE_TYPES
from cam_server.processing.camera_transforms import roi_outside
from cam_server.processing.parameters import (
    GOOD_REGION_GFSCALE,
    GOOD_REGION_THRESHOLD,
    ROTATION_ANGLE,
    ROTATION_MODE,
    ROTATION_ORDER,
    SLICES_NUMBER,
    SLICES_ORIENTATION,
    SLICES_SCALE,
)

# Processing pipelines merge bsread data only from a given stream (no dispatcher client).
DISPATCHER_NOT_SUPPORTED = ("bsread_channels without bsread_address would read from the dispatcher, which is not "
                            "supported: set bsread_address to the bsread stream to merge (e.g. tcp://host:port)")
BACKGROUND_ENABLE = (True, False, "passive", "signed")
ROTATION_MODES = ("reflect", "nearest", "mirror", "wrap", "ortho")

# processing.md 3.7: these come first in the expanded config, in this order.
LEADING_KEYS = ("image_background_enable", "image_background", "image_threshold", "image_region_of_interest",
                "image_good_region", "image_slices", "pipeline_type")
# Keys whose default depends on other fields (see derived_defaults).
DERIVED_KEYS = ("mode", "block", "input_mode", "input_queue_size", "input_catch_up_after")
# Parameters for which null is a value, not "use the default" (README: camera_timeout null disables the timeout).
NULL_IS_VALUE = frozenset({"camera_timeout"})
# README example spelling of the background id; accepted as an alias of image_background (see docs/pipeline.md).
BACKGROUND_ALIAS = "background_id"
# Sanity bounds: larger values are typing mistakes that would only fail later, inside the instance process.
MAX_COUNT = 2**31 - 1  # frames, records, queue and buffer sizes (ZeroMQ takes C ints)
MAX_PROCESSING_THREADS = 256
MAX_PULSE_ID = 2**63 - 1
# What the hardware means (issue 11 item 6): beyond these a value is a typing mistake that costs memory or CPU.
MAX_AVERAGING = 1000  # averaging N > 0 keeps one float64 sum: at 100 Hz, one output per 10 s at most
MAX_RUNNING_AVERAGE = 100  # averaging N < 0 keeps |N| frames: 100 frames of 2560 x 2160 uint16 are 1.1 GB
MAX_FRAME_RATE = 1000.0  # Hz: max_frame_rate (cameras stream at up to ~100 Hz; custom pipelines call at this rate)
MAX_SLICES = 1000  # image_slices.number_of_slices (each slice adds its channels to every message)
MAX_SLICES_SCALE = 1000.0
MAX_BINNING = 65536  # pipeline binning_x / binning_y (user keys read by the default function): image side at most
# Boolean parameters: JSON true/false only (pydantic would read "yes", "no", 1, 0 as booleans).
BOOL_FIELDS = ("reload", "copy_image", "paused", "abort_on_error", "abort_on_timeout", "enforce_pid", "block",
               "localtime", "change")
# Keys that are no model fields (kept in model_extra for user functions) but that our processing reads.
EXTRA_BOOL_KEYS = ("pause", "binning_mean")
EXTRA_BINNING_KEYS = ("binning_x", "binning_y")
# Fields that hold a stream address (ZeroMQ endpoint).
ADDRESS_KEYS = ("input_stream", "output_stream", "bsread_address")


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool(cls, v: Any, info: ValidationInfo) -> Any:
        # JSON true/false is no number (pydantic would read 1/0), nor is "5" (pydantic would read 5); the blocks hold
        # numbers, and strings for modes.
        if isinstance(v, bool) or (isinstance(v, str) and info.field_name not in ("mode", "orientation")):
            raise ValueError(f"must be a number, not {_short(v)}")
        return v


class GoodRegion(_Block):
    threshold: float = GOOD_REGION_THRESHOLD
    gfscale: float = GOOD_REGION_GFSCALE


class Slices(_Block):
    number_of_slices: int = Field(SLICES_NUMBER, gt=0, le=MAX_SLICES)
    scale: float = Field(SLICES_SCALE, gt=0, le=MAX_SLICES_SCALE)
    orientation: Literal["vertical", "horizontal"] = SLICES_ORIENTATION


class Rotation(_Block):
    angle: float = ROTATION_ANGLE
    order: int = Field(ROTATION_ORDER, ge=1, le=5)
    mode: str = ROTATION_MODE

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, v: Any) -> str:
        if isinstance(v, bool):
            raise ValueError("must be one of reflect, nearest, mirror, wrap, ortho or a number")
        if isinstance(v, int | float | str):
            if v in ROTATION_MODES:
                return v
            try:
                number = float(v)
            except (ValueError, OverflowError):
                number = math.nan
            if not math.isfinite(number):
                raise ValueError(f"must be one of {', '.join(ROTATION_MODES)} or a finite number (the fill value), "
                                 f"not {_short(v)}")
            return v if isinstance(v, str) else str(number)
        raise ValueError("must be one of reflect, nearest, mirror, wrap, ortho or a number")

    @model_validator(mode="after")
    def _ortho(self) -> Rotation:
        if self.mode == "ortho" and not (self.angle / 90).is_integer():  # (as JSON Schema's multipleOf reads it)
            raise ValueError(f"angle must be a multiple of 90 in 'ortho' mode, not {self.angle}")
        return self


def _short(v: Any) -> str:
    """``repr(v)`` cut to a readable length (a 400-digit number in an error message helps nobody)."""
    text = repr(v)
    return text if len(text) <= 40 else text[:30] + f"... ({len(text)} characters)"


def _int_like(v: Any, what: str, limit: int = MAX_COUNT) -> int:
    """Accept ints and integral floats (JSON clients send 5.0) up to ``limit`` in size; reject bools, strings,
    fractions and NaN/inf."""
    if (isinstance(v, bool) or not isinstance(v, int | float)
            or (isinstance(v, float) and not v.is_integer()) or abs(v) > limit):
        raise ValueError(f"must be {what}" + (f" (at most {limit} in size)" if isinstance(v, int | float) else "")
                         + f", not {_short(v)}")
    return int(v)


def derived_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults of :data:`DERIVED_KEYS` for this config (README:
    mode-dependent): the model's default factories, and :func:`update_config` to tell a derived value from a chosen
    one."""
    kind = PIPELINE_TYPES.get(config.get("pipeline_type") or DEFAULT_TYPE, PIPELINE_TYPES[DEFAULT_TYPE])
    mode = config.get("mode") or kind.output_mode
    return {"mode": kind.output_mode, "block": str(mode).upper() == "PUSH", "input_mode": kind.input_mode,
            "input_queue_size": kind.input_queue_size,
            "input_catch_up_after": 0.0 if str(mode).upper() == "FILE" else kind.input_catch_up_after}


# A derived default's factory sees the fields validated before it (pipeline_type, and mode for block).
def _derived(key: str, **constraints: Any) -> Any:
    return Field(default_factory=lambda data: derived_defaults(data)[key], **constraints)


class PipelineConfig(BaseModel):
    """All documented pipeline parameters (README "Pipeline configuration") with their defaults.

    Build it with :func:`parse_pipeline_config` (aliases, None as "default", readable errors, the key order of
    :meth:`to_dict`). User keys (``extra="allow"``) are in ``model_extra``. ``copy`` is ``copy_image`` here.
    """

    model_config = ConfigDict(extra="allow", validate_default=False, populate_by_name=False, allow_inf_nan=False)

    # --- processing pre-processing (leading keys) -------------------------------------------------------
    image_background_enable: bool | Literal["passive", "signed"] = False
    image_background: str | None = None
    image_threshold: float | None = None
    image_region_of_interest: list[int] | None = None
    image_good_region: GoodRegion | None = None
    image_slices: Slices | None = None
    pipeline_type: str = DEFAULT_TYPE
    # --- input --------------------------------------------------------------------------------------------
    camera_name: str | None = None
    input_pipeline: str | None = None
    input_stream: str | None = None
    input_mode: Literal["SUB", "PULL"] = _derived("input_mode")
    stream_timeout: float = 10.0
    camera_timeout: float | None = 10.0
    bsread_address: str | None = None
    bsread_channels: list[str] | None = None
    bsread_mode: Literal["PULL", "SUB"] | None = None
    bsread_image_buf: int = Field(1000, gt=0, le=MAX_COUNT)
    bsread_data_buf: int = Field(1000, gt=0, le=MAX_COUNT)
    pid_buffer: int = Field(0, ge=0, le=MAX_COUNT)
    # Received frames waiting to be processed: a SUB input drops the oldest beyond this (a live pipeline works on
    # recent frames, not a backlog), a PULL input holds the sender back instead.
    input_queue_size: int = _derived("input_queue_size")
    # Seconds the input may wait for an unreachable camera server (null: for ever), see input.py.
    camera_server_timeout: float | None = Field(None, ge=0)
    # --- processing ---------------------------------------------------------------------------------------
    function: str | None = None
    reload: bool = False
    include: list[str] | None = None
    exclude: list[str] | None = None
    rotation: Rotation | None = None
    averaging: int | None = None
    max_frame_rate: float | None = None
    downsampling: int | None = None
    processing_threads: int | None = None
    copy_image: bool = Field(False, alias="copy")  # "copy" would shadow BaseModel.copy
    paused: bool = False
    pid_range: list[int] | None = None
    records: int | None = None
    abort_on_error: bool = True
    abort_on_timeout: bool = False
    enforce_pid: bool = False
    # MB of RSS past which the instance is ended (null: the server's --instance_memory_limit; 0: no limit).
    memory_limit: float | None = Field(None, ge=0)
    # --- output -------------------------------------------------------------------------------------------
    mode: Literal["PUB", "PUSH", "FILE"] = _derived("mode")
    create_header: Literal["once", "always", "on_change"] = "on_change"
    queue_size: int = Field(DEFAULT_SEND_QUEUE, gt=0, le=MAX_COUNT)
    block: bool = _derived("block")
    # Input (here, after mode, from which its default derives): seconds a SUB input may stay behind (frames waiting at
    # every take) before it jumps to the newest frame, the skipped ones counted as dropped_input; 0: never (frames in
    # order, at most input_queue_size behind). See input.py.
    input_catch_up_after: float = _derived("input_catch_up_after", ge=0, le=3600)
    no_client_timeout: float = 10.0
    buffer_size: int | None = None
    file: str | None = None
    layout: Literal["DEFAULT", "FLAT"] = "DEFAULT"
    localtime: bool = True
    change: bool = False
    output_pipeline: str | None = None
    output_stream: str | None = None
    # The keys of the config this model was parsed from, in their order (see to_dict).
    _given_order: tuple[str, ...] = PrivateAttr(default=())

    def to_dict(self) -> dict[str, Any]:
        """The expanded config as a plain dict, leading keys first (processing.md 3.7), then the keys the config
        was given with, in its order, then the remaining defaults: the same on every call."""
        values = self.model_dump(by_alias=True)
        out: dict[str, Any] = {key: values[key] for key in LEADING_KEYS}
        for key in self._given_order:
            if key in values:
                out.setdefault(key, values[key])
        for key, value in values.items():  # the remaining fields, then user keys
            out.setdefault(key, value)
        return out

    @field_validator("pipeline_type")
    @classmethod
    def _pipeline_type(cls, v: str) -> str:
        if v not in PIPELINE_TYPES:
            raise ValueError(f"unknown pipeline_type {v!r}; use one of {', '.join(PIPELINE_TYPES)}")
        return v

    @field_validator("stream_timeout", "camera_timeout", "no_client_timeout", "bsread_image_buf", "bsread_data_buf",
                     "pid_buffer", "queue_size", "camera_server_timeout", "memory_limit", "input_catch_up_after",
                     mode="before")
    @classmethod
    def _no_bool(cls, v: Any) -> Any:
        if isinstance(v, bool | str):  # pydantic would read true as 1 and "5" as 5
            raise ValueError(f"must be a number, not {_short(v)}")
        return v

    @field_validator(*ADDRESS_KEYS)
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None and not is_stream_address(v):
            raise ValueError(f"must be a stream address like tcp://host:port (or ipc://path), not {v!r}")
        return v

    @field_validator("mode", "input_mode", "bsread_mode", "layout", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @field_validator("image_background_enable", mode="before")
    @classmethod
    def _background_enable(cls, v: Any) -> Any:
        if v not in BACKGROUND_ENABLE or (v in (0, 1) and not isinstance(v, bool)):
            raise ValueError(f"must be true, false, \"passive\" or \"signed\", not {v!r}")
        return v

    @field_validator("image_background", "input_pipeline", "output_pipeline", "camera_name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return validate_name(v, "name")
        except InvalidName as exc:
            raise ValueError(str(exc)) from None

    @field_validator("image_region_of_interest", mode="before")
    @classmethod
    def _roi(cls, v: Any) -> Any:
        if v is None:
            return None
        if not isinstance(v, list | tuple) or len(v) != 4:
            raise ValueError(f"must be [offset_x, size_x, offset_y, size_y] (4 integers), not {v!r}")
        roi = [_int_like(x, "4 integers [offset_x, size_x, offset_y, size_y]") for x in v]
        if roi[1] <= 0 or roi[3] <= 0:
            raise ValueError(f"sizes must be > 0, got size_x={roi[1]}, size_y={roi[3]}")
        if roi[0] < 0 or roi[2] < 0:
            raise ValueError(f"offsets must be >= 0, got offset_x={roi[0]}, offset_y={roi[2]}")
        return roi

    @field_validator(*BOOL_FIELDS, mode="before")
    @classmethod
    def _strict_bool(cls, v: Any) -> Any:
        return _bool(v)

    @field_validator("averaging", mode="before")
    @classmethod
    def _averaging(cls, v: Any) -> Any:
        if v is None:
            return None
        what = "a non-zero integer (N > 0: one output per N frames, N < 0: running mean)"
        n = _int_like(v, what)
        if n == 0:
            raise ValueError(f"must be {what}")
        if n > MAX_AVERAGING:
            raise ValueError(f"must be at most {MAX_AVERAGING} (one output per N frames), not {n}")
        if n < -MAX_RUNNING_AVERAGE:
            raise ValueError(f"must be at least -{MAX_RUNNING_AVERAGE}: a running mean keeps its |N| frames in "
                             f"memory, not {n}")
        return n

    @field_validator("downsampling", "processing_threads", "records", "buffer_size", "input_queue_size", mode="before")
    @classmethod
    def _non_negative_int(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None:
            return None
        limit = MAX_PROCESSING_THREADS if info.field_name == "processing_threads" else MAX_COUNT
        n = _int_like(v, "an integer >= 0", limit)
        if n < 0:
            raise ValueError(f"must be an integer >= 0, not {v!r}")
        if n == 0 and info.field_name == "input_queue_size":
            raise ValueError("must be at least 1 (the frame being waited for)")
        return n

    @field_validator("image_threshold", "max_frame_rate", mode="before")
    @classmethod
    def _number(cls, v: Any, info: ValidationInfo) -> Any:
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not _finite(v)):
            raise ValueError(f"must be a finite number, not {_short(v)}")
        if info.field_name == "max_frame_rate" and v is not None and not 0 <= v <= MAX_FRAME_RATE:
            raise ValueError(f"must be between 0 and {MAX_FRAME_RATE:g} Hz (null or 0: no limit), not {_short(v)}")
        return v

    @field_validator("pid_range", mode="before")
    @classmethod
    def _pid_range(cls, v: Any) -> Any:
        if v is None:
            return None
        if not isinstance(v, list | tuple) or len(v) != 2:
            raise ValueError(f"must be [start_pid, stop_pid], not {v!r}")
        return [_int_like(x, "[start_pid, stop_pid] integers", MAX_PULSE_ID) for x in v]

    @field_validator("image_good_region", "image_slices", "rotation", mode="before")
    @classmethod
    def _block(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, dict):
            raise ValueError(f"must be an object (or null), not {v!r}")
        return v

    @model_validator(mode="after")
    def _cross_field(self) -> PipelineConfig:
        _check_extra_keys(self.model_extra or {})
        if self.mode == "FILE" and not self.file:
            raise ValueError("mode 'FILE' needs 'file' (the output file name)")
        has_input = self.camera_name or self.input_stream or self.input_pipeline
        if self.pipeline_type == "stream":
            has_input = has_input or self.bsread_address or self.bsread_channels
        if not has_input and PIPELINE_TYPES[self.pipeline_type].needs_input:
            raise ValueError(f"camera_name is required for pipeline_type '{self.pipeline_type}' "
                             "(or give input_stream / input_pipeline"
                             + (" / bsread_address / bsread_channels)" if self.pipeline_type == "stream" else ")"))
        if self.pipeline_type == "processing" and self.bsread_channels and not self.bsread_address:
            raise ValueError(DISPATCHER_NOT_SUPPORTED)
        return self


def _bool(v: Any) -> bool:
    """JSON true / false only: a string ("yes", "false") or a number is refused, never guessed."""
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, not {_short(v)}")
    return v


def _check_extra_keys(extra: Mapping[str, Any]) -> None:
    """User keys our own processing reads (``pause``, the pipeline binning): checked like the fields, so that a bad
    value is refused here instead of failing every frame (or being read as true)."""
    for key in EXTRA_BOOL_KEYS:
        if extra.get(key) is not None and not isinstance(extra[key], bool):
            raise ValueError(f"'{key}' must be true or false (or null), not {_short(extra[key])}")
    for key in EXTRA_BINNING_KEYS:
        value = extra.get(key)
        if value is not None:
            try:
                n = _int_like(value, "an integer >= 1", MAX_BINNING)
            except ValueError as exc:
                raise ValueError(f"'{key}' {exc}") from None
            if n < 1:
                raise ValueError(f"'{key}' must be an integer >= 1, not {_short(value)}")


def roi_problem(config: Mapping[str, Any], width: int, height: int) -> str | None:
    """Why the ``image_region_of_interest`` of an expanded ``config`` does not start inside the image a camera of
    ``width`` x ``height`` gives at the ROI step (after the pipeline binning and an ``ortho`` rotation, processing.md
    2 step 9), or None; checked at create / update (camera geometry) and by the instance (the frames it got)."""
    roi = config.get("image_region_of_interest")
    if not roi:
        return None
    width, height = width // int(config.get("binning_x") or 1), height // int(config.get("binning_y") or 1)
    rotation = config.get("rotation") or {}
    if rotation.get("mode") == "ortho" and int((rotation.get("angle") or 0) / 90) % 2:
        width, height = height, width
    problem = roi_outside(roi, width, height)
    return None if problem is None else f"image_region_of_interest {problem}"


def _finite(v: int | float) -> bool:
    """Finite and representable as a float (a huge JSON integer is neither a threshold nor a frame rate)."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


FIELDS = tuple(f.alias or name for name, f in PipelineConfig.model_fields.items())
_KNOWN = frozenset(FIELDS)


def _normalise_alias(config: dict[str, Any]) -> dict[str, Any]:
    """``background_id`` → ``image_background`` (+ enable the background unless the config says otherwise)."""
    if BACKGROUND_ALIAS not in config:
        return config
    config = dict(config)
    background = config.pop(BACKGROUND_ALIAS)
    if config.get("image_background") not in (None, background):
        raise InvalidConfig(f"Invalid pipeline config: '{BACKGROUND_ALIAS}' ({background!r}) and 'image_background' "
                            f"({config['image_background']!r}) disagree; give only one")
    config["image_background"] = background
    if background is not None and config.get("image_background_enable") is None:
        config["image_background_enable"] = True
    return config


def parse_pipeline_config(config: dict[str, Any]) -> PipelineConfig:
    """Validate ``config`` into the model, every default filled (the derived ones too); the one way a config dict
    becomes a :class:`PipelineConfig`. Raises :class:`InvalidConfig` naming each bad field."""
    if not isinstance(config, dict):
        raise InvalidConfig(f"Invalid pipeline config: must be a JSON object, not {type(config).__name__}")
    config = _normalise_alias(config)
    # A None value means "default" (README: unset fields are None), also for fields whose default is not None.
    given = {k: v for k, v in config.items() if not (v is None and k in _KNOWN and k not in NULL_IS_VALUE)}
    try:
        model = PipelineConfig.model_validate(given)
    except ValidationError as exc:
        # A derived default is not computed after an error in a field it depends on: that says nothing new.
        errors = [e for e in exc.errors() if e["type"] != "default_factory_not_called"]
        # Only the rules between fields failed (errors without a field location): every value is fine by itself.
        kind = InvalidCombination if errors and not any(e.get("loc") for e in errors) else InvalidConfig
        raise kind("Invalid pipeline config: " + describe_validation_errors(errors)) from None
    model._given_order = tuple(config)
    return model


def expand_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate ``config`` and return it complete, as a plain dict: every default filled, leading keys first
    (processing.md 3.7), see :meth:`PipelineConfig.to_dict`. Raises :class:`InvalidConfig` naming each bad field."""
    return parse_pipeline_config(config).to_dict()


def _merge_dict(current: dict[str, Any], update: dict[str, Any], known: bool) -> dict[str, Any]:
    """``update`` merged into a dict-valued parameter, key by key (recursively for dicts within).

    An inner None removes that key from one of our blocks (``known``: its default comes back on expansion); in a
    user parameter it is kept as None, as for top-level user keys (we know no default for it).
    """
    merged = dict(current)
    for key, value in update.items():
        if value is None and known:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_dict(merged[key], value, known)
        else:
            merged[key] = value
    return merged


def update_config(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Apply an incremental change: only the keys of ``update`` change; a key set to None returns to its default.

    Incremental also inside dict-valued parameters (PSI's clients post ``{"image_good_region": {"threshold": 0.6}}``
    and expect ``gfscale`` to stay): a dict merges into the current dict (see :func:`_merge_dict`).
    Exception: ``camera_timeout: null`` disables the camera timeout (README), as in :func:`expand_config`.
    Derived defaults follow their inputs: if ``current`` still has the derived value of e.g. ``block`` and the update
    changes ``mode``, ``block`` is derived again.
    """
    if not isinstance(update, dict):
        raise InvalidConfig(f"Invalid pipeline config: must be a JSON object, not {type(update).__name__}")
    update = _normalise_alias(update)
    merged = dict(current)
    old_derived = derived_defaults(current)
    # None, not a removed key: a parameter returning to its default keeps its place in the key order.
    for key in DERIVED_KEYS:
        if key not in update and merged.get(key) == old_derived[key]:
            merged[key] = None
    for key, value in update.items():
        if value is None and key not in NULL_IS_VALUE:
            merged[key] = None  # a parameter's default; an unknown (user) key set to None stays, as None
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_dict(merged[key], value, key in _KNOWN)
        else:
            merged[key] = value
    return expand_config(merged)
