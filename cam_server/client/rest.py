"""The HTTP plumbing shared by :class:`CamClient` and :class:`PipelineClient`."""

from __future__ import annotations

from typing import Any

import requests


class RestClient:
    """Calls a server's REST API and unwraps the JSON envelope; errors raise ``ValueError(status message)``."""

    def __init__(self, address: str, prefix: str, timeout: float = 30.0) -> None:
        self._address = address.rstrip("/")
        self._api = f"{self._address}{prefix}"
        self._timeout = timeout
        self._session = requests.Session()

    def get_address(self) -> str:
        """Return the REST api endpoint address."""
        return self._address

    def _url(self, path: str) -> str:
        return f"{self._api}{path}"

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("timeout", self._timeout)
        response = self._session.request(method, self._url(path), **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise ValueError(f"{method} {path}: HTTP {response.status_code}, not a JSON answer: "
                             f"{response.text[:200]!r}") from None
        if not isinstance(body, dict) or body.get("state") != "ok":
            status = body.get("status") if isinstance(body, dict) else body
            raise ValueError(status)
        return body

    def _get(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._request("GET", path, **kwargs)

    def _post(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._request("POST", path, **kwargs)

    def _delete(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._request("DELETE", path, **kwargs)

    def _get_raw(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        response = self._session.get(self._url(path), **kwargs)
        if response.status_code != 200:
            try:
                message = response.json().get("status")
            except ValueError:
                message = response.text[:200]
            raise ValueError(message)
        return response
