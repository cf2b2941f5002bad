"""Exceptions that carry an HTTP status, so the REST layer can turn any of them into a clear 4xx answer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class CamServerError(Exception):
    """Base of our user-facing errors; ``status_code`` is the HTTP status the REST layer answers with."""

    status_code = 400


class InvalidName(CamServerError):
    """A camera, pipeline, instance, background or script name that is not safe to use."""


class InvalidConfig(CamServerError):
    """A configuration that fails validation; the message names the field."""


class InvalidCombination(InvalidConfig):
    """A configuration whose every value is valid, but not together (a rule between fields: mode FILE without
    ``file``, no input, ...); a live change that leads there conflicts with the running config (409)."""


class NotFound(CamServerError):
    status_code = 404


class Conflict(CamServerError):
    """The request clashes with the current state (e.g. an instance id already in use, a read-only instance)."""

    status_code = 409


class SourceUnavailable(CamServerError):
    """A camera or stream that cannot be reached (offline EPICS camera, dead bsread address)."""

    status_code = 503


def describe_validation_errors(errors: Iterable[Mapping[str, Any]], skip: tuple[str, ...] = ()) -> str:
    """pydantic's (and FastAPI's) error list as one readable line: ``'field.sub': message; ...``.

    ``skip`` drops location parts that mean nothing to the user (FastAPI's ``body``, ``query``).
    """
    parts = []
    for err in errors:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in skip)
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        kind = err.get("type")
        if kind == "missing":
            msg = "field required"
        elif kind == "extra_forbidden":
            msg = "unknown parameter"
        parts.append(f"'{loc}': {msg}" if loc else msg)
    return "; ".join(parts)
