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
from cam_server.pipeline.config import PipelineConfig
from cam_server.pipeline.instance.functions import FunctionCache
from cam_server.pipeline.instance.output import channel_selection
from cam_server.pipeline.instance.user_code import user_parameters
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


@dataclass
class LiveParameters:
    """What the frame loop reads besides the config's own fields: ``parameters`` is the dict handed to processing
    functions (and shown in ``processing_parameters``), ``function`` and ``background`` are loaded."""

    config: PipelineConfig
    parameters: dict[str, Any]
    function: Callable[..., Any]
    background: np.ndarray | None = None
    paused: bool = False  # ``paused``, or the user key ``pause``
    include: list[str] | None = None
    exclude: frozenset[str] = field(default_factory=frozenset)


class ParameterBuilder:
    """Turns configs into :class:`LiveParameters`, keeping the loaded function and background between configs
    when their keys did not change (a background file is read again only if its id changes)."""

    def __init__(self, background_folder: str, scripts_folder: str) -> None:
        self._background_folder = background_folder
        self._functions = FunctionCache(scripts_folder)
        self._background_key: tuple[Any, ...] | None = None
        self._background: np.ndarray | None = None

    def build(self, config: PipelineConfig) -> LiveParameters:
        """Derive the live state; raises :class:`InvalidConfig` / :class:`NotFound` with a readable message."""
        function = self._functions.get(config.function, reload=config.reload)
        parameters = user_parameters(config)  # reload reset: also visible in processing_parameters

        mode = config.image_background_enable
        background = None
        if mode and config.image_background:
            background = self._load_background(config.image_background)
            parameters["image_background_ok"] = True
            if background_mode(mode) == "passive":  # set here, once: frames never write the shared dict
                parameters[PASSIVE_BACKGROUND_KEY] = background
        elif mode:
            parameters["image_background_ok"] = False

        include, exclude = channel_selection(config)
        return LiveParameters(config=config, parameters=parameters, function=function, background=background,
                              paused=config.paused or bool((config.model_extra or {}).get("pause")),
                              include=include, exclude=exclude)

    def _load_background(self, background_id: str) -> np.ndarray:
        key = (background_id,)
        if key != self._background_key:
            self._background = load_background(self._background_folder, background_id)
            self._background_key = key
            log.info("loaded background %s %s", background_id, self._background.shape)
        assert self._background is not None
        return self._background
