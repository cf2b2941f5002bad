"""Sans-I/O pieces: compression worked examples (spec 15), corrupt frames, endpoints, header caching."""

from __future__ import annotations

import numpy as np
import pytest

from cam_server.bsread import PUB, PULL, SUB, Encoder, Source
from cam_server.bsread.compression import (
    CompressionError,
    compress_bitshuffle_lz4,
    compress_lz4,
    decompress_bitshuffle_lz4,
    decompress_lz4,
)
from cam_server.bsread.endpoints import endpoint_port, make_endpoint, socket_mode

pytestmark = pytest.mark.unit

EXAMPLE_D = bytes.fromhex("0000000000000010" "00002000" "00000012" "f00155667880" + "00" * 12)


def test_worked_example_c_short_array_has_no_lz4_block():
    frame = compress_bitshuffle_lz4(np.array([-32768, -1, 0, 1, 32767], np.int16))
    assert frame.hex() == "000000000000000a" "00002000" "0080ffff00000100ff7f"
    assert compress_bitshuffle_lz4(np.array([2.5])).hex() == "0000000000000008" "00002000" "0000000000000440"
    np.testing.assert_array_equal(decompress_bitshuffle_lz4(memoryview(frame), 2).view(np.int16),
                                  [-32768, -1, 0, 1, 32767])


def test_worked_example_d_decodes_and_structure_matches():
    np.testing.assert_array_equal(decompress_bitshuffle_lz4(memoryview(EXAMPLE_D), 2), np.arange(1, 9))
    ours = compress_bitshuffle_lz4(np.arange(1, 11, dtype=np.uint16))
    assert ours[:12].hex() == "0000000000000014" "00002000" and ours[-4:].hex() == "09000a00"
    np.testing.assert_array_equal(decompress_bitshuffle_lz4(memoryview(ours), 2), np.arange(1, 11))


def test_worked_example_e_string_leftovers():
    frame = compress_bitshuffle_lz4(np.frombuffer("compressed string ✓".encode(), np.uint8))
    assert frame[:12].hex() == "0000000000000015" "00002000" and frame[-5:] == "g ✓".encode()


@pytest.mark.parametrize("frame, message", [
    (b"\x00" * 5, "shorter than its 12-byte header"),
    (EXAMPLE_D[:-3], "block structure needs"),
    (EXAMPLE_D[:12] + b"\xff\xff\xff\xff" + EXAMPLE_D[16:], "block structure needs"),
    (EXAMPLE_D[:15], "truncated at byte 12"),
    (bytes.fromhex("0000000000000011" "00002000"), "not a multiple of the element size 2"),
    (bytes.fromhex("0000000000000010" "00000003") + EXAMPLE_D[12:], "block size 3 bytes is invalid"),
    (EXAMPLE_D[:16] + b"\x10" * 18, "corrupt"),
])
def test_corrupt_bitshuffle_frames_raise_clear_errors(frame, message):
    with pytest.raises(CompressionError, match=message):
        decompress_bitshuffle_lz4(memoryview(frame), 2)


def test_lz4_java_format_round_trip_and_errors():
    data = np.arange(300, dtype=">u2").tobytes()
    frame = compress_lz4(data, "big")
    assert frame[:4] == (600).to_bytes(4, "big")
    assert decompress_lz4(memoryview(frame), "big") == data
    with pytest.raises(CompressionError, match="corrupt"):
        decompress_lz4(memoryview(frame[:4] + b"\xff" * 10), "big")


def test_big_array_round_trip_through_many_blocks():
    data = np.random.default_rng(3).integers(0, 4000, size=(1000, 1001), dtype=np.uint16)
    frame = compress_bitshuffle_lz4(data)
    np.testing.assert_array_equal(decompress_bitshuffle_lz4(memoryview(frame), 2).reshape(1000, 1001), data)


@pytest.mark.parametrize("address, port, conn, expected", [
    ("tcp://*", 9999, "bind", "tcp://*:9999"),
    ("tcp://*", 0, "bind", "tcp://*:*"),
    ("tcp://127.0.0.1:0", 5, "bind", "tcp://127.0.0.1:*"),
    ("tcp://host:1234", 9999, "connect", "tcp://host:1234"),
    ("tcp://host", 1234, "connect", "tcp://host:1234"),
    ("ipc:///tmp/x", 1, "bind", "ipc:///tmp/x"),
])
def test_endpoints(address, port, conn, expected):
    assert make_endpoint(address, port, conn) == expected


def test_endpoint_errors_and_modes():
    with pytest.raises(ValueError, match="need a host and a port"):
        make_endpoint("tcp://*", 0, "connect")
    with pytest.raises(ValueError, match="conn_type must be"):
        make_endpoint("tcp://*", 1, "listen")
    assert endpoint_port("tcp://0.0.0.0:41234") == 41234 and endpoint_port("ipc:///x") is None
    assert (socket_mode("SUB"), socket_mode("pull"), socket_mode(PUB)) == (SUB, PULL, PUB)
    with pytest.raises(ValueError, match="unknown socket mode 'DEALER'"):
        socket_mode("DEALER")
    assert Source(host="tcp://example", port=5).endpoint == "tcp://example:5"
    assert Source(host="h", port=7, mode="SUB").mode == SUB


def test_header_rebuilt_after_add_channel_even_with_same_values():
    encoder = Encoder()
    encoder.encode({"a": 1}, timestamp=(0, 0))
    encoder.add_channel("b", metadata={"type": "int8"})
    frames = encoder.encode({"a": 1, "b": 2}, timestamp=(0, 0), check_data=False)
    assert len(frames) == 6
    again = encoder.encode({"a": 1}, timestamp=(0, 0))
    assert len(again) == 4 and b'"name": "b"' not in again[1]


def test_pulse_ids_and_float_timestamps():
    encoder = Encoder(start_pulse_id=7)
    assert b'"pulse_id": 7, "global_timestamp": {"sec": 1700000000, "ns": 250000000}' in \
        encoder.encode({"v": 1}, timestamp=1700000000.25)[0]
    assert b'"pulse_id": 5000' in encoder.encode({"v": 1}, pulse_id=5000, timestamp=(1, 2))[0]
    assert b'"pulse_id": 5001' in encoder.encode({"v": 1}, timestamp=(1, 2))[0]
