"""Decode every golden fixture message with our Decoder and compare with the real Python receiver."""

from __future__ import annotations

import json

import pytest

from cam_server.bsread import Decoder
from tests.bsread.fixture_data import assert_same_value, expected_value, message_frames, streams

pytestmark = pytest.mark.unit

ALL_STREAMS = streams()


def _check(stream_id: str, index: int, message: dict, got, use_spec_expected: bool) -> None:
    where = f"{stream_id}/m{index}"
    expected = message["python_receiver"]
    spec_expected = message.get("spec_expected", {}) if use_spec_expected else {}
    if "__data_header__" in spec_expected:  # r02: a capable decoder accepts the lz4 data header
        assert got is not None, f"{where}: dropped"
        assert got.data.data_header == spec_expected["__data_header__"]["value"]
        for name, desc in spec_expected.items():
            if name != "__data_header__":
                assert_same_value(got.data.data[name].value, expected_value(message, desc), f"{where}/{name}")
        return
    if not expected["accepted"]:
        assert got is None, f"{where}: expected the message to be dropped"
        return
    assert got is not None, f"{where}: dropped"
    data = got.data
    assert data.pulse_id == expected["pulse_id"]
    assert data.hash == expected["hash"]
    assert data.format_changed == expected["format_changed"], where
    gt = expected["global_timestamp"]
    assert (data.global_timestamp, data.global_timestamp_offset) == ((gt["sec"], gt["ns"]) if gt else (None, None))
    assert list(data.data) == expected["channel_order"], where
    for name, channel in expected["channels"].items():
        value = data.data[name]
        desc = spec_expected.get(name, channel["value"])
        assert_same_value(value.value, expected_value(message, desc), f"{where}/{name}")
        ts = channel["timestamp"]
        assert (value.timestamp, value.timestamp_offset) == ((ts["sec"], ts["ns"]) if ts else (None, None)), \
            f"{where}/{name} timestamp"


@pytest.mark.parametrize("stream", ALL_STREAMS, ids=[s["id"] for s in ALL_STREAMS])
def test_decoder_matches_python_receiver_with_lz4_extension(stream):
    """Default decoder: Python receiver behaviour, plus Java/Rust lz4 decoded as spec_expected says."""
    decoder = Decoder()
    for i, message in enumerate(stream["messages"]):
        _check(stream["id"], i, message, decoder.decode(message_frames(message)), use_spec_expected=True)


@pytest.mark.parametrize("stream", ALL_STREAMS, ids=[s["id"] for s in ALL_STREAMS])
def test_decoder_without_lz4_is_exactly_the_python_receiver(stream):
    decoder = Decoder(allow_lz4=False)
    for i, message in enumerate(stream["messages"]):
        _check(stream["id"], i, message, decoder.decode(message_frames(message)), use_spec_expected=False)


def test_decoded_arrays_are_views_over_the_frames():
    stream = next(s for s in ALL_STREAMS if s["id"] == "s05_camera_like")
    message = stream["messages"][0]
    frames = message_frames(message)
    got = Decoder().decode(frames)
    image = got.data.data["image"].value
    assert image.shape == (48, 64)
    assert not image.flags.owndata and not image.flags.writeable
    assert image.base is not None
    spec = got.data.channel("image")
    assert (spec.type, spec.shape, spec.numpy_shape) == ("uint16", (64, 48), (48, 64))
    assert json.loads(frames[1])["channels"][3] == dict(spec.header)


def test_drop_reasons_are_recorded():
    decoder = Decoder(allow_lz4=False)
    r02 = next(s for s in ALL_STREAMS if s["id"] == "r02_dh_lz4")["messages"][0]
    assert decoder.decode(message_frames(r02)) is None
    assert "unsupported dh_compression 'lz4'" in decoder.last_drop_reason
    r08 = next(s for s in ALL_STREAMS if s["id"] == "r08_timestamp_parts")["messages"]
    assert decoder.decode(message_frames(r08[0])) is not None
    assert decoder.decode(message_frames(r08[1])) is None
    assert decoder.last_drop_reason == "channel 'v': timestamp frame of 8 bytes (need 16)"
