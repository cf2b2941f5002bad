"""Raw pyzmq sends malformed messages: our Source drops them with a logged reason and keeps working."""

from __future__ import annotations

import json
import logging
import struct

import pytest
import zmq

from cam_server.bsread import Source, encode_message

pytestmark = pytest.mark.unit

GOOD_TS = struct.pack("<qq", 1700000000, 0)


def _main(hash_: str = "h1", pulse_id: int = 1) -> bytes:
    return json.dumps({"htype": "bsr_m-1.1", "hash": hash_, "pulse_id": pulse_id,
                       "global_timestamp": {"sec": 1700000000, "ns": 0}}).encode()


def _header(*channels: dict) -> bytes:
    return json.dumps({"htype": "bsr_d-1.1", "channels": list(channels)}).encode()


INT32 = {"name": "v", "type": "int32", "shape": [1], "encoding": "little"}
BAD_MESSAGES = {
    "garbage main header": ([b"{not json", _header(INT32), b"\x01\x00\x00\x00", GOOD_TS],
                            "main header is not valid JSON"),
    "garbage data header": ([_main("g1"), b"][", b"\x01\x00\x00\x00", GOOD_TS], "data header is not valid JSON"),
    "extra frame pair": ([_main("x1"), _header(INT32), b"\x01\x00\x00\x00", GOOD_TS, b"\x02\x00\x00\x00", GOOD_TS],
                         "2 value/timestamp frame pairs but the data header has 1 channels"),
    "short timestamp": ([_main("t1"), _header(INT32), b"\x01\x00\x00\x00", b"\x00" * 8],
                        "channel 'v': timestamp frame of 8 bytes (need 16)"),
    "no pulse_id": ([json.dumps({"hash": "p1"}).encode(), _header(INT32), b"\x01\x00\x00\x00", GOOD_TS],
                    "main header has no pulse_id"),
    # consumers do int(sec) / sec + ns * 1e-9: such a message must not reach them
    "text timestamp": ([json.dumps({"hash": "s1", "pulse_id": 1, "global_timestamp": {"sec": "x", "ns": 0}}).encode(),
                        _header(INT32), b"\x01\x00\x00\x00", GOOD_TS],
                       "main header global_timestamp sec is not a number: 'x'"),
    "null ns": ([json.dumps({"hash": "n1", "pulse_id": 1, "global_timestamp": {"epoch": 5, "ns": None}}).encode(),
                 _header(INT32), b"\x01\x00\x00\x00", GOOD_TS],
                "main header global_timestamp ns is not a number: None"),
}


def test_float_global_timestamp_is_accepted():
    from cam_server.bsread.codec import Decoder

    main = json.dumps({"hash": "f1", "pulse_id": 3, "global_timestamp": {"sec": 1700000000.0, "ns": 5}}).encode()
    message = Decoder().decode([main, _header(INT32), b"\x07\x00\x00\x00", GOOD_TS])
    assert message is not None
    assert message.data.global_timestamp == 1700000000.0 and message.data.global_timestamp_offset == 5
    assert message.data.data["v"].value == 7


@pytest.fixture
def push_and_source():
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    port = push.bind_to_random_port("tcp://127.0.0.1")
    src = Source(host="127.0.0.1", port=port, receive_timeout=5000).connect()
    yield push, src
    src.disconnect()
    push.close(linger=0)


@pytest.mark.parametrize("case", list(BAD_MESSAGES))
def test_bad_message_is_dropped_and_next_good_one_received(push_and_source, caplog, case):
    push, src = push_and_source
    frames, reason = BAD_MESSAGES[case]
    push.send_multipart(frames)
    with caplog.at_level(logging.WARNING, logger="cam_server.bsread"):
        assert src.receive() is None
    assert not src.timed_out
    assert reason in src.decoder.last_drop_reason
    assert any(reason in r.getMessage() for r in caplog.records)
    push.send_multipart([bytes(memoryview(f)) for f in encode_message({"ok": 5}, pulse_id=9, timestamp=(1, 2))])
    good = src.receive()
    assert good.data.pulse_id == 9 and good.data.data["ok"].value == 5


@pytest.mark.parametrize("channel, value, reason", [
    ({"name": "f16", "type": "float16", "shape": [1]}, b"\x00\x3c", "unknown type 'float16'"),
    ({"name": "arr", "type": "int32", "shape": [10]}, b"\x00" * 36, "9 elements do not fit shape [10]"),
    ({"name": "odd", "type": "int32", "shape": [1]}, b"\x00" * 5, "5 bytes is not a multiple of int32 size 4"),
    ({"name": "bs", "type": "int32", "shape": [16], "compression": "bitshuffle_lz4"}, b"\x00" * 20,
     "bitshuffle_lz4"),
])
def test_bad_channel_gives_none_for_that_channel_only(push_and_source, caplog, channel, value, reason):
    push, src = push_and_source
    good = {"name": "good", "type": "int16", "shape": [1]}
    push.send_multipart([_main(channel["name"]), _header(channel, good), value, GOOD_TS, b"\x07\x00", GOOD_TS])
    with caplog.at_level(logging.WARNING, logger="cam_server.bsread"):
        message = src.receive()
    assert message.data.data[channel["name"]].value is None
    assert message.data.data["good"].value == 7
    assert any(reason in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
