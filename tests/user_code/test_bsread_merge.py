"""Merging bsread data with camera frames by pulse id (bsread_address, bsread_channels, bsread_mode, buffers).

The upstream (conftest) sends a camera frame for every pulse id and bsread data (energy, charge, ignored) only for
every third pulse id, on a PUSH stream the pipeline PULLs from.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cam_server.client.pipeline_client import PipelineClient
from tests.helpers.net import free_port
from tests.helpers.procs import wait_until
from tests.helpers.streams import receive, values
from tests.user_code.helpers import Upstream

BSDATA_SCRIPT = """
def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata):
    return {"bsdata_keys": ",".join(sorted(bsdata)), "energy_seen": bsdata.get("energy"), "width": image.shape[1]}
"""


def _merge_pipeline(pipelines: PipelineClient, upstream: Upstream, **config) -> tuple[str, str]:
    return pipelines.create_instance_from_config({"camera_name": "uc_relay", "bsread_address": upstream.data_address,
                                                  **config})


def test_frames_are_merged_with_data_of_the_same_pulse_id(pipelines: PipelineClient, upstream: Upstream) -> None:
    pipelines.set_user_script("bsdata_probe", BSDATA_SCRIPT)
    instance_id, stream = _merge_pipeline(pipelines, upstream, function="bsdata_probe",
                                          bsread_channels=["energy", "charge"])
    messages = receive(stream, 12)
    pulse_ids = [m.data.pulse_id for m in messages]
    assert pulse_ids == sorted(pulse_ids)
    for message in messages:
        pid, out = message.data.pulse_id, values(message)
        assert pid % 3 == 0  # only frames that had data
        assert pid in upstream.data_sent
        # the function got the selected channels as bsdata ...
        assert out["bsdata_keys"] == "charge,energy" and out["energy_seen"] == pid / 10
        # ... and they are in the output under their own names (not the unselected one)
        assert out["energy"] == pid / 10
        np.testing.assert_array_equal(out["charge"], [pid, 2 * pid])
        assert "ignored" not in out
    wait_until(lambda: pipelines.get_instance_info(instance_id)["statistics"]["dropped"] >= 10, 10,
               "unmatched frames counted as dropped")
    stats = pipelines.get_instance_info(instance_id)["statistics"]
    assert stats["dropped"] >= stats["frames_out"]  # two of every three frames have no data
    assert stats["errors"] == 0


def test_all_channels_with_the_default_function(pipelines: PipelineClient, upstream: Upstream) -> None:
    _, stream = _merge_pipeline(pipelines, upstream, bsread_mode="PULL", bsread_image_buf=50, bsread_data_buf=50)
    message = receive(stream, 1)[0]
    out = values(message)
    pid = message.data.pulse_id
    assert pid % 3 == 0
    assert out["energy"] == pid / 10 and out["ignored"] == 1.5  # bsread_channels None: every channel
    assert "x_center_of_mass" in out  # the default processing ran as usual
    parameters = json.loads(out["processing_parameters"])
    assert parameters["bsread_address"] == upstream.data_address and parameters["bsread_image_buf"] == 50


def test_function_output_wins_over_a_merged_channel_of_the_same_name(pipelines: PipelineClient,
                                                                     upstream: Upstream) -> None:
    pipelines.set_user_script("energy_owner", "def process_image(image, pulse_id, timestamp, x_axis, y_axis, "
                                              "parameters, bsdata):\n    return {'energy': -1.0}\n")
    _, stream = _merge_pipeline(pipelines, upstream, function="energy_owner", bsread_channels=["energy", "charge"])
    out = values(receive(stream, 1)[0])
    assert out["energy"] == -1.0 and list(out["charge"]) != []


def test_dispatcher_is_not_supported(pipelines: PipelineClient) -> None:
    message = "bsread_channels without bsread_address would read from the dispatcher, which is not supported"
    with pytest.raises(ValueError, match=message):
        pipelines.create_instance_from_config({"camera_name": "uc_relay", "bsread_channels": ["SARFE10:ENERGY"]})
    instance_id, _ = pipelines.create_instance_from_config({"camera_name": "uc_relay"})
    with pytest.raises(ValueError, match=message):
        pipelines.set_instance_config(instance_id, {"bsread_channels": ["SARFE10:ENERGY"]})


def test_merging_switched_on_and_off_live(pipelines: PipelineClient, upstream: Upstream) -> None:
    instance_id, stream = pipelines.create_instance_from_config({"camera_name": "uc_relay", "function": "transparent"})
    assert any(m.data.pulse_id % 3 for m in receive(stream, 3))  # every frame
    pipelines.set_instance_config(instance_id, {"bsread_address": upstream.data_address, "bsread_channels": ["energy"]})
    messages = receive(stream, 4, lambda m: "energy" in values(m))
    assert all(m.data.pulse_id % 3 == 0 and values(m)["energy"] == m.data.pulse_id / 10 for m in messages)
    pipelines.set_instance_config(instance_id, {"bsread_address": None, "bsread_channels": None})
    later = receive(stream, 1, lambda m: m.data.pulse_id % 3 != 0)[0]
    assert "energy" not in values(later)


def test_frames_without_data_wait_in_the_image_buffer_then_are_dropped(pipelines: PipelineClient) -> None:
    """A silent data stream: frames wait in bsread_image_buf (5) and the oldest is dropped (counted) when it is full;
    nothing is sent, the instance keeps running."""
    silent = f"tcp://127.0.0.1:{free_port()}"
    instance_id, stream = pipelines.create_instance_from_config({"camera_name": "uc_relay", "bsread_address": silent,
                                                                 "bsread_mode": "SUB", "bsread_image_buf": 5})
    with pytest.raises(TimeoutError):
        receive(stream, 1, timeout=1.0)
    wait_until(lambda: pipelines.get_instance_info(instance_id)["statistics"]["dropped"] >= 20, 10, "drops counted")
    info = pipelines.get_instance_info(instance_id)
    assert info["is_running"] and info["statistics"]["frames_out"] == 0 and info["last_error"] is None
