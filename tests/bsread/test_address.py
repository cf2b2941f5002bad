"""The one stream-address parser every layer uses (config validation, clients, the camera's bsread source)."""

from __future__ import annotations

import pytest

from cam_server.bsread.address import StreamAddress, host_and_port, is_stream_address, parse_stream_address
from cam_server.bsread.endpoints import PULL, SUB, mode_name, reader_mode, receive_mode
from cam_server.utils import get_host_port_from_stream_address

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "parsed"), [
    ("tcp://localhost:9000", StreamAddress("tcp", host="localhost", port=9000)),
    ("tcp://*:1", StreamAddress("tcp", host="*", port=1)),
    ("tcp://[::1]:65535", StreamAddress("tcp", host="::1", port=65535)),
    ("ipc:///tmp/cam.sock", StreamAddress("ipc", path="/tmp/cam.sock")),
])
def test_valid_addresses(text, parsed):
    assert parse_stream_address(text) == parsed and is_stream_address(text)


@pytest.mark.parametrize(("text", "reason"), [
    ("localhost:9000", "must start with tcp:// or ipc://"),
    ("tcp://host", "must be tcp://host:port"),
    ("tcp://:9000", "must be tcp://host:port"),
    ("tcp://host:99999", "invalid port '99999'"),
    ("tcp://host:0", "invalid port '0'"),
    ("tcp://host:x", "invalid port 'x'"),
    ("tcp://ho st:9000", "white space"),
    ("ipc://", "has no path"),
    ("http://host:80", "must start with tcp:// or ipc://"),
    (9000, "must be a string"),
])
def test_invalid_addresses_say_why(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_stream_address(text)
    assert not is_stream_address(text)


def test_host_and_port_is_what_users_import():
    assert host_and_port("tcp://cam-host:8889") == ("cam-host", 8889)
    assert get_host_port_from_stream_address("tcp://cam-host:8889") == ("cam-host", 8889)
    with pytest.raises(ValueError, match="expected tcp://host:port"):
        host_and_port("ipc:///tmp/x")


def test_socket_mode_helpers():
    assert receive_mode("sub") == SUB and receive_mode("PULL") == PULL and receive_mode(PULL) == PULL
    with pytest.raises(ValueError, match="bsread_mode must be 'PULL' or 'SUB', got 'PUB'"):
        receive_mode("PUB", "bsread_mode")
    assert reader_mode("PUSH") == PULL and reader_mode("PUB") == SUB and reader_mode(None) == SUB
    assert mode_name(SUB) == "SUB" and mode_name(PULL) == "PULL"
