"""Small helpers users import (``from cam_server.utils import get_host_port_from_stream_address``)."""

from __future__ import annotations

from urllib.parse import urlparse


def get_host_port_from_stream_address(stream_address: str) -> tuple[str, int]:
    """Split ``tcp://host:port`` into ``(host, port)``."""
    parsed = urlparse(stream_address)
    if parsed.scheme != "tcp" or not parsed.hostname or parsed.port is None:
        raise ValueError(f"Invalid stream address {stream_address!r}: expected tcp://host:port")
    return parsed.hostname, parsed.port
