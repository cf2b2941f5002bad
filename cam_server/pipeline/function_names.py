"""Which ``function`` values a pipeline server runs: its built-in functions and the scripts of its scripts folder.

A ``function`` may also name a ``.py`` file anywhere or an importable module (``package.module``), but only on a
server started with ``--allow_external_functions``: otherwise a REST client could run any code on the server's disk
(issue 11). Shared by the server (which refuses such a config with a 400 when it is created, saved or changed) and
the instance (which refuses to load it, whatever config reaches it).

A plain name (no path, no dot) is a script name: when the folder has no such script, the instance reports it missing
(the server does not refuse it: the script may be uploaded before the instance loads it).
"""

from __future__ import annotations

import os

ALLOW_OPTION = "--allow_external_functions"


def script_in_folder(name: str, scripts_folder: str | os.PathLike | None) -> str | None:
    """Absolute path of ``<scripts_folder>/<name>`` or ``<scripts_folder>/<name>.py`` (a file ending in ``.py``), for
    a bare name only (no folder part); else None."""
    if not scripts_folder or os.path.basename(name) != name or name in ("", ".", "..") or "\\" in name:
        return None
    for candidate in (name, name + ".py"):
        path = os.path.join(os.fspath(scripts_folder), candidate)
        if candidate.endswith(".py") and os.path.isfile(path):
            return os.path.abspath(path)
    return None


def external_function(name: object, scripts_folder: str | os.PathLike | None) -> str | None:
    """Why ``name`` would run code from outside the built-ins and the scripts folder, or None when it does not."""
    if not isinstance(name, str) or not name.strip():
        return None  # the built-in default (or a type error the config model reports)
    name = name.strip()
    if "/" in name or "\\" in name or name in (".", ".."):
        return f"function '{name}' is a path, not a script of the scripts folder"
    if script_in_folder(name, scripts_folder) is not None:
        return None
    if "." in name.removesuffix(".py"):
        return f"function '{name}' names a Python module, not a script of the scripts folder"
    return None


def refusal(reason: str) -> str:
    """The message refusing an external function (``reason`` from :func:`external_function`)."""
    return (f"{reason}: this pipeline server runs only its built-in functions and the scripts of its scripts folder "
            "(upload one with set_user_script, PUT /api/v1/pipeline/script/<name>/script_bytes); other files and "
            f"modules only when the server is started with {ALLOW_OPTION}.")
