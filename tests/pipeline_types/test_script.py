"""pipeline_type 'script': run(stop_event, parameters, sender[, context]) replaces the instance loop."""

from __future__ import annotations

import pytest

from tests.helpers.procs import wait_until
from tests.helpers.streams import connect, receive, values
from tests.pipeline_types.helpers import assert_ended, pulse_ids, wait_finished, write_script

GENERATOR = """
    def run(stop_event, parameters, sender, context):
        i = 0
        while not stop_event.is_set():
            sender.send({"i": i, "gain": parameters["gain"], "clients": sender.client_count,
                         "instance": context.instance_id}, pulse_id=100 + i)
            i += 1
            stop_event.wait(0.01)
        context.logger.info("script stopping after %d messages", i)
"""


def test_script_publishes_sees_live_parameters_and_stops_cleanly(client, servers):
    write_script(servers.scripts, "generator.py", GENERATOR)
    instance_id, stream = client.create_instance_from_config(
        {"pipeline_type": "script", "function": "generator", "gain": 1, "exclude": ["instance"]},
        instance_id="script_gen")
    rx = connect(stream)
    messages = receive(rx, 5, skip=1)
    pids = pulse_ids(messages)
    assert pids == list(range(pids[0], pids[0] + 5)) and pids[0] >= 100
    out = values(messages[-1])
    assert out["i"] == pids[-1] - 100 and out["gain"] == 1 and out["clients"] == 1
    assert "instance" not in out  # include/exclude apply to script output
    client.set_instance_config(instance_id, {"gain": 3})
    wait_until(lambda: any(values(m)["gain"] == 3 for m in receive(rx, 1)), 10, "the new gain in the script")
    stats = client.get_instance_info(instance_id)["statistics"]
    assert stats["frames_out"] >= 6 and stats["clients"] == 1
    client.stop_instance(instance_id)
    info = client.get_server_info()["finished_instances"][instance_id]
    assert info["exit_code"] == 0 and info["last_error"] is None


def test_script_ends_at_records_and_when_run_returns(client, servers):
    write_script(servers.scripts, "generator.py", GENERATOR)
    instance_id, stream = client.create_instance_from_config(
        {"pipeline_type": "script", "function": "generator.py", "gain": 1, "records": 5, "no_client_timeout": 0})
    info = wait_finished(client, instance_id)
    assert info["exit_code"] == 0 and info["statistics"]["frames_out"] == 5
    write_script(servers.scripts, "three.py", """
        def run(stop_event, parameters, sender):
            for i in range(3):
                sender.send({"i": i})
    """)
    instance_id, _ = client.create_instance_from_config({"pipeline_type": "script", "function": "three"})
    info = wait_finished(client, instance_id)
    assert info["exit_code"] == 0 and info["statistics"]["frames_out"] == 3


BAD = {
    "script_raises.py": ("def run(stop_event, parameters, sender):\n    sender.send({'a': 1})\n"
                         "    raise KeyError('sensor')\n", 2,
                         "script script_raises.py failed: KeyError: 'sensor' (script_raises.py line 3)"),
    "script_bad_send.py": ("def run(stop_event, parameters, sender):\n    sender.send([1, 2])\n", 2,
                           "sender.send(data): data must be a dict (channel name -> value), got list"),
    "script_syntax.py": ("def run(stop_event, parameters, sender)\n    pass\n", 1,
                         "syntax error in script script_syntax.py line 1"),
    "script_no_run.py": ("def process(parameters):\n    return {}\n", 1,
                         "script script_no_run.py has no function 'run'"),
}


@pytest.mark.parametrize("script", sorted(BAD))
def test_bad_script_gives_clear_error(client, servers, script):
    body, code, message = BAD[script]
    (servers.scripts / script).write_text(body)
    instance_id, _ = client.create_instance_from_config({"pipeline_type": "script", "function": script})
    assert_ended(client, instance_id, code, message)


def test_script_without_function_fails_clearly(client):
    instance_id, _ = client.create_instance_from_config({"pipeline_type": "script"})
    assert_ended(client, instance_id, 1, "pipeline_type 'script' needs 'function'")
