"""Helpers for the pipeline-type tests: a bsread test camera with known pulse ids, user scripts, ended instances."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from cam_server.bsread import PUB, PULL, PUSH, SUB, Message
from cam_server.client.pipeline_client import PipelineClient
from tests.helpers.net import free_port
from tests.helpers.procs import wait_until
from tests.helpers.streams import CameraStream

WIDTH, HEIGHT = 32, 24


def known_image(width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A small uint16 image with a known content (value = 10 * row + column)."""
    return (10 * np.arange(height)[:, None] + np.arange(width)[None, :]).astype(np.uint16)


class TestCamera(CameraStream):
    """A bsread stream on a free TCP port with the six camera channels plus ``counter`` (= pulse id) at ``rate`` Hz
    from a thread (``mode`` PUB, or PUSH: blocking, a message nobody takes is sent again with the same pulse id).

    Pulse ids start at ``start_pulse_id`` and increase by one per message, so a receiver can prove that nothing
    was lost or duplicated."""

    __test__ = False  # not a pytest test class

    def __init__(self, rate: float = 100.0, mode: int = PUB, start_pulse_id: int = 1000,
                 image: np.ndarray | None = None) -> None:
        self.port = free_port()
        super().__init__(known_image() if image is None else image, "tcp://127.0.0.1", rate, start_pulse_id, mode,
                         port=self.port)

    def extra_values(self, pulse_id: int) -> dict[str, Any]:
        return {"counter": pulse_id}


def write_script(folder: Path, name: str, body: str) -> str:
    """Write a user script into ``folder`` and return its name (as given to ``function``)."""
    (folder / name).write_text(textwrap.dedent(body))
    return name


def pulse_ids(messages: list[Message]) -> list[int]:
    return [m.data.pulse_id for m in messages]


def wait_finished(client: PipelineClient, instance_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """The instance's last info once its process ended (exit code, last error, statistics): an ended instance has
    no info route any more, the server keeps this record in ``finished_instances``."""
    return wait_until(lambda: client.get_server_info()["finished_instances"].get(instance_id), timeout,
                      f"instance {instance_id} to end")


def assert_ended(client: PipelineClient, instance_id: str, exit_code: int, message: str) -> dict[str, Any]:
    """Wait for the instance to end; check its exit code and that ``message`` is in its last error."""
    info = wait_finished(client, instance_id)
    assert info["exit_code"] == exit_code, info
    assert message in (info["last_error"] or ""), info
    return info


__all__ = ["PULL", "PUSH", "SUB", "TestCamera", "assert_ended", "pulse_ids", "wait_finished", "write_script"]
