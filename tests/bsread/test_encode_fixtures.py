"""Encode the inputs of every bsread_sender fixture and compare the frames with the real sender's (spec 14)."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest

from cam_server.bsread import Decoder, Encoder
from cam_server.bsread.compression import BSLZ4_HEADER, decompress_bitshuffle_lz4
from tests.bsread.fixture_data import (
    assert_same_value,
    expected_value,
    message_frames,
    sender_input,
    streams,
)

pytestmark = pytest.mark.unit

SENDER_STREAMS = streams("bsread_sender")
DECLARED = {"s02_scalars_declared", "s05_camera_like", "s12_big_endian_mixed"}
# Reference quirks we deliberately do not copy (docs/bsread.md): the declared type/byte order wins.
BETTER = {
    ("s02_scalars_declared", "untyped_int"): lambda v: np.float64(v),       # undeclared type = float64
    ("s02_scalars_declared", "np_i64_on_i16"): lambda v: np.int16(v),      # numpy value converted
    ("s12_big_endian_mixed", "be_scalar_i16"): lambda v: np.int16(v),      # big-endian bytes
}


def _declare(encoder: Encoder, data_header: dict) -> None:
    """Declare channels with the metadata the fixture sender got: the keys before 'name' (later keys were
    added by the sender itself)."""
    for entry in data_header["channels"]:
        keys = list(entry)
        metadata = {k: entry[k] for k in keys[:keys.index("name")]}
        encoder.add_channel(entry["name"], metadata=metadata)


def _block_structure(frame: bytes, elem_size: int) -> tuple:
    n_bytes, block_bytes = BSLZ4_HEADER.unpack_from(frame, 0)
    n, block = n_bytes // elem_size, block_bytes // elem_size
    n_blocks = n // block + (1 if (n % block) - (n % block) % 8 > 0 else 0) if n else 0
    pos = 12
    for _ in range(n_blocks):
        pos += 4 + struct.unpack_from(">I", frame, pos)[0]
    leftover = frame[pos:]
    return frame[:12], n_blocks, leftover


def _elem_size(entry: dict) -> int:
    return 1 if entry.get("type") in ("string", "bool") else np.dtype(entry.get("type", "float64")).itemsize


def _encode_stream(stream: dict) -> list[list[bytes]]:
    config = stream["sender_config"]
    encoder = Encoder(data_compression=config.get("data_compression"),
                      data_header_compression=config.get("data_header_compression"),
                      start_pulse_id=config.get("start_pulse_id", 0))
    if stream["id"] in DECLARED:
        _declare(encoder, stream["messages"][0]["data_header"])
    out = []
    for message in stream["messages"]:
        call = dict(message["send_call"])
        ts = call.pop("timestamp")
        values = {name: sender_input(message, desc) for name, desc in message["sender_input"].items()}
        frames = encoder.encode(values, timestamp=tuple(ts) if isinstance(ts, list) else ts, **call)
        out.append([bytes(memoryview(f)) for f in frames])
    return out


@pytest.mark.parametrize("stream", SENDER_STREAMS, ids=[s["id"] for s in SENDER_STREAMS])
def test_frames_match_reference_sender(stream):
    encoded = _encode_stream(stream)
    dh_compressed = stream["sender_config"].get("data_header_compression") == "bitshuffle_lz4"
    for i, (message, ours) in enumerate(zip(stream["messages"], encoded, strict=True)):
        where = f"{stream['id']}/m{i}"
        ref = message_frames(message)
        assert len(ours) == len(ref) == message["n_parts"], where
        main = json.loads(ours[0])
        assert main["htype"] == "bsr_m-1.1"
        assert main["hash"] == hashlib.md5(ours[1]).hexdigest()
        assert {k: v for k, v in main.items() if k != "hash"} == \
            {k: v for k, v in message["main_header"].items() if k != "hash"}, where
        if dh_compressed:
            assert ours[1][:12] == ref[1][:12]
            header = json.loads(decompress_bitshuffle_lz4(memoryview(ours[1]), 1).tobytes())
            assert header == message["data_header"], where
            assert (ours[0] == ref[0]) == (ours[1] == ref[1])  # same hash iff same bytes
        else:
            assert ours[1] == ref[1], f"{where}: data header bytes"
            assert ours[0] == ref[0], f"{where}: main header bytes"
        for c, entry in enumerate(message["data_header"]["channels"]):
            name = entry["name"]
            value_ours, value_ref, ts_ours, ts_ref = ours[2 + 2 * c], ref[2 + 2 * c], ours[3 + 2 * c], ref[3 + 2 * c]
            assert ts_ours == ts_ref, f"{where}/{name}: timestamp frame"
            if (stream["id"], name) in BETTER:
                continue
            if entry.get("compression") == "bitshuffle_lz4":
                size = _elem_size(entry)
                assert _block_structure(value_ours, size) == _block_structure(value_ref, size), f"{where}/{name}"
                assert decompress_bitshuffle_lz4(memoryview(value_ours), size).tobytes() == \
                    decompress_bitshuffle_lz4(memoryview(value_ref), size).tobytes(), f"{where}/{name}"
            else:
                assert value_ours == value_ref, f"{where}/{name}: value frame"


@pytest.mark.parametrize("stream", SENDER_STREAMS, ids=[s["id"] for s in SENDER_STREAMS])
def test_our_frames_decode_like_the_reference(stream):
    """Layer 2 of spec 14: decode our frames, compare with what the real receiver made of the real frames."""
    decoder = Decoder()
    for i, (message, ours) in enumerate(zip(stream["messages"], _encode_stream(stream), strict=True)):
        got = decoder.decode(ours)
        expected = message["python_receiver"]
        assert got.data.pulse_id == expected["pulse_id"]
        assert got.data.format_changed == expected["format_changed"]
        assert list(got.data.data) == expected["channel_order"]
        for name, channel in expected["channels"].items():
            where = f"{stream['id']}/m{i}/{name}"
            better = BETTER.get((stream["id"], name))
            if better is not None:
                intended = better(sender_input(message, message["sender_input"][name]))
                assert_same_value(got.data.data[name].value, intended, where)
                continue
            assert_same_value(got.data.data[name].value, expected_value(message, channel["value"]), where)


def test_big_endian_python_int_is_sent_big_endian():
    encoder = Encoder()
    encoder.add_channel("be", metadata={"type": "int16", "encoding": "big"})
    frames = encoder.encode({"be": -2}, timestamp=(1, 2), check_data=False)
    assert bytes(frames[2]) == b"\xff\xfe"
    assert bytes(frames[3]) == struct.pack(">qq", 1, 2)
