"""pipeline_type 'stream': input_stream / bsread_address / input_pipeline, SUB / PULL, process(), pass-through."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.procs import wait_until
from tests.helpers.streams import connect, receive, values
from tests.pipeline_types.helpers import (
    PUSH,
    TestCamera,
    assert_ended,
    known_image,
    pulse_ids,
    wait_finished,
    write_script,
)

SCALE = """
    def process(stream_data, pulse_id, timestamp, parameters):
        return {"scaled": stream_data["counter"] * parameters.get("gain", 1), "pid": pulse_id,
                "sec": timestamp[0], "image_sum": int(stream_data["image"].sum())}
"""


def test_pass_through_from_input_stream(client):
    with TestCamera(rate=100) as camera:
        _, stream = client.create_instance_from_config({"pipeline_type": "stream", "input_stream": camera.address})
        messages = receive(connect(stream), 10, skip=1)
    pids = pulse_ids(messages)
    assert pids == list(range(pids[0], pids[0] + 10))  # SUB input: consecutive, unchanged pulse ids
    out = values(messages[0])
    assert list(out) == ["width", "height", "timestamp", "image", "x_axis", "y_axis", "counter"]
    assert out["counter"] == messages[0].data.pulse_id
    np.testing.assert_array_equal(out["image"], known_image())


def test_bsread_address_pull_with_function_and_live_parameters(client, servers):
    write_script(servers.scripts, "scale.py", SCALE)
    with TestCamera(rate=100, mode=PUSH) as camera:  # a PUSH source: bsread_mode defaults to PULL
        instance_id, stream = client.create_instance_from_config(
            {"pipeline_type": "stream", "bsread_address": camera.address, "function": "scale", "gain": 2})
        rx = connect(stream)
        message = receive(rx, 1, skip=1)[0]
        out = values(message)
        assert out["scaled"] == 2 * message.data.pulse_id and out["pid"] == message.data.pulse_id
        assert out["image_sum"] == int(known_image().sum()) and out["sec"] == message.data.global_timestamp
        assert client.get_instance_config(instance_id)["input_mode"] == "SUB"  # input_mode is not used here
        client.set_instance_config(instance_id, {"gain": 5})
        changed = wait_until(lambda: [m for m in receive(rx, 1) if values(m)["scaled"] == 5 * m.data.pulse_id],
                             10, "the new gain")
        assert changed


def test_input_pipeline_and_pull_input_mode(client, servers):
    write_script(servers.scripts, "scale.py", SCALE)
    with TestCamera(rate=100) as camera:
        client.create_instance_from_config({"pipeline_type": "stream", "input_stream": camera.address,
                                            "mode": "PUSH"}, instance_id="stream_source")
        _, stream = client.create_instance_from_config({"pipeline_type": "stream", "input_pipeline": "stream_source",
                                                        "input_mode": "PULL", "function": "scale.py"})
        messages = receive(connect(stream), 5, skip=1)
    assert all(values(m)["scaled"] == m.data.pulse_id for m in messages)
    pids = pulse_ids(messages)
    assert pids == sorted(pids)


BAD_SCRIPTS = {
    "syntax.py": ("def process(stream_data, pulse_id, timestamp, parameters)\n    return {}\n", 1,
                  "syntax error in script syntax.py line 1"),
    "raises.py": ("def process(stream_data, pulse_id, timestamp, parameters):\n    return {'x': 1 / 0}\n", 2,
                  "Stream function failed at pulse id"),
    "returns_list.py": ("def process(stream_data, pulse_id, timestamp, parameters):\n    return [1, 2]\n", 2,
                        "Stream function returned list"),
    "signature.py": ("def process(stream_data):\n    return {}\n", 1,
                     "cannot be called with 4 positional arguments"),
}


@pytest.mark.parametrize("script", sorted(BAD_SCRIPTS))
def test_bad_user_code_gives_clear_error_and_exit_code(client, servers, script):
    body, code, message = BAD_SCRIPTS[script]
    (servers.scripts / script).write_text(body)
    with TestCamera(rate=100) as camera:
        instance_id, stream = client.create_instance_from_config(
            {"pipeline_type": "stream", "input_stream": camera.address, "function": script})
        rx = connect(stream)
        info = wait_finished(client, instance_id)
        rx.close()
    assert info["exit_code"] == code
    assert message in info["last_error"]
    if script == "raises.py":
        assert "ZeroDivisionError: division by zero (raises.py line 2)" in info["last_error"]
    # the server is fine and has reaped the instance
    wait_until(lambda: instance_id not in client.get_server_info()["active_instances"], 5, "the instance reaped")


def test_errors_without_abort_keep_streaming(client, servers):
    write_script(servers.scripts, "odd_fails.py", """
        def process(stream_data, pulse_id, timestamp, parameters):
            if pulse_id % 2:
                raise ValueError("odd pulse")
            return {"even": pulse_id}
    """)
    with TestCamera(rate=100) as camera:
        instance_id, stream = client.create_instance_from_config(
            {"pipeline_type": "stream", "input_stream": camera.address, "function": "odd_fails",
             "abort_on_error": False})
        messages = receive(connect(stream), 5, skip=1)
        assert all(values(m)["even"] % 2 == 0 for m in messages)
        info = client.get_instance_info(instance_id)
    assert info["is_running"] and info["statistics"]["errors"] >= 2
    assert "ValueError: odd pulse (odd_fails.py line 4)" in info["last_error"]


def test_no_input_is_refused_or_reported(client):
    with pytest.raises(ValueError, match="bsread_address"):
        client.create_instance_from_config({"pipeline_type": "stream"})
    instance_id, _ = client.create_instance_from_config({"pipeline_type": "stream", "bsread_channels": ["A"]})
    assert_ended(client, instance_id, 1, "dispatcher is not supported")
