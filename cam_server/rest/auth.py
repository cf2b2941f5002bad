"""Optional authentication: with an API token, every mutating request (POST, PUT, PATCH, DELETE) must carry it.

A server started with ``--api_token`` (or the environment variable :data:`TOKEN_ENV`) answers a mutating request
without ``Authorization: Bearer <token>``, or with another token, 401 in the JSON envelope (with
``WWW-Authenticate: Bearer``); reads (GET, HEAD, OPTIONS) stay open. Without a token anyone who can reach the port
can change configs and run code through user scripts (README "Security").

A pure ASGI middleware: the check happens before any route (nothing of a refused request runs, its body is not
read), costs one header lookup, and does not wrap streaming answers the way Starlette's ``BaseHTTPMiddleware`` does.
The token is compared in constant time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI

from cam_server.rest.envelope import error_response
from cam_server.rest.schemas import REF, ErrorAnswer

TOKEN_ENV = "CAM_SERVER_API_TOKEN"
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NO_TOKEN = ("Authentication required: this server's POST, PUT and DELETE routes need the header "
            "'Authorization: Bearer <token>' with the server's API token.")
WRONG_TOKEN = "Invalid API token in the Authorization header."

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def api_token(value: str | None = None) -> str | None:
    """The token a server uses: ``value`` (its ``--api_token``), else :data:`TOKEN_ENV`; None when neither is set
    (an empty value counts as not set)."""
    token = value if value is not None else os.environ.get(TOKEN_ENV)
    return token or None


class BearerTokenAuth:
    """ASGI middleware refusing mutating requests without the bearer ``token`` (401, the JSON envelope)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], token: str) -> None:
        self.app = app
        self._expected = token.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in MUTATING:
            problem = self._problem(scope)
            if problem is not None:
                response = error_response(401, problem)
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _problem(self, scope: Scope) -> str | None:
        """None when the request carries the token, else what is wrong with it."""
        header = next((value for name, value in scope.get("headers", ()) if name == b"authorization"), None)
        if header is None:
            return NO_TOKEN
        scheme, _, presented = header.partition(b" ")
        if scheme.lower() != b"bearer" or not presented.strip():
            return NO_TOKEN
        if not hmac.compare_digest(presented.strip(), self._expected):
            return WRONG_TOKEN
        return None


def install_auth(app: FastAPI, token: str | None) -> None:
    """Require ``token`` on ``app``'s mutating routes (nothing when None), and document the 401 they may answer.

    Call after every route is declared and after anything else that wraps ``app.openapi``. The 401 is documented
    whether or not this server has a token: the documents in ``docs/`` are the same for every server.
    """
    if token:
        app.add_middleware(BearerTokenAuth, token=token)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()
        answer = {"description": "The server has an API token (--api_token) and the request did not carry it as "
                                 "'Authorization: Bearer <token>'",
                  "content": {"application/json": {"schema": {"$ref": REF + ErrorAnswer.__name__}}}}
        for operations in document.get("paths", {}).values():
            for method, operation in operations.items():
                if method.upper() in MUTATING:
                    operation.setdefault("responses", {}).setdefault("401", answer)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
