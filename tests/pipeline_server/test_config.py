"""Pipeline config validation, defaults, key order and incremental updates (pure functions)."""

from __future__ import annotations

import pytest

from cam_server.common.errors import InvalidConfig
from cam_server.pipeline.config import FIELDS, LEADING_KEYS, expand_config, update_config

pytestmark = pytest.mark.unit


def bad(config: dict) -> str:
    with pytest.raises(InvalidConfig) as err:
        expand_config(config)
    return str(err.value)


def test_minimal_config_gets_every_documented_default_in_processing_md_order():
    c = expand_config({"camera_name": "simulation"})
    assert list(c)[:8] == [*LEADING_KEYS, "camera_name"]
    assert set(FIELDS) <= set(c)
    assert c["image_background_enable"] is False
    assert c["pipeline_type"] == "processing"
    expected = {
        "image_background": None, "image_threshold": None, "image_region_of_interest": None,
        "image_good_region": None, "image_slices": None, "function": None, "reload": False, "include": None,
        "exclude": None, "camera_timeout": 10.0, "create_header": "on_change", "mode": "PUB", "queue_size": 10,
        "block": False, "no_client_timeout": 10.0, "buffer_size": None, "file": None, "layout": "DEFAULT",
        "localtime": True, "change": False, "pid_range": None, "records": None, "paused": False,
        "input_pipeline": None, "input_stream": None, "input_mode": "SUB", "output_pipeline": None,
        "output_stream": None, "downsampling": None, "processing_threads": None, "abort_on_error": True,
        "abort_on_timeout": False, "stream_timeout": 10.0, "enforce_pid": False, "rotation": None,
        "averaging": None, "max_frame_rate": None, "bsread_address": None, "bsread_channels": None,
        "bsread_mode": None, "bsread_image_buf": 1000, "bsread_data_buf": 1000, "copy": False, "pid_buffer": 0,
    }
    assert {k: c[k] for k in expected} == expected


def test_readme_example_config_and_sub_block_defaults():
    c = expand_config({"camera_name": "simulation", "image_background": None, "image_background_enable": False,
                       "image_threshold": 0.5, "image_region_of_interest": [0, 100, 0, 100],
                       "image_good_region": {"threshold": 0.9, "gfscale": 3},
                       "image_slices": {"number_of_slices": 1, "scale": 1.0, "orientation": "vertical"}})
    assert c["image_threshold"] == 0.5
    assert c["image_region_of_interest"] == [0, 100, 0, 100]
    assert c["image_good_region"] == {"threshold": 0.9, "gfscale": 3.0}
    partial = expand_config({"camera_name": "s", "image_good_region": {}, "image_slices": {"number_of_slices": 3},
                             "rotation": {"angle": 30}})
    assert partial["image_good_region"] == {"threshold": 0.3, "gfscale": 1.8}
    assert partial["image_slices"] == {"number_of_slices": 3, "scale": 2.0, "orientation": "vertical"}
    assert partial["rotation"] == {"angle": 30.0, "order": 1, "mode": "0.0"}


def test_unknown_keys_are_kept_in_the_users_order():
    c = expand_config({"my_param": [1, 2], "camera_name": "s", "name": "x"})
    keys = list(c)
    assert keys.index("my_param") < keys.index("camera_name") < keys.index("name") < keys.index("function")
    assert c["my_param"] == [1, 2]


@pytest.mark.parametrize(("config", "message"), [
    ({}, "camera_name is required"),
    ({"camera_name": "s", "pipeline_type": "magic"}, "'pipeline_type': unknown pipeline_type 'magic'"),
    ({"camera_name": "s", "image_region_of_interest": [0, 10, 0]}, "'image_region_of_interest'"),
    ({"camera_name": "s", "image_region_of_interest": [0, 0, 0, 10]}, "sizes must be > 0"),
    ({"camera_name": "s", "image_region_of_interest": [0, 1.5, 0, 10]}, "'image_region_of_interest'"),
    ({"camera_name": "s", "image_region_of_interest": [-1, 5, 0, 10]}, "offsets must be >= 0"),
    ({"camera_name": "s", "averaging": 0}, "'averaging': must be a non-zero integer"),
    ({"camera_name": "s", "averaging": "3"}, "'averaging'"),
    ({"camera_name": "s", "averaging": 2.5}, "'averaging'"),
    ({"camera_name": "s", "image_background_enable": "yes"}, "'image_background_enable'"),
    ({"camera_name": "s", "image_background_enable": 1}, "'image_background_enable'"),
    ({"camera_name": "s", "rotation": {"angle": 10, "order": 0}}, "'rotation.order'"),
    ({"camera_name": "s", "rotation": {"angle": 10, "order": 6}}, "'rotation.order'"),
    ({"camera_name": "s", "rotation": {"angle": 10, "mode": "sideways"}}, "'rotation.mode'"),
    ({"camera_name": "s", "rotation": {"angle": 45, "mode": "ortho"}}, "multiple of 90"),
    ({"camera_name": "s", "rotation": {"speed": 1}}, "'rotation.speed': unknown parameter"),
    ({"camera_name": "s", "rotation": 5}, "'rotation': must be an object"),
    ({"camera_name": "s", "image_slices": {"orientation": "diagonal"}}, "'image_slices.orientation'"),
    ({"camera_name": "s", "image_slices": {"number_of_slices": 0}}, "'image_slices.number_of_slices'"),
    ({"camera_name": "s", "image_good_region": {"threshold": "high"}}, "'image_good_region.threshold'"),
    ({"camera_name": "s", "mode": "BROADCAST"}, "'mode'"),
    ({"camera_name": "s", "mode": "FILE"}, "needs 'file'"),
    ({"camera_name": "s", "create_header": "sometimes"}, "'create_header'"),
    ({"camera_name": "s", "queue_size": 0}, "'queue_size'"),
    ({"camera_name": "s", "input_mode": "PUB"}, "'input_mode'"),
    ({"camera_name": "s", "pid_range": [1]}, "'pid_range'"),
    ({"camera_name": "s", "records": -1}, "'records'"),
    ({"camera_name": "s", "image_threshold": "x"}, "'image_threshold'"),
    ({"camera_name": "../etc"}, "'camera_name'"),
    ({"camera_name": "s", "image_background": "a/b"}, "'image_background'"),
    ({"pipeline_type": "stream"}, "bsread_address"),
])
def test_invalid_configs_name_the_field(config, message):
    assert message in bad(config)
    assert bad(config).startswith("Invalid pipeline config")


def test_several_errors_are_reported_together():
    message = bad({"camera_name": "s", "averaging": 0, "mode": "X"})
    assert "'averaging'" in message and "'mode'" in message


def test_accepted_values_and_normalisation():
    assert expand_config({"camera_name": "s", "image_background_enable": "passive"})["image_background_enable"] \
        == "passive"
    assert expand_config({"camera_name": "s", "image_background_enable": "signed"})["image_background_enable"] \
        == "signed"
    assert expand_config({"camera_name": "s", "averaging": -5.0})["averaging"] == -5
    assert expand_config({"camera_name": "s", "mode": "push"})["mode"] == "PUSH"
    assert expand_config({"camera_name": "s", "rotation": {"angle": 90, "mode": "ortho"}})["rotation"]["mode"] \
        == "ortho"
    assert expand_config({"camera_name": "s", "rotation": {"mode": 5}})["rotation"]["mode"] == "5.0"
    file_cfg = expand_config({"camera_name": "s", "mode": "FILE", "file": "/tmp/x.h5", "layout": "flat"})
    assert (file_cfg["layout"], file_cfg["localtime"], file_cfg["change"]) == ("FLAT", True, False)
    assert expand_config({"camera_name": "s", "camera_timeout": None})["camera_timeout"] is None  # disabled
    assert expand_config({"camera_name": "s", "queue_size": None})["queue_size"] == 10


def test_inputs_other_than_a_camera():
    for config in ({"pipeline_type": "custom"}, {"pipeline_type": "script"}, {"pipeline_type": "fanin"},
                   {"pipeline_type": "stream", "bsread_address": "tcp://127.0.0.1:9999"},
                   {"pipeline_type": "stream", "bsread_channels": ["A:B"]},
                   {"input_stream": "tcp://127.0.0.1:9999"}, {"input_pipeline": "simulation_sp"}):
        assert expand_config(config)["camera_name"] is None


def test_mode_dependent_defaults():
    assert expand_config({"camera_name": "s", "mode": "PUSH"})["block"] is True
    assert expand_config({"camera_name": "s", "mode": "PUB"})["block"] is False
    assert expand_config({"camera_name": "s", "mode": "PUB", "block": True})["block"] is True
    fanout = expand_config({"camera_name": "s", "pipeline_type": "fanout"})
    assert (fanout["mode"], fanout["block"]) == ("PUSH", True)
    store = expand_config({"camera_name": "s", "pipeline_type": "store"})  # PSI's writers PULL from it
    assert (store["mode"], store["block"]) == ("PUSH", True)
    assert expand_config({"pipeline_type": "fanin"})["input_mode"] == "PULL"
    assert expand_config({"pipeline_type": "fanin", "input_mode": "SUB"})["input_mode"] == "SUB"


def test_background_id_alias_sets_and_enables_the_background():
    c = expand_config({"camera_name": "simulation", "background_id": "simulation_20261123_213000_123456"})
    assert c["image_background"] == "simulation_20261123_213000_123456"
    assert c["image_background_enable"] is True
    assert "background_id" not in c
    off = expand_config({"camera_name": "s", "background_id": "s_1", "image_background_enable": False})
    assert off["image_background_enable"] is False
    assert "disagree" in bad({"camera_name": "s", "background_id": "a", "image_background": "b"})


def test_update_changes_only_given_fields_and_none_resets_to_default():
    current = expand_config({"camera_name": "s", "image_threshold": 3, "my_key": 1})
    new = update_config(current, {"image_region_of_interest": [0, 10, 0, 20]})
    assert new["image_threshold"] == 3.0 and new["my_key"] == 1
    assert new["image_region_of_interest"] == [0, 10, 0, 20]
    reset = update_config(new, {"image_threshold": None, "queue_size": 5})
    assert reset["image_threshold"] is None and reset["queue_size"] == 5
    reset = update_config(reset, {"queue_size": None, "image_background_enable": None})
    assert reset["queue_size"] == 10 and reset["image_background_enable"] is False
    assert update_config(current, {"camera_timeout": None})["camera_timeout"] is None  # README: null disables
    with pytest.raises(InvalidConfig, match="'averaging'"):
        update_config(current, {"averaging": 0})
    assert current["image_threshold"] == 3.0  # the input is not modified


def test_update_rederives_mode_dependent_defaults_unless_set_explicitly():
    current = expand_config({"camera_name": "s"})
    push = update_config(current, {"mode": "PUSH"})
    assert push["block"] is True
    assert update_config(push, {"mode": "PUB"})["block"] is False
    explicit = update_config(current, {"block": True})
    assert update_config(explicit, {"image_threshold": 1})["block"] is True


def test_update_keeps_a_non_default_mode_and_rederives_block():
    push = expand_config({"camera_name": "s", "mode": "PUSH"})
    kept = update_config(push, {"image_threshold": 3})
    assert (kept["mode"], kept["block"]) == ("PUSH", True)
    file_cfg = expand_config({"camera_name": "s", "mode": "FILE", "file": "/tmp/x.h5"})
    assert update_config(file_cfg, {"image_threshold": 3})["mode"] == "FILE"
    back = update_config(push, {"mode": "PUB"})
    assert (back["mode"], back["block"]) == ("PUB", False)
