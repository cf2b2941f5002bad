"""Small helpers users import (``from cam_server.utils import get_host_port_from_stream_address``)."""

from __future__ import annotations

from cam_server.bsread.address import host_and_port


def get_host_port_from_stream_address(stream_address: str) -> tuple[str, int]:
    """Split ``tcp://host:port`` into ``(host, port)`` (``ValueError`` for anything else)."""
    return host_and_port(stream_address)
