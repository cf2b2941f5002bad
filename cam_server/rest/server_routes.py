"""Server-level routes, the same on both servers (PSI's clients call them: ``get_version``, ``get_logs``,
``get_config_names``).

* ``GET <api>/version`` → ``version``: ``cam_server.__version__``.
* ``GET <api>/config_names`` → ``config_names``: the names of the saved configs (cameras / pipelines).
* ``GET /api/v1/logs`` → ``logs``: the server's recent log records ``[time, logger, level, message]``, newest last.
* ``GET /api/v1/logs/txt`` → the same as ``text/plain``, one record per line.

The logs live under ``/api/v1``, not under a server's root. Install before a server's ``<api>/{name}`` routes,
which would otherwise take ``version`` or ``config_names`` as a name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from cam_server.common.log_ring import LogRing
from cam_server.rest.envelope import ok
from cam_server.rest.schemas import ConfigNamesAnswer, LogsAnswer, VersionAnswer, documented, errors
from cam_server.version import __version__

LOGS = "/api/v1/logs"


def install_server_routes(app: FastAPI, api: str, config_names: Callable[[], list[str]], logs: LogRing) -> None:
    """``<api>/version``, ``<api>/config_names`` (answered by ``config_names()``) and the logs of ``logs``."""

    @app.get(f"{api}/version", summary="Server version", response_model=documented(VersionAnswer),
             responses=errors())
    def get_version() -> dict[str, Any]:
        return ok("Version.", version=__version__)

    @app.get(f"{api}/config_names", summary="Names of the saved configs", response_model=documented(ConfigNamesAnswer),
             responses=errors())
    def get_config_names() -> dict[str, Any]:
        return ok("Config names.", config_names=config_names())

    @app.get(LOGS, summary="Recent log records of the server: [time, logger, level, message], newest last",
             response_model=documented(LogsAnswer), responses=errors())
    def get_logs() -> dict[str, Any]:
        return ok("Server logs.", logs=logs.records())

    @app.get(f"{LOGS}/txt", summary="Recent log records of the server as text, one per line",
             response_class=PlainTextResponse, responses=errors(text_route=True))
    def get_logs_txt() -> PlainTextResponse:
        return PlainTextResponse(logs.text())
