"""cam_server: camera and image-processing pipeline server streaming bsread over ZeroMQ.

Users import the clients: ``from cam_server import CamClient, PipelineClient``.
"""

from __future__ import annotations

from typing import Any

from cam_server.version import __version__

__all__ = ["CamClient", "PipelineClient", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the bsread or processing layers does not pull in HTTP clients.
    if name == "CamClient":
        from cam_server.client.cam_client import CamClient

        return CamClient
    if name == "PipelineClient":
        from cam_server.client.pipeline_client import PipelineClient

        return PipelineClient
    raise AttributeError(name)
