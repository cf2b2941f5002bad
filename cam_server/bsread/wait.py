"""Waiting for the next (suitable) message of a stream, with a deadline and an early exit when the sender died.

Why a helper: the servers read single messages from their own instances' streams (a camera image, a pipeline
message, frames for a background) and each must neither wait forever on a stream of unsuitable messages nor wait
out the whole timeout for an instance that has already ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cam_server.bsread.message import Message
from cam_server.bsread.receiver import Source


def next_message(stream: Source, timeout: float, accept: Callable[[Message], bool] | None = None,
                 alive: Callable[[], bool] | None = None) -> Message | None:
    """The next message of the connected ``stream`` that ``accept`` (default: any), or None when none came within
    ``timeout`` seconds or, after an empty receive, ``alive()`` says the sender is gone.

    The stream's own ``receive_timeout`` sets how often the deadline and ``alive`` are checked when idle; the
    deadline is also checked between rejected messages.
    """
    deadline = time.monotonic() + timeout
    while True:
        message = stream.receive()
        if message is None:
            if alive is not None and not alive():
                return None
        elif accept is None or accept(message):
            return message
        if time.monotonic() > deadline:
            return None
