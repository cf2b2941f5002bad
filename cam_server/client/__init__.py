"""Python clients of the REST APIs: ``CamClient``, ``PipelineClient`` and ``ProxyClient`` (managers' routes).

Imported on first use, so ``cam_server.client.rest`` alone stays light for the instance processes."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_CLIENTS = {"CamClient": "cam_client", "PipelineClient": "pipeline_client", "ProxyClient": "proxy_client"}
__all__ = list(_CLIENTS)


def __getattr__(name: str) -> Any:
    if name in _CLIENTS:
        return getattr(import_module(f"{__name__}.{_CLIENTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
