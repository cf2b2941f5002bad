"""The HTTP plumbing shared by :class:`CamClient` and :class:`PipelineClient`, and the server-level methods both
have (``get_version``, ``get_logs``, ``get_config_names``)."""

from __future__ import annotations

import os
from typing import Any

import requests

LOGS_PATH = "/api/v1/logs"  # server-wide, not under a server's root
TOKEN_ENV = "CAM_SERVER_API_TOKEN"  # the same variable the servers read (cam_server.rest.auth)


class ErrorAnswer(ValueError):
    """An error answer of a server: ``str()`` is its status message, ``status_code`` its HTTP status (a ValueError,
    as every error answer has always been)."""

    def __init__(self, message: Any, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class RestClient:
    """Calls a server's REST API and unwraps the JSON envelope; errors raise ``ValueError(status message)``.

    ``token``: the server's API token, sent as ``Authorization: Bearer <token>`` (servers started with
    ``--api_token`` refuse POST, PUT and DELETE without it); default: the environment variable
    ``CAM_SERVER_API_TOKEN``, if set; ``""``: none.
    """

    def __init__(self, address: str, prefix: str, timeout: float = 30.0, token: str | None = None) -> None:
        self._address = address.rstrip("/")
        self._api = f"{self._address}{prefix}"
        self._timeout = timeout
        self._session = requests.Session()
        token = os.environ.get(TOKEN_ENV) if token is None else token
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    def get_address(self) -> str:
        """Return the REST api endpoint address."""
        return self._address

    def _url(self, path: str) -> str:
        return f"{self._api}{path}"

    def _request(self, method: str, path: str, *, url: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """``method`` on ``<root><path>`` (or on ``url``), unwrapped: the answer's envelope as a dict."""
        kwargs.setdefault("timeout", self._timeout)
        response = self._session.request(method, url or self._url(path), **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise ValueError(f"{method} {path}: HTTP {response.status_code}, not a JSON answer: "
                             f"{response.text[:200]!r}") from None
        if not isinstance(body, dict) or body.get("state") != "ok":
            status = body.get("status") if isinstance(body, dict) else body
            raise ErrorAnswer(status, response.status_code)
        return body

    def _get(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._request("GET", path, **kwargs)

    def _post(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._request("POST", path, **kwargs)

    def _delete(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._request("DELETE", path, **kwargs)

    def _get_raw(self, path: str, *, url: str | None = None, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        response = self._session.get(url or self._url(path), **kwargs)
        if response.status_code != 200:
            try:
                message = response.json().get("status")
            except ValueError:
                message = response.text[:200]
            raise ErrorAnswer(message, response.status_code)
        return response

    # --- server-level routes (both servers) -------------------------------------------------------------------
    def get_version(self) -> str:
        """The server's cam_server version."""
        return self._get("/version")["version"]

    def get_config_names(self) -> list[str]:
        """Names of the saved configs: cameras on the camera server, pipelines on the pipeline server."""
        return self._get("/config_names")["config_names"]

    def get_logs(self, txt: bool = False) -> list[list[str]] | str:
        """The server's recent log records, oldest first: ``[time, logger, level, message]`` each, or with ``txt``
        the same as text, one record per line."""
        url = f"{self._address}{LOGS_PATH}"
        if txt:
            return self._get_raw(LOGS_PATH, url=f"{url}/txt").text
        return self._get(LOGS_PATH, url=url)["logs"]
