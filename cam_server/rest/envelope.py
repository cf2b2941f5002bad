"""The JSON envelope of every answer (``state``, ``status`` and one specific field) and the error handlers.

Every failure, whatever raised it, becomes an HTTP 4xx/5xx answer ``{"state": "error", "status": "<message>"}``
so that clients (ours and PSI's) can show the message.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic_core import PydanticSerializationError, to_json
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from cam_server.common.errors import CamServerError, describe_validation_errors

log = logging.getLogger(__name__)

# Configs are small; a larger body is a mistake (and would travel with every pipeline message as processing_parameters).
MAX_JSON_BODY_BYTES = 1024 * 1024


class BodyTooLarge(CamServerError):
    status_code = 413


def ok(status: str, **fields: Any) -> dict[str, Any]:
    """A success answer: ``{"state": "ok", "status": status, **fields}``."""
    return {"state": "ok", "status": status, **fields}


# An error message echoes parts of the request (names, values, a script's bad line): never more than this.
MAX_MESSAGE_CHARS = 2000


def error_response(status_code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status_code, content={"state": "error", "status": cap_message(message)},
                        headers=headers)


def cap_message(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` cut to ``limit`` characters, saying how long it was (a 200k-character script line or name
    echoed back whole helps nobody)."""
    if len(message) <= limit:
        return message
    return message[:limit - 60] + f"... (message cut: {len(message)} characters)"


def install_error_handlers(app: FastAPI) -> None:
    """Map our exceptions, FastAPI validation errors, HTTP errors and anything unexpected to the envelope."""

    @app.exception_handler(CamServerError)
    async def _ours(_: Request, exc: CamServerError) -> JSONResponse:
        return error_response(exc.status_code, str(exc), getattr(exc, "headers", None))  # 429: Retry-After

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "Invalid request: " + describe_validation_errors(exc.errors(), skip=("body",)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the methods of the first route of this path
            headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
            headers["Allow"] = ", ".join(allowed_methods(request))
        return error_response(exc.status_code, _http_message(request, exc, headers.get("Allow")), headers or None)

    @app.exception_handler(ValueError)
    async def _value(_: Request, exc: ValueError) -> JSONResponse:
        return error_response(400, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(500, f"Internal error: {type(exc).__name__}: {exc}")


async def json_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a clear 4xx when it is missing, too large, not JSON or not an object."""
    return parse_json_object(await read_limited(request, MAX_JSON_BODY_BYTES))


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A body already read (e.g. with a larger limit) as a JSON object, or a clear 400."""
    if not raw.strip():
        raise CamServerError("Request body is empty: a JSON object is required.")
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise CamServerError("Request body is nested too deeply to be a configuration.") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise CamServerError(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CamServerError(f"Request body must be a JSON object, not {_json_type(value)}.")
    return value


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refusing (413) more than ``limit`` bytes before reading them all into memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"Request body too large: {int(declared)} bytes (at most {limit}).")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"Request body too large: more than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constant(name: str) -> Any:
    """Python's json reads NaN/Infinity, which JSON does not have and our answers could not contain."""
    raise ValueError(f"{name} is not a JSON value (use a number or null)")


def _finite_float(text: str) -> float:
    """A JSON number with a fraction or exponent; one too large for a float (``1e400``) would become inf, which
    config files could then only store as the non-JSON ``Infinity``."""
    value = float(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 40 else text[:30] + f"... ({len(text)} characters)"
        raise ValueError(f"the number {shown} is too large (out of the range of a double)")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {list: "an array", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def allowed_methods(request: Request) -> list[str]:
    """The methods of the resource this request's path names (for a 405's ``Allow``), sorted: those of every route
    with the path template of the first route that matches the path (the one the router chose), not just of that
    route (Starlette's ``Allow``), nor of a ``{name}`` route that would also match a fixed path like ``info``."""
    template = None
    methods: set[str] = set()
    for route in request.app.router.routes:
        path = getattr(route, "path", None)
        if template is None:
            match, _ = route.matches(request.scope)
            if match == Match.NONE:
                continue
            template = path
        if path == template:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _http_message(request: Request, exc: StarletteHTTPException, allowed: str | None = None) -> str:
    """Starlette's bare "Not Found" / "Method Not Allowed" made specific: what was asked and what exists."""
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404 and exc.detail == "Not Found":
        return (f"Not Found: {where} is not a route of this server (see /docs). Names cannot contain '/' "
                "(nor an encoded %2F).")
    if exc.status_code == 405:
        return f"Method {request.method} is not allowed on {request.url.path}" + (f"; use {allowed}." if allowed
                                                                                    else ".")
    return str(exc.detail)


def ok_response(status: str, **fields: Any) -> Response:
    """:func:`ok` sent as JSON in one encoding pass, for the routes polled often (info).

    A route returning a dict is serialised twice (pydantic's JSON-mode pass, then ``json.dumps``); the answers of
    the info routes are plain JSON values already, so they are encoded once, by pydantic's encoder (non-finite
    floats become null, as the two passes made them). A value it does not know goes through FastAPI's encoder first.
    """
    content = ok(status, **fields)
    try:
        body = to_json(content, inf_nan_mode="null")
    except PydanticSerializationError:
        body = to_json(jsonable_encoder(content), inf_nan_mode="null")
    return Response(body, media_type="application/json")
