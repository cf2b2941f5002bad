"""Reading camera streams in tests."""

from __future__ import annotations

from collections.abc import Callable

from cam_server.bsread.message import Message
from tests.helpers.streams import receive_from, values

__all__ = ["receive", "values"]


def receive(address: str, predicate: Callable[[Message], bool] | None = None, timeout: float = 10.0,
            count: int = 1) -> list[Message]:
    """``count`` messages (each satisfying ``predicate``) from a camera stream; raises on timeout."""
    return receive_from(address, count, predicate, timeout)
