"""Behaviours PSI's clients and scripts rely on (psi-interface.md section 3), against real camera + pipeline
servers: get_instance_message as a bsread message, saved configs read back expanded, incremental updates inside
dict-valued parameters, downsampling one of N, store pipelines for PULL writers with ``<camera>:FPICTURE``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from cam_server.bsread import Message
from cam_server.client.pipeline_client import PipelineClient
from cam_server.pipeline.config import FIELDS, expand_config, update_config
from tests.helpers.procs import wait_until
from tests.helpers.servers import ServerPair
from tests.helpers.streams import connect, receive, values
from tests.pipeline_types.helpers import PULL, SUB, TestCamera, pulse_ids

API = "/api/v1/pipeline"


def call(servers: ServerPair, method: str, path: str, **kwargs) -> tuple[int, dict]:
    response = requests.request(method, f"{servers.url}{API}{path}", timeout=30, **kwargs)
    return response.status_code, response.json()


def channel(message: Message, name: str):
    return message.data.data[name].value


# --- 1. get_instance_message returns a bsread message -----------------------------------------------------------

SINGLE_MESSAGE = '''
from cam_server import PipelineClient

# Instantiate the pipeline client.
pipeline_client = PipelineClient()

# Name of the camera we want to get a message from.
camera_name = "simulation"
# Screen panel defines the instance name as: [CAMERA_NAME]_sp1
instance_name = camera_name + "_sp1"

# Get the data.
data = pipeline_client.get_instance_message(instance_name)
'''


def test_readme_single_message_from_screen_panel_instance(servers, client):
    client.create_instance_from_config({"camera_name": "simulation"}, instance_id="simulation_sp1")
    code = SINGLE_MESSAGE.replace("PipelineClient()", f"PipelineClient({servers.url!r})")
    namespace: dict = {}
    exec(compile(code, "<README single_message_screen_panel>", "exec"), namespace)  # noqa: S102 - fixed text
    data = namespace["data"]
    assert isinstance(data, Message)
    assert (data.data.data["width"].value, data.data.data["height"].value) == (1280, 960)
    assert data.data.data["image"].value.shape == (960, 1280)
    assert 600 < data.data.data["x_center_of_mass"].value < 680
    assert isinstance(data.data.pulse_id, int) and data.data.pulse_id > 0
    assert json.loads(data.data.data["processing_parameters"].value)["camera_name"] == "simulation"


def test_message_of_a_known_image_and_pulse_ids(client):
    with TestCamera(rate=50, start_pulse_id=5000) as camera:
        instance_id, _ = client.create_instance_from_config({"input_stream": camera.address,
                                                             "function": "transparent"})
        first = client.get_instance_message(instance_id)
        second = client.get_instance_message(instance_id)
    np.testing.assert_array_equal(channel(first, "image"), camera.image)
    assert channel(first, "width") == camera.image.shape[1]
    assert 5000 <= first.data.pulse_id < second.data.pulse_id  # a fresh message each call, from the stream


def test_message_of_a_push_instance_is_pulled(client):
    instance_id, _ = client.create_instance_from_config({"camera_name": "simulation", "mode": "PUSH"})
    message = client.get_instance_message(instance_id)
    assert channel(message, "width") == 1280 and channel(message, "intensity") > 0


@pytest.mark.parametrize("pipeline_type", ["store", "stream"])
def test_message_refused_for_other_pipeline_types(client, pipeline_type):
    instance_id, _ = client.create_instance_from_config({"camera_name": "simulation",
                                                         "pipeline_type": pipeline_type})
    with pytest.raises(ValueError) as error:
        client.get_instance_message(instance_id)
    assert str(error.value) == f"Cannot get message from '{pipeline_type}' pipeline type."
    assert client.get_instance_info(instance_id)["is_running"]


def test_message_of_a_file_instance_is_refused(client, tmp_path):
    instance_id, _ = client.create_instance_from_config({"camera_name": "simulation", "mode": "FILE",
                                                         "file": f"{tmp_path.name}/out.h5"})  # in --file_folder
    with pytest.raises(ValueError, match=rf"Instance '{instance_id}' writes to a file \(mode FILE\) and has no "
                                         "stream to read"):
        client.get_instance_message(instance_id)


def test_message_timeout_is_a_clear_error(client):
    instance_id, stream = client.create_instance_from_config({"camera_name": "simulation", "paused": True})
    with pytest.raises(ValueError, match=rf"No message from instance '{instance_id}' \({stream}\) within 1 s"):
        client.get_instance_message(instance_id, timeout=1)


def test_json_message_route_is_kept(servers, client):
    instance_id, _ = client.create_instance_from_config({"camera_name": "simulation"})
    status, body = call(servers, "GET", f"/instance/{instance_id}/message")
    assert status == 200 and body["message"]["width"] == 1280 and body["pulse_id"] > 0


# --- 2. saved configs read back expanded ------------------------------------------------------------------------

def test_hand_written_config_reads_back_expanded(servers, client):
    path = servers.pipeline.base / "hand_written.json"
    path.write_text('{"camera_name": "simulation"}')
    try:
        config = client.get_pipeline_config("hand_written")
        assert set(FIELDS) <= set(config)
        assert config["camera_name"] == "simulation" and config["image_background_enable"] is False
        assert config["image_background"] is None and config["image_threshold"] is None
        assert config["image_good_region"] is None and config["function"] is None
        assert config["pipeline_type"] == "processing" and config["mode"] == "PUB" and config["queue_size"] == 10
        assert list(config)[0] == "image_background_enable"
        # An instance of it runs with that config, and the file itself is left as written.
        instance_id, _ = client.create_instance_from_name("hand_written")
        assert client.get_instance_config(instance_id) == config
        assert json.loads(path.read_text()) == {"camera_name": "simulation"}
    finally:
        path.unlink()


def test_saved_config_reads_back_with_every_parameter(servers, client):
    saved = client.save_pipeline_config("compat_saved", {"camera_name": "simulation", "image_threshold": 2})
    status, body = call(servers, "GET", "/compat_saved/config")
    assert status == 200 and body["config"] == saved and body["config"]["image_threshold"] == 2.0
    assert body["config"]["image_background_enable"] is False and set(FIELDS) <= set(body["config"])
    client.delete_pipeline_config("compat_saved")


# --- 3. incremental updates inside dict-valued parameters -------------------------------------------------------

def _parameters_in_output(client: PipelineClient, instance_id: str, check) -> dict:
    """The processing_parameters of the first output message for which ``check`` holds (live update arrived)."""
    def current():
        parameters = json.loads(channel(client.get_instance_message(instance_id), "processing_parameters"))
        return parameters if check(parameters) else None
    return wait_until(current, 15, "the updated config in the instance output")


def test_update_merges_inside_dict_parameters(client):
    instance_id, _ = client.create_instance_from_config({
        "camera_name": "simulation", "image_good_region": {"threshold": 0.3, "gfscale": 2.5},
        "image_slices": {"number_of_slices": 3, "scale": 1.5}, "my_settings": {"gain": 2, "offset": 5}})

    client.set_instance_config(instance_id, {"image_good_region": {"threshold": 0.6},
                                             "image_slices": {"number_of_slices": 5},
                                             "my_settings": {"offset": 7}})
    config = client.get_instance_config(instance_id)
    assert config["image_good_region"] == {"threshold": 0.6, "gfscale": 2.5}
    assert config["image_slices"] == {"number_of_slices": 5, "scale": 1.5, "orientation": "vertical"}
    assert config["my_settings"] == {"gain": 2, "offset": 7}
    parameters = _parameters_in_output(client, instance_id, lambda p: p["image_good_region"]["threshold"] == 0.6)
    assert parameters["image_good_region"] == {"threshold": 0.6, "gfscale": 2.5}
    assert parameters["my_settings"] == {"gain": 2, "offset": 7}
    message = client.get_instance_message(instance_id)
    assert channel(message, "slice_amount") == 5 and "slice_4_center_x" in message.data.data

    # null for an inner key: that key back to its default; for a user dict, kept as null.
    config = client.set_instance_config(instance_id, {"image_good_region": {"gfscale": None},
                                                      "my_settings": {"gain": None}})
    assert config["image_good_region"] == {"threshold": 0.6, "gfscale": 1.8}
    assert config["my_settings"] == {"gain": None, "offset": 7}

    # null for the whole parameter: removed (its default, None); the slices go with the good region.
    config = client.set_instance_config(instance_id, {"image_good_region": None})
    assert config["image_good_region"] is None and config["image_slices"]["number_of_slices"] == 5
    _parameters_in_output(client, instance_id, lambda p: p["image_good_region"] is None)
    message = client.get_instance_message(instance_id)
    assert "slice_amount" not in message.data.data and "gr_x_profile" not in message.data.data


@pytest.mark.unit
def test_update_config_merges_nested_dicts_without_touching_the_current_config():
    current = expand_config({"camera_name": "s", "image_good_region": {"gfscale": 2.5},
                             "user": {"a": {"b": 1, "c": 2}, "d": 3}})
    new = update_config(current, {"user": {"a": {"c": 5}}, "image_good_region": {"threshold": 0.5}})
    assert new["user"] == {"a": {"b": 1, "c": 5}, "d": 3}
    assert new["image_good_region"] == {"threshold": 0.5, "gfscale": 2.5}
    assert current["user"] == {"a": {"b": 1, "c": 2}, "d": 3}  # merged into copies
    assert current["image_good_region"] == {"threshold": 0.3, "gfscale": 2.5}
    # A block that was off (None) is switched on by a partial dict; the rest gets its defaults.
    assert update_config(current, {"image_slices": {"scale": 3}})["image_slices"] == {
        "number_of_slices": 1, "scale": 3.0, "orientation": "vertical"}
    # A dict replaces a value that is not a dict.
    assert update_config({**current, "user": 7}, {"user": {"x": 1}})["user"] == {"x": 1}


def test_update_merges_rotation_keys(client):
    instance_id, _ = client.create_instance_from_config({"camera_name": "simulation",
                                                         "rotation": {"angle": 90, "order": 3}})
    config = client.set_instance_config(instance_id, {"rotation": {"mode": "ortho"}})
    assert config["rotation"] == {"angle": 90.0, "order": 3, "mode": "ortho"}
    message = client.get_instance_message(instance_id)  # a quarter turn: width and height swapped
    assert (channel(message, "width"), channel(message, "height")) == (960, 1280)


def test_merged_update_is_validated_as_a_whole(servers, client):
    instance_id, _ = client.create_instance_from_config({"camera_name": "simulation",
                                                         "rotation": {"angle": 45}})
    status, body = call(servers, "POST", f"/instance/{instance_id}/config", json={"rotation": {"mode": "ortho"}})
    assert status == 400 and "angle must be a multiple of 90 in 'ortho' mode, not 45.0" in body["status"]
    status, body = call(servers, "POST", f"/instance/{instance_id}/config",
                        json={"image_good_region": {"thresold": 0.6}})
    assert status == 400 and "'image_good_region.thresold': unknown parameter" in body["status"]
    assert client.get_instance_config(instance_id)["rotation"] == {"angle": 45.0, "order": 1, "mode": "0.0"}


# --- 4. downsampling: exactly one message out of N -------------------------------------------------------------

@pytest.mark.parametrize("factor", [1, 2, 3])
def test_downsampling_passes_one_of_n(client, factor):
    with TestCamera(rate=50) as camera:
        _, stream = client.create_instance_from_config({"input_stream": camera.address, "downsampling": factor,
                                                        "function": "transparent"})
        pids = pulse_ids(receive(connect(stream, mode=SUB), 5, skip=1))
    assert [b - a for a, b in zip(pids, pids[1:], strict=False)] == [factor] * 4


# --- 5. store pipelines: PUSH by default, image also as <camera>:FPICTURE ---------------------------------------

def test_store_pipeline_pushes_fpicture_to_a_pull_writer(client):
    with TestCamera(rate=100) as camera:
        instance_id, stream = client.create_instance_from_config({"pipeline_type": "store", "camera_name": "cam1",
                                                                  "input_stream": camera.address})
        config = client.get_instance_config(instance_id)
        messages = receive(connect(stream, mode=PULL), 5, skip=1)
    assert config["mode"] == "PUSH" and config["block"] is True
    pids = pulse_ids(messages)
    assert pids == list(range(pids[0], pids[0] + 5))
    for message in messages:
        out = values(message)
        np.testing.assert_array_equal(out["cam1:FPICTURE"], camera.image)
        np.testing.assert_array_equal(out["image"], camera.image)
        assert out["counter"] == message.data.pulse_id


def test_store_pipeline_of_the_simulation_camera(client):
    _, stream = client.create_instance_from_config({"pipeline_type": "store", "camera_name": "simulation"})
    out = values(receive(connect(stream, mode=PULL), 1)[0])
    assert out["simulation:FPICTURE"].shape == (960, 1280)
    np.testing.assert_array_equal(out["simulation:FPICTURE"], out["image"])


def test_store_pipeline_mode_can_still_be_pub(client):
    with TestCamera(rate=100) as camera:
        instance_id, stream = client.create_instance_from_config({
            "pipeline_type": "store", "camera_name": "cam1", "input_stream": camera.address, "mode": "PUB",
            "exclude": ["image"]})
        out = values(receive(connect(stream, mode=SUB), 1, skip=1)[0])
    assert client.get_instance_config(instance_id)["block"] is False
    assert "image" not in out  # exclude applies after the FPICTURE channel was added: only "image" went
    np.testing.assert_array_equal(out["cam1:FPICTURE"], camera.image)


def test_processing_pipeline_reads_a_saved_store_pipeline_with_pull(client):
    client.save_pipeline_config("compat_store", {"pipeline_type": "store", "camera_name": "simulation"})
    try:
        instance_id, _ = client.create_instance_from_config({"input_pipeline": "compat_store"})
        assert client.get_instance_config(instance_id)["input_mode"] == "PULL"
        message = client.get_instance_message(instance_id)
        assert channel(message, "width") == 1280 and 600 < channel(message, "x_center_of_mass") < 680
    finally:
        client.delete_pipeline_config("compat_store")
