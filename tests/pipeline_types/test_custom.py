"""pipeline_type 'custom': process(parameters) called in a loop, throttled by max_frame_rate."""

from __future__ import annotations

import pytest

from tests.helpers.streams import connect, receive, values
from tests.pipeline_types.helpers import PULL, assert_ended, pulse_ids, wait_finished, write_script

COUNTER = """
    import numpy as np
    calls = 0

    def process(parameters):
        global calls
        calls += 1
        return {"calls": calls, "offset": parameters["offset"], "ramp": np.arange(4, dtype=np.float32) + calls}
"""


def test_custom_function_produces_messages_at_max_frame_rate(client, servers):
    write_script(servers.scripts, "counter_custom.py", COUNTER)
    instance_id, stream = client.create_instance_from_config(
        {"pipeline_type": "custom", "function": "counter_custom", "max_frame_rate": 50, "offset": 7})
    rx = connect(stream)
    messages = receive(rx, 11, skip=1)
    pids = pulse_ids(messages)
    assert pids == list(range(pids[0], pids[0] + 11))
    for message in messages:
        out = values(message)
        assert out["calls"] == message.data.pulse_id + 1  # one call per pulse id, starting at 0
        assert out["offset"] == 7 and list(out["ramp"]) == [out["calls"] + i for i in range(4)]
    # throttled: 10 calls take at least 10 periods of 1/max_frame_rate (timestamp = time of the call). A lower
    # bound on elapsed time, so a loaded machine cannot break it; 40 ms allow for jitter of the two end stamps.
    times = [m.data.global_timestamp + m.data.global_timestamp_offset * 1e-9 for m in messages]
    assert times[-1] - times[0] >= 10 * 0.02 - 0.04
    client.set_instance_config(instance_id, {"offset": 9})
    assert any(values(m)["offset"] == 9 for m in receive(rx, 20))


def test_custom_records_end_the_instance(client, servers):
    write_script(servers.scripts, "counter_custom.py", COUNTER)
    instance_id, stream = client.create_instance_from_config(
        {"pipeline_type": "custom", "function": "counter_custom", "max_frame_rate": 100, "offset": 0,
         "records": 30, "paused": True, "mode": "PUSH"})
    rx = connect(stream, mode=PULL)
    client.set_instance_config(instance_id, {"paused": False})
    assert pulse_ids(receive(rx, 30)) == list(range(30))  # PUSH: every record reaches the client
    info = wait_finished(client, instance_id)
    assert info["exit_code"] == 0 and info["statistics"]["frames_out"] == 30


BAD = {
    "custom_raises.py": ("def process(parameters):\n    raise RuntimeError('no device')\n", 2,
                         "Custom function failed at pulse id 0: RuntimeError: no device (custom_raises.py line 2)"),
    "custom_type.py": ("def process(parameters):\n    return 42\n", 2, "Custom function returned int"),
    "custom_syntax.py": ("def process(parameters):\n  return {\n", 1, "syntax error in script custom_syntax.py"),
    "custom_import.py": ("import no_such_module_xyz\n", 1, "No module named 'no_such_module_xyz'"),
}


@pytest.mark.parametrize("script", sorted(BAD))
def test_bad_custom_function(client, servers, script):
    body, code, message = BAD[script]
    (servers.scripts / script).write_text(body)
    instance_id, _ = client.create_instance_from_config({"pipeline_type": "custom", "function": script})
    assert_ended(client, instance_id, code, message)


def test_custom_without_function_fails_clearly(client):
    instance_id, _ = client.create_instance_from_config({"pipeline_type": "custom"})
    assert_ended(client, instance_id, 1, "pipeline_type 'custom' needs 'function'")
