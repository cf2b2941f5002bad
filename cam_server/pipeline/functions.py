"""Resolving the ``function`` config key to a callable: built-ins, user script files, importable modules.

User scripts are loaded from their file with importlib (not ``sys.path`` tricks) under a private module name, so
two pipelines using files with the same name never share a module, and ``reload: true`` re-executes the file.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cam_server.common.errors import InvalidConfig

log = logging.getLogger(__name__)

_counter = itertools.count()

BUILTIN_NAMES = {None, "", "default", "process_image", "transparent"}


def _builtin(name: str | None, entry: str) -> Callable[..., Any] | None:
    if name not in BUILTIN_NAMES:
        return None
    from cam_server.processing import default

    if name == "transparent":
        return default.transparent
    if entry == "process_image":
        return default.process_image
    return None


def script_path(name: str, scripts_folder: str | None) -> Path | None:
    """The file a ``function`` value names, or None if it names no existing file.

    Accepted: an absolute or relative path to a ``.py`` file, or a file name (with or without ``.py``) inside
    the scripts folder. Names from the scripts folder may not escape it.
    """
    candidates: list[Path] = []
    direct = Path(name)
    if direct.suffix == ".py" and (direct.is_absolute() or "/" in name):
        candidates.append(direct)
    if scripts_folder:
        folder = Path(scripts_folder).resolve()
        file_name = name if name.endswith(".py") else f"{name}.py"
        inside = (folder / file_name).resolve()
        if inside.parent == folder:
            candidates.append(inside)
    for path in candidates:
        if path.is_file():
            return path
    return None


def load_file_function(path: Path, entry: str) -> Callable[..., Any]:
    """Execute the script file as a fresh module and return its ``entry`` function."""
    module_name = f"cam_server_user_script_{path.stem}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise InvalidConfig(f"Cannot load function file {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - any error in user code is a config error with its message
        raise InvalidConfig(f"Error loading function file {str(path)!r}: {type(exc).__name__}: {exc}") from exc
    function = getattr(module, entry, None)
    if not callable(function):
        raise InvalidConfig(f"Function file {str(path)!r} does not define {entry}()")
    log.info("loaded %s() from %s", entry, path)
    return function


def resolve_function(name: str | None, scripts_folder: str | None, entry: str = "process_image",
                     ) -> Callable[..., Any]:
    """Callable for the ``function`` config value: built-in, user file, or ``package.module`` importable name."""
    builtin = _builtin(name, entry)
    if builtin is not None:
        return builtin
    if not isinstance(name, str):
        raise InvalidConfig(f"Invalid function {name!r}: expected a function or file name")
    path = script_path(name, scripts_folder)
    if path is not None:
        return load_file_function(path, entry)
    if not name.endswith(".py") and "/" not in name:
        module_name, _, attr = name.rpartition(".")
        for mod, fn in ((name, entry), (module_name, attr)):
            function = _import_function(mod, fn)
            if function is not None:
                return function
    raise InvalidConfig(f"Function {name!r} not found: no file {name if name.endswith('.py') else name + '.py'} "
                        f"in scripts folder {scripts_folder!r} and no importable module with {entry}()")


def _import_function(module_name: str, attr: str) -> Callable[..., Any] | None:
    if not module_name or not attr:
        return None
    try:
        module = importlib.import_module(module_name)
    except Exception:  # noqa: BLE001 - not importable: the caller tries the next interpretation
        return None
    function = getattr(module, attr, None)
    return function if callable(function) else None


class FunctionCache:
    """Keeps the loaded function between config updates: reloading is costly and resets module state."""

    def __init__(self, scripts_folder: str | None, entry: str = "process_image") -> None:
        self._folder, self._entry = scripts_folder, entry
        self._name: Any = object()
        self._function: Callable[..., Any] | None = None

    def get(self, name: str | None, reload: bool = False) -> Callable[..., Any]:
        if reload or self._function is None or name != self._name:
            if reload:
                sys.modules.pop(str(name), None)
            self._function = resolve_function(name, self._folder, self._entry)
            self._name = name
        return self._function
