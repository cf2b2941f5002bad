"""run_script harness: a real script file run on a thread, live parameters, sender, errors."""

from __future__ import annotations

import textwrap
import threading

import pytest

from cam_server.pipeline.instance.user_code import UserScriptError
from cam_server.pipeline.types.script_runner import run_script
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.unit

COUNTER = """
    def run(stop_event, parameters, sender, context):
        i = 0
        while not stop_event.is_set():
            sender.send({"i": i, "gain": parameters["gain"], "clients": sender.client_count,
                         "instance": context.instance_id})
            i += 1
            stop_event.wait(0.002)
        context.logger.info("stopping after %d", i)
"""


def _script(folder, name, body):
    (folder / name).write_text(textwrap.dedent(body))


def test_script_runs_sends_sees_live_parameters_and_stops(tmp_path):
    _script(tmp_path, "counter.py", COUNTER)
    params = {"gain": 1}
    sent = []
    stop = threading.Event()
    result = {}

    def target():
        try:
            result["sender"] = run_script("counter", tmp_path, stop, lambda: params,
                                          lambda d, p, t: sent.append((d, p, t)), client_count=lambda: 3,
                                          instance_id="inst")
        except Exception as ex:
            result["error"] = ex

    thread = threading.Thread(target=target)
    thread.start()
    wait_until(lambda: len(sent) >= 5 or "error" in result, 10, "first messages")
    assert "error" not in result
    params = {"gain": 7}  # a config update: the script sees it on its next access
    wait_until(lambda: sent[-1][0]["gain"] == 7, 10, "updated parameter seen")
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    data, pid, ts = sent[0]
    assert data == {"i": 0, "gain": 1, "clients": 3, "instance": "inst"}
    assert [p for _, p, _ in sent] == list(range(len(sent)))  # automatic pulse ids
    assert isinstance(ts, tuple) and len(ts) == 2 and ts[0] > 1_600_000_000
    assert result["sender"].sent == len(sent)


def test_three_argument_run_and_explicit_pulse_ids(tmp_path):
    _script(tmp_path, "once.py", """
        def run(stop_event, parameters, sender):
            sender.send({"a": 1}, pulse_id=100, timestamp=(5, 6))
            sender.send({"a": 2})
            sender.send({"a": 3}, timestamp=7.5)
    """)
    sent = []
    run_script("once.py", tmp_path, threading.Event(), dict, lambda d, p, t: sent.append((d, p, t)))
    assert sent == [({"a": 1}, 100, (5, 6)), ({"a": 2}, 101, sent[1][2]), ({"a": 3}, 102, (7, 500_000_000))]


def test_exception_in_run_reports_script_line(tmp_path):
    _script(tmp_path, "fails.py", """
        def helper():
            raise RuntimeError("sensor missing")

        def run(stop_event, parameters, sender):
            helper()
    """)
    with pytest.raises(UserScriptError, match=r"script fails failed: RuntimeError: sensor missing "
                                              r"\(fails\.py line 3\)"):
        run_script("fails", tmp_path, threading.Event(), dict, lambda *a: None)


def test_bad_send_from_script(tmp_path):
    _script(tmp_path, "badsend.py", """
        def run(stop_event, parameters, sender):
            sender.send([1, 2])
    """)
    with pytest.raises(UserScriptError, match=r"script badsend failed: sender\.send\(data\): data must be a dict "
                                              r"\(channel name -> value\), got list"):
        run_script("badsend", tmp_path, threading.Event(), dict, lambda *a: None)


def test_interface_errors(tmp_path):
    _script(tmp_path, "norun.py", "def start():\n    pass\n")
    with pytest.raises(UserScriptError, match=r"script norun\.py has no function 'run' \(expected: def "
                                              r"run\(stop_event, parameters, sender\)\)"):
        run_script("norun", tmp_path, threading.Event(), dict, lambda *a: None)
    _script(tmp_path, "tworun.py", "def run(stop_event, parameters):\n    pass\n")
    with pytest.raises(UserScriptError, match=r"'run' in script tworun\.py must accept \(stop_event, parameters, "
                                              r"sender\[, context\]\); its signature is run\(stop_event, parameters\)"):
        run_script("tworun", tmp_path, threading.Event(), dict, lambda *a: None)
    _script(tmp_path, "syn.py", "def run(a, b, c)\n    pass\n")
    with pytest.raises(UserScriptError, match=r"syntax error in script syn\.py line 1"):
        run_script("syn", tmp_path, threading.Event(), dict, lambda *a: None)
    with pytest.raises(UserScriptError, match="not found"):
        run_script("absent", tmp_path, threading.Event(), dict, lambda *a: None)


def test_keyword_context(tmp_path):
    _script(tmp_path, "kw.py", """
        def run(stop_event, parameters, sender, **kwargs):
            sender.send({"folder": kwargs["context"].scripts_folder})
    """)
    sent = []
    run_script("kw", tmp_path, threading.Event(), dict, lambda d, p, t: sent.append(d))
    assert sent == [{"folder": str(tmp_path)}]
