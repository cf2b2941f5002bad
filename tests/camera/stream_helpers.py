"""Reading camera streams in tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from cam_server.bsread import SUB, Source
from cam_server.bsread.message import Message


def receive(address: str, predicate: Callable[[Message], bool] | None = None, timeout: float = 10.0,
            count: int = 1) -> list[Message]:
    """``count`` messages (each satisfying ``predicate``) from a camera stream; raises on timeout."""
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    with Source(address=address, mode=SUB, receive_timeout=200) as stream:
        while len(messages) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"got {len(messages)} of {count} messages from {address} in {timeout} s")
            message = stream.receive()
            if message is not None and (predicate is None or predicate(message)):
                messages.append(message)
    return messages


def values(message: Message) -> dict:
    return {name: v.value for name, v in message.data.data.items()}
