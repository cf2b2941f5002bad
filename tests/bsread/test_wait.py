"""next_message: the first accepted message, None on timeout or once the sender is gone."""

from __future__ import annotations

import pytest
import zmq

from cam_server.bsread import Source, encode_message
from cam_server.bsread.wait import next_message

pytestmark = pytest.mark.unit


def _push_and_source():
    push = zmq.Context.instance().socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    return push, Source(host="127.0.0.1", port=port, receive_timeout=50).connect()


def _send(push, pulse_id: int, **values) -> None:
    push.send_multipart([bytes(memoryview(f)) for f in encode_message(values, pulse_id=pulse_id, timestamp=(1, 2))])


def test_skips_messages_it_does_not_accept_and_returns_the_first_it_does():
    push, src = _push_and_source()
    try:
        _send(push, 1, width=3)
        _send(push, 2, width=4, image=7)
        message = next_message(src, 10, accept=lambda m: "image" in m.data.data)
        assert message is not None and message.data.pulse_id == 2 and message.data.data["image"].value == 7
    finally:
        src.disconnect()
        push.close(linger=0)


def test_none_on_timeout_and_at_once_when_the_sender_is_gone():
    push, src = _push_and_source()
    calls = []
    try:
        assert next_message(src, 0.2) is None
        assert next_message(src, 3600, alive=lambda: calls.append(1) and False) is None  # returns after 1 check
        assert calls == [1]
        _send(push, 3, width=5)
        _send(push, 4, width=6)  # rejected until the deadline: no endless wait on unsuitable messages
        assert next_message(src, 0.3, accept=lambda m: False) is None
    finally:
        src.disconnect()
        push.close(linger=0)
