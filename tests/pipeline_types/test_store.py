"""pipeline_type 'store': the camera image forwarded unchanged to a PUSH stream (the default mode of store
pipelines); get_instance_message refused."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.streams import connect, receive, values
from tests.pipeline_types.helpers import PULL, TestCamera, pulse_ids


def test_store_forwards_camera_frames_to_a_pull_writer(client):
    with TestCamera(rate=100) as camera:
        _, stream = client.create_instance_from_config({"pipeline_type": "store", "input_stream": camera.address,
                                                        "mode": "PUSH"})
        messages = receive(connect(stream, mode=PULL), 10, skip=1)
    pids = pulse_ids(messages)
    assert pids == list(range(pids[0], pids[0] + 10))
    for message in messages:
        out = values(message)
        np.testing.assert_array_equal(out["image"], camera.image)
        assert out["counter"] == message.data.pulse_id and out["width"] == camera.image.shape[1]


def test_store_from_the_simulation_camera(client):
    instance_id, stream = client.create_instance_from_config({"pipeline_type": "store", "camera_name": "simulation",
                                                              "mode": "PUSH"})
    message = receive(connect(stream, mode=PULL), 1)[0]
    out = values(message)
    assert out["image"].shape == (out["height"], out["width"])
    assert "processing_parameters" not in out  # raw camera channels, not processed


def test_get_instance_message_refuses_store_pipelines(client):
    with TestCamera(rate=100) as camera:
        instance_id, _ = client.create_instance_from_config({"pipeline_type": "store",
                                                             "input_stream": camera.address, "mode": "PUSH"})
        with pytest.raises(ValueError, match=r"^Cannot get message from 'store' pipeline type\.$"):
            client.get_instance_message(instance_id)
        assert client.get_instance_info(instance_id)["is_running"]
