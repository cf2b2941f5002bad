"""A camera-like bsread stream sent from a thread, and the one way tests receive from streams (:func:`receive`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from cam_server.bsread import PUB, PUSH, SUB, Message, Sender, Source


class CameraStream:
    """The six camera channels (``width, height, timestamp, image, x_axis, y_axis``) plus :meth:`extra_values`
    at ``rate`` Hz from a thread, with consecutive pulse ids from ``start_pulse_id``.

    A message the sender did not take (blocking PUSH nobody reads, after its send timeout) keeps its pulse id for
    the next try, so a receiver can prove that nothing was lost or duplicated. The same read-only image is sent
    every time (the sender never needs a fresh array for unchanged data).
    """

    def __init__(self, image: np.ndarray, address: str, rate: float, start_pulse_id: int, mode: int = PUB,
                 port: int | None = None) -> None:
        self.image = image
        self.image.flags.writeable = False
        self.rate = rate
        self.mode = mode
        self.pulse_id = start_pulse_id
        self._bind = (address, port)  # as the Sender takes them
        self.address = address if port is None else f"{address}:{port}"  # what receivers connect to
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def declare(self, sender: Sender) -> bool:
        """Declare the channels before the first message (True), or let the sender derive them (False)."""
        return False

    def extra_values(self, pulse_id: int) -> dict[str, Any]:
        """Channels sent after the camera channels."""
        return {}

    def _run(self, sender: Sender, check_data: bool) -> None:
        h, w = self.image.shape
        x_axis = np.arange(w, dtype=np.float32)
        y_axis = np.arange(h, dtype=np.float32)
        period = 1.0 / self.rate
        next_time = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.time()
                data = {"width": w, "height": h, "timestamp": now, "image": self.image, "x_axis": x_axis,
                        "y_axis": y_axis, **self.extra_values(self.pulse_id)}
                if sender.send(data, timestamp=now, pulse_id=self.pulse_id, check_data=check_data):
                    self.pulse_id += 1
                    self.sent += 1
                next_time += period
                self._stop.wait(max(0.0, next_time - time.monotonic()))
        finally:
            sender.close()

    def start(self) -> CameraStream:
        address, port = self._bind
        block = self.mode == PUSH
        sender = Sender(port=port, address=address, mode=self.mode, queue_size=100, block=block,
                        send_timeout=100 if block else None)
        check_data = not self.declare(sender)
        sender.open()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(sender, check_data), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> CameraStream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def connect(stream: str, mode: int = SUB, queue_size: int = 1000) -> Source:
    """A connected Source on ``stream`` (SUB or PULL), for tests that receive from it more than once."""
    return Source(address=stream, mode=mode, receive_timeout=200, queue_size=queue_size).connect()


def receive(stream: Source | str, count: int = 1, predicate: Callable[[Message], bool] | None = None, *,
            skip: int = 0, timeout: float = 15.0) -> list[Message]:
    """``count`` messages from ``stream``: an open Source, or a stream address (SUB, connected for this call only).

    The first ``skip`` messages are discarded (one may predate a change), then every message ``predicate``
    refuses. Raises TimeoutError naming what arrived when they do not all come within ``timeout`` s: every test
    reads streams through this one loop, so a stream that stalls fails the same clear way everywhere.
    """
    if isinstance(stream, str):
        with Source(address=stream, mode=SUB, receive_timeout=200) as source:
            return receive(source, count, predicate, skip=skip, timeout=timeout)
    messages: list[Message] = []
    skipped = 0
    deadline = time.monotonic() + timeout
    while len(messages) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"received {len(messages)} of {count} messages (after skipping {skipped}) from "
                               f"{stream.endpoint} in {timeout} s")
        message = stream.receive()
        if message is None:
            continue
        if skipped < skip:
            skipped += 1
        elif predicate is None or predicate(message):
            messages.append(message)
    return messages


def values(message: Message) -> dict[str, Any]:
    """Channel name → value of a received message."""
    return {name: v.value for name, v in message.data.data.items()}
