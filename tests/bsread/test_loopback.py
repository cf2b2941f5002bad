"""Real sockets on loopback: round trips of every type over PUSH/PULL and PUB/SUB, tcp and ipc."""

from __future__ import annotations

import numpy as np
import pytest
import zmq

from cam_server.bsread import PUB, PULL, PUSH, SUB, Encoder, Sender, Source, source
from tests.bsread.conftest import receive_with_resend
from tests.helpers.net import free_port

pytestmark = pytest.mark.unit

NUMERIC = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]


def _values() -> dict:
    rng = np.random.default_rng(1)
    values: dict = {}
    for t in NUMERIC:
        info = np.iinfo(t) if t[0] in "iu" else np.finfo(t)
        values[f"s_{t}"] = np.dtype(t).type(info.max)
        values[f"a_{t}"] = (rng.random(1001) * 100).astype(t)
    values["image_u16"] = np.arange(480 * 640, dtype=np.uint16).reshape(480, 640)
    values["image_f32"] = rng.random((30, 20)).astype(np.float32)
    values["big_endian"] = np.arange(50, dtype=">i4")
    values["py_int"] = -7
    values["py_float"] = 2.25
    values["text"] = "héllo ✓"
    values["list"] = [1.5, 2.5]
    values["missing"] = None
    return values


def _check_round_trip(got, sent: dict) -> None:
    assert list(got.data.data) == list(sent)
    for name, value in sent.items():
        received = got.data.data[name].value
        if value is None:
            assert received is None
        elif isinstance(value, str):
            assert received == value
        elif isinstance(value, (np.ndarray, list)):
            value = np.asarray(value)
            assert received.dtype == value.dtype and received.shape == value.shape, name
            np.testing.assert_array_equal(received, value)
        else:
            assert received == value and np.asarray(received).dtype == np.asarray(value).dtype, name
    spec = got.data.channel("image_u16")
    assert spec.shape == (640, 480) and spec.type == "uint16"


@pytest.mark.parametrize("compression", [None, "bitshuffle_lz4"])
@pytest.mark.parametrize("transport", ["tcp", "ipc"])
@pytest.mark.parametrize("modes", [(PUSH, PULL), (PUB, SUB)], ids=["push-pull", "pub-sub"])
def test_round_trip_every_type(modes, transport, compression, ipc_address):
    sender_mode, receiver_mode = modes
    address = "tcp://127.0.0.1" if transport == "tcp" else ipc_address
    sender = Sender(port=0, address=address, mode=sender_mode, data_compression=compression,
                    start_pulse_id=100)
    with sender:
        stream = sender.endpoint
        with source(address=stream, mode=receiver_mode, receive_timeout=200) as src:
            src.connect()  # harmless second connect, as in the README
            values = _values()
            first = receive_with_resend(sender, src, values, timestamp=(1700000000, 5))
            _check_round_trip(first, values)
            assert first.data.format_changed
            assert first.data.global_timestamp == 1700000000 and first.data.global_timestamp_offset == 5
            if compression:
                assert first.data.channel("image_u16").compression == "bitshuffle_lz4"
            pulse = first.data.pulse_id
            sender.send(values, timestamp=(1700000001, 0))
            second = src.receive()
            assert second.data.pulse_id == pulse + 1
            assert not second.data.format_changed and second.data.hash == first.data.hash
            _check_round_trip(second, values)


def test_declared_channels_convert_values_and_keep_header(ipc_address):
    with Sender(address=ipc_address) as sender, Source(address=ipc_address, receive_timeout=5000) as src:
        sender.add_channel("flag", metadata={"type": "bool"})
        sender.add_channel("width", metadata={"type": "int64", "compression": None})
        sender.add_channel("image", metadata={"type": "uint16", "shape": [4, 3]})
        sender.add_channel("be", metadata={"type": "float32", "encoding": "big", "shape": [3]})
        header = sender.encoder.data_header
        image = np.arange(12, dtype=np.int32).reshape(3, 4)  # converted to uint16
        for i in range(3):
            assert sender.send({"flag": i % 2 == 0, "width": 4, "image": image, "be": [1, 2, 3]}, check_data=False)
            got = src.receive()
            data = got.data.data
            assert data["flag"].value == (1 if i % 2 == 0 else 0) and data["flag"].value.dtype == np.uint8
            assert data["image"].value.dtype == np.uint16 and data["image"].value.shape == (3, 4)
            np.testing.assert_array_equal(data["image"].value, image)
            assert data["be"].value.dtype == np.dtype(">f4")
            assert got.data.format_changed == (i == 0)
        assert sender.encoder.data_header is header  # fast path: never rebuilt


def test_encoder_caches_header_and_hands_over_arrays_without_copy():
    encoder = Encoder()
    image = np.zeros((100, 200), np.uint16)
    first = encoder.encode({"image": image, "x": 1.0}, timestamp=(1, 0))
    second = encoder.encode({"image": np.ones((100, 200), np.uint16), "x": 2.0}, timestamp=(1, 0))
    assert first[2] is image  # zero copy
    assert first[1] is second[1]  # header bytes reused
    third = encoder.encode({"image": np.ones((10, 20), np.uint16), "x": 2.0}, timestamp=(1, 0))
    assert third[1] != first[1] and b'"shape": [20, 10]' in third[1]
    with pytest.raises(ValueError, match="channel 'bad': bool values cannot be derived"):
        encoder.encode({"bad": True})
    encoder.add_channel("img", metadata={"type": "uint16", "shape": [20, 10]})
    with pytest.raises(ValueError, match="channel 'img': value has 12 elements, declared shape \\[20, 10\\]"):
        encoder.encode({"img": np.zeros((3, 4))}, check_data=False)


def test_non_blocking_send_decides_per_message():
    port = free_port()
    with Sender(port=port, address="tcp://127.0.0.1", block=False, queue_size=1) as sender:
        assert sender.send({"x": 1}) is False  # PUSH without a peer would block: dropped whole
        with Source(host="127.0.0.1", port=port, receive_timeout=5000) as src:
            sent = False
            for _ in range(200):
                if sender.send({"x": 2}):
                    sent = True
                    break
                import time
                time.sleep(0.02)
            assert sent
            got = src.receive()
            assert got.data.data["x"].value == 2 and src.decoder.statistics.messages_received == 1


def test_functions_give_values_when_sending_without_data(ipc_address):
    with Sender(address=ipc_address, start_pulse_id=10) as sender, Source(address=ipc_address,
                                                                        receive_timeout=5000) as src:
        sender.add_channel("pid", function=lambda pulse_id: pulse_id * 2, metadata={"type": "int32"})
        sender.send(check_data=False)
        got = src.receive()
        assert got.data.pulse_id == 10 and got.data.data["pid"].value == 20


def test_receive_timeout_and_reconnect():
    port = free_port()
    with Source(host="127.0.0.1", port=port, receive_timeout=50) as src:
        assert src.receive() is None and src.timed_out
        with Sender(port=port, address="tcp://127.0.0.1") as sender:
            src.reconnect()
            sender.send({"a": 1})
            src.receive_timeout = 5000
            got = None
            for _ in range(100):
                got = src.receive()
                if got is not None:
                    break
            assert got is not None and got.data.data["a"].value == 1 and got.data.format_changed


def test_bad_addresses_are_rejected_clearly():
    with pytest.raises(ValueError, match="give host and port or a stream address"):
        Source()
    with pytest.raises(ValueError, match="sender mode must be PUSH"):
        Sender(mode=zmq.PULL)
    with pytest.raises(ValueError, match="unsupported data_compression 'lz4'"):
        Sender(data_compression="lz4")
