"""Everything an instance derives from one config, rebuilt only when a new config arrives (never per frame).

Loading a background or a user script costs milliseconds to seconds, so it happens here, once per config change;
the per-frame loop only reads plain attributes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cam_server.common.errors import InvalidConfig, NotFound
from cam_server.common.names import validate_name
from cam_server.pipeline.instance.functions import FunctionCache
from cam_server.processing.default import PASSIVE_BACKGROUND_KEY
from cam_server.processing.preprocess import background_mode

log = logging.getLogger(__name__)


def load_background(folder: str, background_id: str) -> np.ndarray:
    """``<folder>/<id>.npy`` as uint16 (backgrounds are always uint16, whatever was saved)."""
    validate_name(background_id, "background")
    path = Path(folder) / f"{background_id}.npy"
    if not path.is_file():
        raise NotFound(f"Background {background_id!r} not found in {folder}")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidConfig(f"Background {background_id!r} cannot be read: {exc}") from exc
    if array.ndim != 2:
        raise InvalidConfig(f"Background {background_id!r} must be a 2-D image, not shape {array.shape}")
    return np.ascontiguousarray(array.astype(np.uint16, copy=False))


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass
class LiveParameters:
    """Plain attributes the frame loop reads; ``parameters`` is the dict handed to processing functions."""

    config: dict[str, Any]
    parameters: dict[str, Any]
    function: Callable[..., Any]
    background: np.ndarray | None = None
    background_mode: bool | str = False
    paused: bool = False
    pid_range: list[int] | None = None
    downsampling: int | None = None
    averaging: int | None = None
    max_frame_rate: float | None = None
    copy: bool = False
    abort_on_error: bool = True
    include: list[str] | None = None
    exclude: frozenset[str] = field(default_factory=frozenset)
    records: int | None = None
    enforce_pid: bool = False


class ParameterBuilder:
    """Turns configs into :class:`LiveParameters`, keeping the loaded function and background between configs
    when their keys did not change (a background file is read again only if its id changes)."""

    def __init__(self, background_folder: str, scripts_folder: str) -> None:
        self._background_folder = background_folder
        self._functions = FunctionCache(scripts_folder)
        self._background_key: tuple[Any, ...] | None = None
        self._background: np.ndarray | None = None

    def build(self, config: dict[str, Any]) -> LiveParameters:
        """Derive the live state; raises :class:`InvalidConfig` / :class:`NotFound` with a readable message."""
        config = dict(config)
        parameters = dict(config)
        reload = bool(config.get("reload"))
        function = self._functions.get(config.get("function"), reload=reload)
        if reload:
            # README: reload is reset after the function was reloaded (also visible in processing_parameters).
            config["reload"] = parameters["reload"] = False

        mode = config.get("image_background_enable") or False
        background = None
        if mode and config.get("image_background"):
            background = self._load_background(config["image_background"])
            parameters["image_background_ok"] = True
            if background_mode(mode) == "passive":  # set here, once: frames never write the shared dict
                parameters[PASSIVE_BACKGROUND_KEY] = background
        elif mode:
            parameters["image_background_ok"] = False

        records = config.get("records")
        return LiveParameters(
            config=config,
            parameters=parameters,
            function=function,
            background=background,
            background_mode=mode,
            paused=bool(config.get("paused") or config.get("pause")),
            pid_range=config.get("pid_range"),
            downsampling=_int_or_none(config.get("downsampling")),
            averaging=_int_or_none(config.get("averaging")) or None,
            max_frame_rate=config.get("max_frame_rate"),
            copy=bool(config.get("copy")),
            abort_on_error=config.get("abort_on_error", True) is not False,
            include=list(config["include"]) if config.get("include") is not None else None,
            exclude=frozenset(config.get("exclude") or ()),
            records=int(records) if records else None,
            enforce_pid=bool(config.get("enforce_pid")),
        )

    def _load_background(self, background_id: str) -> np.ndarray:
        key = (background_id,)
        if key != self._background_key:
            self._background = load_background(self._background_folder, background_id)
            self._background_key = key
            log.info("loaded background %s %s", background_id, self._background.shape)
        assert self._background is not None
        return self._background
