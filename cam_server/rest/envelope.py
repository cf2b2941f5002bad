"""The JSON envelope of every answer (``state``, ``status`` and one specific field) and the error handlers.

Every failure, whatever raised it, becomes an HTTP 4xx/5xx answer ``{"state": "error", "status": "<message>"}``
so that clients (ours and PSI's) can show the message.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cam_server.common.errors import CamServerError

log = logging.getLogger(__name__)


def ok(status: str, **fields: Any) -> dict[str, Any]:
    """A success answer: ``{"state": "ok", "status": status, **fields}``."""
    return {"state": "ok", "status": status, **fields}


def error_response(status_code: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status_code, content={"state": "error", "status": message})


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body",))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "Invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Map our exceptions, FastAPI validation errors, HTTP errors and anything unexpected to the envelope."""

    @app.exception_handler(CamServerError)
    async def _ours(_: Request, exc: CamServerError) -> JSONResponse:
        return error_response(exc.status_code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(ValueError)
    async def _value(_: Request, exc: ValueError) -> JSONResponse:
        return error_response(400, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(500, f"Internal error: {type(exc).__name__}: {exc}")


async def json_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or a clear 400 when it is missing or not an object."""
    raw = await request.body()
    if not raw.strip():
        raise CamServerError("Request body is empty: a JSON object is required.")
    try:
        import json

        value = json.loads(raw)
    except ValueError as exc:
        raise CamServerError(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CamServerError("Request body must be a JSON object.")
    return value
