"""No-client monitor (spec 13): the action repeats while nobody is connected and stops while a client is."""

from __future__ import annotations

import threading
import time

import pytest

from cam_server.bsread import PUB, SUB, Sender, Source
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.unit


def test_no_client_action_and_client_count():
    calls: list[float] = []
    lock = threading.Lock()

    def action() -> None:
        with lock:
            calls.append(time.monotonic())

    sender = Sender(port=0, address="tcp://127.0.0.1", mode=PUB)
    with sender.open(no_client_action=action, no_client_timeout=0.3):
        wait_until(lambda: len(calls) >= 2, 10, "the action to fire twice without clients")
        assert sender.client_count == 0
        src = Source(host="127.0.0.1", port=sender.bound_port, mode=SUB).connect()
        wait_until(lambda: sender.client_count == 1, 10, "the client to be counted")
        time.sleep(0.1)
        with lock:
            before = len(calls)
        time.sleep(1.0)  # three timeouts with a client connected: no call
        with lock:
            assert len(calls) == before
        src2 = Source(host="127.0.0.1", port=sender.bound_port, mode=SUB).connect()
        wait_until(lambda: sender.client_count == 2, 10, "the second client to be counted")
        src.disconnect()
        src2.disconnect()
        wait_until(lambda: sender.client_count == 0, 10, "the clients to be gone")
        wait_until(lambda: len(calls) > before, 10, "the action to fire again")


def test_monitor_counts_without_action():
    with Sender(port=0, address="tcp://127.0.0.1") as sender:
        assert sender.client_count == 0
        with Source(host="127.0.0.1", port=sender.bound_port):
            wait_until(lambda: sender.client_count == 1, 10, "the client to be counted")
        wait_until(lambda: sender.client_count == 0, 10, "the client to be gone")
