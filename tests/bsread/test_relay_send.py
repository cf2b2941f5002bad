"""Re-sending a received image (the camera relay): the received ZeroMQ frame itself is sent, bytes unchanged."""

import numpy as np
import pytest
import zmq

from cam_server.bsread import PULL, PUSH, Sender, Source
from cam_server.bsread.sender import _received_frame
from tests.helpers.net import free_port

pytestmark = pytest.mark.unit


def test_relayed_image_is_sent_as_the_received_frame():
    upstream, downstream = free_port(), free_port()
    image = (np.arange(480 * 640) % 4093).astype(np.uint16).reshape(480, 640)
    with Sender(port=upstream, mode=PUSH, block=True) as first, \
            Source(host="127.0.0.1", port=upstream, mode=PULL, receive_timeout=5000) as relay_in, \
            Sender(port=downstream, mode=PUSH, block=True) as relay_out, \
            Source(host="127.0.0.1", port=downstream, mode=PULL, receive_timeout=5000) as last:
        first.send(pulse_id=7, data={"image": image, "small": np.arange(3, dtype=np.uint16)})
        received = relay_in.receive().data.data
        relayed = received["image"].value
        assert isinstance(_received_frame(relayed), zmq.Frame)  # shared, not wrapped again
        assert _received_frame(received["small"].value) is received["small"].value  # small: copied anyway
        assert not isinstance(_received_frame(relayed[1:]), zmq.Frame)  # part of a frame: sent as the view
        relay_out.send(pulse_id=7, data={"image": relayed})
        out = last.receive().data
        assert out.pulse_id == 7
        assert np.array_equal(out.data["image"].value, image)
