"""Shared helpers for the bsread socket tests."""

from __future__ import annotations

import time

import pytest

from cam_server.bsread import Message, Sender, Source


def receive_with_resend(sender: Sender, src: Source, data: dict, timeout: float = 10.0, **send_kwargs
                        ) -> Message:
    """Send ``data`` until ``src`` receives a message (PUB/SUB slow joiner: early messages are lost)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sender.send(data=data, **send_kwargs)
        message = src.receive()
        if message is not None:
            return message
    raise TimeoutError("no message received")


@pytest.fixture
def ipc_address(tmp_path):
    return f"ipc://{tmp_path}/bsread.ipc"
