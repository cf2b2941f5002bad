"""Loading user processing functions and scripts (config keys ``function`` and ``reload``).

A user names a script (``"my_proc"`` / ``"my_proc.py"`` in the scripts folder) or, only on a pipeline server started
with ``--allow_external_functions`` (:func:`allow_external_functions`), a path to a ``.py`` file or an importable
module (``"package.module"``). Every way this can go wrong — missing file, syntax
error, exception at import, missing or non-callable function, wrong return type — becomes a
:class:`UserScriptError` whose message says which script, which line and what to fix, so the pipeline
server can report it instead of crashing.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from cam_server.common.errors import CamServerError
from cam_server.pipeline.config import PipelineConfig
from cam_server.pipeline.function_names import ALLOW_OPTION, external_function, refusal, script_in_folder

log = logging.getLogger(__name__)

_cache: dict[str, ModuleType] = {}
_cache_lock = threading.Lock()
# Whether a name may be any .py path or importable module (the pipeline server's --allow_external_functions; the
# instance sets it from its spec). Off: only scripts of the scripts folder (function_names.py).
_external_allowed = False


def allow_external_functions(allowed: bool) -> bool:
    """Let names be any ``.py`` path or importable module (True) or only scripts of the scripts folder (False, the
    default), for this process; returns the previous setting."""
    global _external_allowed
    previous, _external_allowed = _external_allowed, bool(allowed)
    return previous


class UserScriptError(CamServerError):
    """A user script or function that cannot be loaded or used; the message names the script and line."""


class ScriptNotFound(UserScriptError):
    """No script (nor module) of that name: 404, like any other name that does not exist."""

    status_code = 404


def user_parameters(config: PipelineConfig) -> dict[str, Any]:
    """The config as user code gets it (``parameters``): the expanded dict, built once per config, with ``reload``
    false, since the instance reloaded the function when it took this config (README: reload resets itself)."""
    return {**config.to_dict(), "reload": False}


def resolve_script(name_or_path: str, scripts_folder: str | os.PathLike | None) -> str | None:
    """Absolute path of the script file, or None when the name does not refer to a file.

    Tried in order: for a bare name (no folder), ``<scripts_folder>/<name>`` and ``<scripts_folder>/<name>.py``
    (so an uploaded script wins over a same-named file in the server's working directory); then, only when external
    functions are allowed (:func:`allow_external_functions`), an existing path as given (absolute, or relative to
    the working directory, only when it ends with ``.py``).
    """
    in_folder = script_in_folder(name_or_path, scripts_folder)
    if in_folder is not None or not _external_allowed:
        return in_folder
    if name_or_path.endswith(".py") and os.path.isfile(name_or_path):
        return os.path.abspath(name_or_path)
    return None


def load_module(name_or_path: str, scripts_folder: str | os.PathLike | None = None,
                reload: bool = False) -> ModuleType:
    """Import a user script (file) or module by name; cached unless ``reload``."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise UserScriptError(f"script name must be a non-empty string, got {name_or_path!r}")
    name_or_path = name_or_path.strip()
    if not _external_allowed:
        reason = external_function(name_or_path, scripts_folder)
        if reason is not None:
            raise UserScriptError(refusal(reason))
    path = resolve_script(name_or_path, scripts_folder)
    key = path or name_or_path
    with _cache_lock:
        if not reload and key in _cache:
            return _cache[key]
        module = _import_file(path) if path else _import_module(name_or_path, scripts_folder, reload)
        _cache[key] = module
        return module


def load_function(name_or_path: str, scripts_folder: str | os.PathLike | None = None,
                  function_name: str = "process_image", reload: bool = False,
                  n_args: int | None = None) -> Callable[..., Any]:
    """The callable ``function_name`` of a user script; with ``n_args``, also check it accepts that many
    positional arguments (so a wrong signature fails at load time, not on the first frame)."""
    module = load_module(name_or_path, scripts_folder, reload)
    where = _describe(module)
    if not hasattr(module, function_name):
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        hint = f" (it defines: {', '.join(defined)})" if defined else ""
        raise UserScriptError(f"{where} has no function '{function_name}'{hint}")
    function = getattr(module, function_name)
    if not callable(function):
        raise UserScriptError(f"'{function_name}' in {where} is not callable (it is {type(function).__name__})")
    if n_args is not None:
        check_signature(function, n_args, f"'{function_name}' in {where}")
    return function


def check_signature(function: Callable[..., Any], n_args: int, what: str) -> None:
    """Raise :class:`UserScriptError` if ``function`` cannot be called with ``n_args`` positional arguments."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # builtins without introspection: trust them
    try:
        signature.bind(*range(n_args))
    except TypeError:
        raise UserScriptError(f"{what} cannot be called with {n_args} positional arguments; "
                              f"its signature is {function.__name__}{signature}") from None


def validate_result(result: Any, what: str = "processing function") -> dict:
    """The function's result as a dict; a clear error if it is not a mapping with string keys."""
    if isinstance(result, dict):
        out = result
    elif isinstance(result, Mapping):
        out = dict(result)
    else:
        raise UserScriptError(f"{what} must return a dict, got {type(result).__name__}")
    for key in out:
        if not isinstance(key, str):
            raise UserScriptError(f"{what} returned a non-string key {key!r} ({type(key).__name__}); "
                                  "channel names must be str")
    return out


def describe_exception(ex: BaseException, path: str | None = None) -> str:
    """``Type: message (file.py line N)`` pointing at the innermost frame in the user's file, if any."""
    location = ""
    frames = traceback.extract_tb(ex.__traceback__)
    user = [f for f in frames if path and os.path.abspath(f.filename) == path] or frames[-1:]
    if user:
        location = f" ({os.path.basename(user[-1].filename)} line {user[-1].lineno})"
    return f"{type(ex).__name__}: {ex}{location}"


def _import_file(path: str) -> ModuleType:
    digest = hashlib.sha1(path.encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() else "_" for c in os.path.splitext(os.path.basename(path))[0])
    module_name = f"cam_server_user_{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserScriptError(f"script {path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses / pickling inside the script need it registered
    try:
        spec.loader.exec_module(module)
    except SyntaxError as ex:
        sys.modules.pop(module_name, None)
        raise UserScriptError(f"syntax error in script {os.path.basename(path)} line {ex.lineno}: {ex.msg}"
                              + (f": {_excerpt(ex.text.strip())}" if ex.text else "")) from None
    except Exception as ex:
        sys.modules.pop(module_name, None)
        raise UserScriptError(f"error importing script {os.path.basename(path)}: "
                              f"{describe_exception(ex, path)}") from None
    log.info("loaded user script %s", path)
    return module


def _import_module(name: str, scripts_folder: str | os.PathLike | None, reload: bool) -> ModuleType:
    if "/" in name or os.sep in name or name.endswith(".py"):
        where = f" (scripts folder: {os.fspath(scripts_folder)})" if scripts_folder else ""
        raise ScriptNotFound(f"script '{name}' not found{where}")
    if not _external_allowed:
        where = f" in the scripts folder {os.fspath(scripts_folder)}" if scripts_folder else ""
        raise ScriptNotFound(f"script '{name}' not found{where} (modules are importable only when the pipeline "
                             f"server is started with {ALLOW_OPTION})")
    try:
        if reload and name in sys.modules:
            return importlib.reload(sys.modules[name])
        return importlib.import_module(name)
    except ModuleNotFoundError as ex:
        if ex.name and name.startswith(ex.name):
            where = f" in the scripts folder {os.fspath(scripts_folder)}" if scripts_folder else ""
            raise ScriptNotFound(f"script '{name}' not found{where} (nor as an importable module)") from None
        raise UserScriptError(f"error importing module '{name}': {describe_exception(ex)}") from None
    except SyntaxError as ex:
        raise UserScriptError(f"syntax error in module '{name}' line {ex.lineno}: {ex.msg}") from None
    except Exception as ex:
        raise UserScriptError(f"error importing module '{name}': {describe_exception(ex)}") from None


def _excerpt(text: str, limit: int = 200) -> str:
    """The start of a script's line for a message (a 200k-character line is not echoed back whole)."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _describe(module: ModuleType) -> str:
    path = getattr(module, "__file__", None)
    return f"script {os.path.basename(path)}" if path else f"module {module.__name__}"
