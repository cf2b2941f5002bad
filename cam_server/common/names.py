"""Validation of names that end up in file names, URLs and stream endpoints."""

from __future__ import annotations

import re

from cam_server.common.errors import InvalidName

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:+\-]{0,199}$")


def validate_name(name: object, what: str = "name") -> str:
    """Return ``name`` if it is safe as a file name and URL segment, else raise :class:`InvalidName`.

    Allowed: letters, digits, ``_ . : + -``, not starting with a dot or dash, at most 200 characters. This
    rules out path traversal (``/``, ``..``, ``\\``), hidden files and empty names.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in {".", ".."} or ".." in name:
        raise InvalidName(
            f"Invalid {what} {name!r}: use 1-200 letters, digits or '_.:+-', not starting with '.' or '-', "
            "and no '..'"
        )
    return name
