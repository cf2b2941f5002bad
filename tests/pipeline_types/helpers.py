"""Helpers for the pipeline-type tests: a bsread test camera with known pulse ids, user scripts, receiving."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from cam_server.bsread import PUB, PULL, PUSH, SUB, Message, Sender, Source
from cam_server.client.pipeline_client import PipelineClient
from tests.helpers.net import free_port
from tests.helpers.procs import wait_until

WIDTH, HEIGHT = 32, 24


def known_image(width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A small uint16 image with a known content (value = 10 * row + column)."""
    return (10 * np.arange(height)[:, None] + np.arange(width)[None, :]).astype(np.uint16)


class TestCamera:
    """A bsread stream with the six camera channels plus ``counter`` (= pulse id) at ``rate`` Hz from a thread.

    Pulse ids start at ``start_pulse_id`` and increase by one per message, so a receiver can prove that nothing
    was lost or duplicated."""

    __test__ = False  # not a pytest test class

    def __init__(self, rate: float = 100.0, mode: int = PUB, start_pulse_id: int = 1000,
                 image: np.ndarray | None = None) -> None:
        self.image = known_image() if image is None else image
        self.image.flags.writeable = False
        self.rate = rate
        self.mode = mode
        self.pulse_id = start_pulse_id
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self, sender: Sender) -> None:
        h, w = self.image.shape
        x_axis = np.arange(w, dtype=np.float32)
        y_axis = np.arange(h, dtype=np.float32)
        period = 1.0 / self.rate
        next_time = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.time()
                data = {"width": w, "height": h, "timestamp": now, "image": self.image, "x_axis": x_axis,
                        "y_axis": y_axis, "counter": self.pulse_id}
                if sender.send(data, timestamp=now, pulse_id=self.pulse_id):
                    self.pulse_id += 1
                    self.sent += 1
                next_time += period
                self._stop.wait(max(0.0, next_time - time.monotonic()))
        finally:
            sender.close()

    def start(self) -> TestCamera:
        block = self.mode == PUSH
        sender = Sender(port=self.port, address="tcp://127.0.0.1", mode=self.mode, queue_size=100, block=block,
                        send_timeout=100 if block else None)
        sender.open()
        self._thread = threading.Thread(target=self._run, args=(sender,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> TestCamera:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_script(folder: Path, name: str, body: str) -> str:
    """Write a user script into ``folder`` and return its name (as given to ``function``)."""
    (folder / name).write_text(textwrap.dedent(body))
    return name


def connect(stream: str, mode: int = SUB, queue_size: int = 1000) -> Source:
    return Source(address=stream, mode=mode, receive_timeout=200, queue_size=queue_size).connect()


def receive(source: Source, count: int, timeout: float = 15.0, skip: int = 0) -> list[Message]:
    """``count`` messages after ``skip`` (failing clearly when they do not arrive in time)."""
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(messages) < count + skip:
        if time.monotonic() > deadline:
            raise TimeoutError(f"received {len(messages)} of {count + skip} messages in {timeout} s")
        message = source.receive()
        if message is not None:
            messages.append(message)
    return messages[skip:]


def values(message: Message) -> dict[str, Any]:
    return {name: v.value for name, v in message.data.data.items()}


def pulse_ids(messages: list[Message]) -> list[int]:
    return [m.data.pulse_id for m in messages]


def wait_finished(client: PipelineClient, instance_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """The instance info once its process ended (exit code and last error)."""
    return wait_until(lambda: (lambda i: i if not i["is_running"] and i["exit_code"] is not None else None)(
        client.get_instance_info(instance_id)), timeout, f"instance {instance_id} to end")


__all__ = ["PULL", "PUSH", "SUB", "TestCamera", "connect", "pulse_ids", "receive", "values", "wait_finished",
           "write_script"]
