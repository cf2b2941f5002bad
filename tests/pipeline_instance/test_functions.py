"""User processing functions: files in the scripts folder or paths, reload, bsdata, abort_on_error."""

from __future__ import annotations

import pytest

from cam_server.common.process import CONFIG_REFUSED
from cam_server.pipeline.config import parse_pipeline_config
from tests.helpers.procs import wait_until
from tests.helpers.streams import receive, values
from tests.pipeline_instance.harness import FakeCamera, parameters, pipeline

SCRIPT = """
import numpy as np
CALLS = []

def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    CALLS.append(pulse_id)
    return {{"version": {version}, "calls": len(CALLS), "sum": int(image.sum(dtype=np.int64)),
             "factor": parameters.get("factor", 0), "extra": (bsdata or {{}}).get("extra_value"),
             "processing_parameters": __import__("json").dumps({{"reload": parameters.get("reload")}})}}
"""

FAILING = """
def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    if pulse_id % 2:
        raise ValueError(f"odd pulse {pulse_id}")
    return {"pulse": pulse_id}
"""


@pytest.fixture
def camera():
    with FakeCamera(rate=50, extra={"extra_value": 2.5}) as cam:
        yield cam


def _write(tmp_path, name, text):
    scripts = tmp_path / "scripts"
    scripts.mkdir(exist_ok=True)
    (scripts / name).write_text(text)
    return scripts / name


def test_user_function_from_scripts_folder_gets_parameters_and_bsdata(tmp_path, camera):
    _write(tmp_path, "mine.py", SCRIPT.format(version=1))
    with pipeline(tmp_path, camera, function="mine", factor=3) as inst:
        out = values(receive(inst.receiver(), 1, skip=1)[0])
    assert out["version"] == 1 and out["factor"] == 3 and out["extra"] == 2.5
    assert out["sum"] == int(camera.image.sum(dtype="int64"))


def test_user_function_by_path(tmp_path, camera):
    path = tmp_path / "elsewhere.py"
    path.write_text(SCRIPT.format(version=7))
    with pipeline(tmp_path, camera, function=str(path), allow_external_functions=True) as inst:
        assert values(receive(inst.receiver(), 1, skip=1)[0])["version"] == 7


def test_user_function_by_path_only_when_the_server_allows_it(tmp_path, camera):
    path = tmp_path / "elsewhere.py"
    path.write_text(SCRIPT.format(version=7))
    with pipeline(tmp_path, camera, function=str(path)) as inst:
        assert inst.wait_exit() == 1
        error = inst.info()["last_error"]
    assert f"function '{path}' is a path, not a script of the scripts folder" in error
    assert "--allow_external_functions" in error


def test_reload_reloads_the_file_and_resets_itself(tmp_path, camera):
    path = _write(tmp_path, "mine.py", SCRIPT.format(version=1))
    with pipeline(tmp_path, camera, function="mine.py") as inst:
        rx = inst.receiver()
        first = values(receive(rx, 1, skip=1)[0])
        assert first["version"] == 1
        path.write_text(SCRIPT.format(version=2))
        inst.update(factor=5)  # no reload: the loaded module (and its state) stays
        out = values(receive(rx, 1, lambda m: values(m)["factor"] == 5)[0])
        assert out["version"] == 1 and out["calls"] > first["calls"]
        inst.update(reload=True)
        message = receive(rx, 1, lambda m: values(m)["version"] == 2)[0]
        out = values(message)
        assert out["calls"] <= 3  # fresh module state
        assert parameters(message) == {"reload": False}


def test_missing_function_fails_start_with_clear_error(tmp_path, camera):
    with pipeline(tmp_path, camera, function="nothing_here") as inst:
        assert inst.wait_exit() == 1
        error = inst.info()["last_error"]
        assert "'nothing_here' not found" in error and str(tmp_path / "scripts") in error


def test_function_file_with_syntax_error(tmp_path, camera):
    _write(tmp_path, "broken.py", "def process_image(:\n")
    with pipeline(tmp_path, camera, function="broken.py") as inst:
        assert inst.wait_exit() == 1
        error = inst.info()["last_error"]
        assert "syntax error" in error.lower() and "broken.py" in error and "line 1" in error


def test_abort_on_error_true_exits_2(tmp_path, camera):
    _write(tmp_path, "failing.py", FAILING)
    with pipeline(tmp_path, camera, function="failing.py") as inst:
        assert inst.wait_exit() == 2
        info = inst.info()
    assert "Processing function failed at pulse id" in info["last_error"]
    assert "ValueError: odd pulse" in info["last_error"]
    assert info["statistics"]["errors"] == 1


def test_abort_on_error_false_drops_failing_frames(tmp_path, camera):
    _write(tmp_path, "failing.py", FAILING)
    with pipeline(tmp_path, camera, function="failing.py", abort_on_error=False) as inst:
        pids = [values(m)["pulse"] for m in receive(inst.receiver(), 5, skip=1)]
        assert all(p % 2 == 0 for p in pids)
        wait_until(lambda: inst.stats()["errors"] >= 3, 10, "errors to be counted")
        assert inst.process.is_alive()
        assert "odd pulse" in inst.info()["last_error"]


def test_live_update_of_bad_function_keeps_previous_config(tmp_path, camera):
    with pipeline(tmp_path, camera, function="transparent") as inst:
        rx = inst.receiver()
        receive(rx, 1)
        bad = parse_pipeline_config({**inst.config, "function": "does_not_exist"})
        outcome, reason = inst.process.wait_config(inst.process.update_config(bad), 10)  # the instance's answer
        assert outcome == CONFIG_REFUSED and "script 'does_not_exist' not found" in reason
        assert inst.process.control.refusal_status() == 404
        assert "image" in values(receive(rx, 1, skip=2)[0])
