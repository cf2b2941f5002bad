"""A bsread-source camera relaying a stream sent by the bsread Sender in this test."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from cam_server.bsread import PUSH, Sender
from cam_server.client.cam_client import CamClient
from tests.helpers.net import free_port
from tests.helpers.streams import receive, values

WIDTH, HEIGHT = 40, 30


def frame_for(pulse_id: int) -> np.ndarray:
    image = np.arange(WIDTH * HEIGHT, dtype=np.uint16).reshape(HEIGHT, WIDTH)
    image += np.uint16(pulse_id % 1000)
    return image


class UpstreamCamera:
    """Sends frames with pulse ids counting from 1000 at ~100 Hz until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        sender = Sender(port=self.port, address="tcp://127.0.0.1", mode=PUSH, block=True, send_timeout=100,
                        queue_size=5)
        sender.open()
        try:
            pulse_id = 1000
            while not self._stop.wait(0.01):
                data = {"energy": float(pulse_id) / 10, "SCAM:FPICTURE": frame_for(pulse_id),
                        "counter": np.array([pulse_id, 2 * pulse_id], dtype=np.int32)}
                if sender.send(data, pulse_id=pulse_id, timestamp=(1_700_000_000 + pulse_id, 500)):
                    self.sent += 1
                    pulse_id += 1
        finally:
            sender.close()

    def __enter__(self) -> UpstreamCamera:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture()
def upstream() -> Iterator[UpstreamCamera]:
    with UpstreamCamera(free_port()) as camera:
        yield camera


@pytest.mark.parametrize("connections", [1, 3])
def test_relays_image_extra_channels_pulse_id_and_timestamp(client: CamClient, upstream: UpstreamCamera,
                                                            connections: int) -> None:
    name = f"relay_{connections}"
    client.set_camera_config(name, {"source": f"tcp://127.0.0.1:{upstream.port}", "source_type": "bsread",
                                    "connections": connections, "mirror_y": True})
    messages = receive(client.get_instance_stream(name), count=20, timeout=20)
    pulse_ids = [m.data.pulse_id for m in messages]
    assert pulse_ids == sorted(pulse_ids) and len(set(pulse_ids)) == len(pulse_ids)
    assert pulse_ids[-1] - pulse_ids[0] < 40  # merged back in order, nearly without gaps
    for message in messages:
        data = values(message)
        pulse_id = message.data.pulse_id
        assert pulse_id >= 1000
        np.testing.assert_array_equal(data["image"], frame_for(pulse_id)[::-1])
        assert (data["width"], data["height"]) == (WIDTH, HEIGHT)
        assert data["energy"] == pulse_id / 10
        np.testing.assert_array_equal(data["counter"], [pulse_id, 2 * pulse_id])
        assert message.data.global_timestamp == 1_700_000_000 + pulse_id
        assert message.data.global_timestamp_offset == 500
        assert data["timestamp"] == pytest.approx(1_700_000_000 + pulse_id + 500e-9)
    names = [c.name for c in messages[0].data.channels]
    assert names[:6] == ["width", "height", "timestamp", "image", "x_axis", "y_axis"]
    assert set(names[6:]) == {"energy", "counter"}
    client.delete_camera_config(name)


def test_geometry_of_bsread_camera_comes_from_the_stream(client: CamClient, upstream: UpstreamCamera) -> None:
    client.set_camera_config("relay_geometry", {"source": f"tcp://127.0.0.1:{upstream.port}",
                                                "source_type": "bsread", "rotate": 1})
    assert client.get_camera_geometry("relay_geometry") == [HEIGHT, WIDTH]
    client.delete_camera_config("relay_geometry")


def test_no_stream_gives_clear_error(client: CamClient) -> None:
    client.set_camera_config("silent", {"source": f"tcp://127.0.0.1:{free_port()}", "source_type": "bsread"})
    with pytest.raises(ValueError, match="No image from camera 'silent' within 0.5 s"):
        client.get_camera_image_bytes("silent", timeout=0.5)
    client.delete_camera_config("silent")
