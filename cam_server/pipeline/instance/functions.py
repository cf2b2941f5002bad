"""The ``function`` config key → the callable a processing instance runs per frame.

Built-in names map to the processing layer's functions; anything else is a user script or module loaded by
:mod:`cam_server.pipeline.instance.user_code` (files from the scripts folder or a path, importable modules; errors
name the script and line). The loaded function is kept between config updates: reloading costs time and resets
the script's module state, so it happens only when the name changes or ``reload`` is true.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cam_server.pipeline.instance.user_code import load_function

BUILTIN_NAMES = (None, "", "default", "process_image", "transparent")
PROCESS_IMAGE_ARGS = 7  # image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata


def builtin_function(name: str | None) -> Callable[..., Any] | None:
    """The processing layer's function for a built-in name, else None."""
    if name not in BUILTIN_NAMES:
        return None
    from cam_server.processing import default

    return default.transparent if name == "transparent" else default.process_image


def resolve_function(name: str | None, scripts_folder: str | None, reload: bool = False) -> Callable[..., Any]:
    """Callable for a ``function`` value; raises UserScriptError (a CamServerError) naming what is wrong."""
    function = builtin_function(name)
    if function is not None:
        return function
    return load_function(str(name), scripts_folder, "process_image", reload=reload, n_args=PROCESS_IMAGE_ARGS)


class FunctionCache:
    """Keeps the resolved function until the name changes or a reload is asked for."""

    def __init__(self, scripts_folder: str | None) -> None:
        self._folder = scripts_folder
        self._name: Any = object()
        self._function: Callable[..., Any] | None = None

    def get(self, name: str | None, reload: bool = False) -> Callable[..., Any]:
        if reload or self._function is None or name != self._name:
            self._function = resolve_function(name, self._folder, reload=reload)
            self._name = name
        return self._function
