"""``function`` resolution through real servers: built-in, user script (folder), file path, reload, and bad user code
(exception, syntax error, missing function, wrong return type) reported in the instance info."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cam_server.client.pipeline_client import PipelineClient
from tests.helpers.procs import wait_until
from tests.helpers.servers import RunningServer
from tests.helpers.streams import connect, receive, values
from tests.user_code.helpers import HEIGHT, WIDTH, spot_image

VERSIONED = """
import numpy as np
CALLS = []

def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata):
    CALLS.append(pulse_id)
    return {{"version": {version}, "calls": len(CALLS), "total": int(image.sum(dtype=np.int64)),
             "gain": float(parameters.get("gain", 1.0)), "reload_seen": repr(parameters["reload"])}}
"""

FAILING = """
def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata):
    if pulse_id % 2:
        raise ValueError(f"odd pulse id {pulse_id}")
    return {"even": pulse_id}
"""


def _create(pipelines: PipelineClient, **config) -> tuple[str, str]:
    return pipelines.create_instance_from_config({"camera_name": "uc_relay", **config})


def _ended_info(pipelines: PipelineClient, instance_id: str) -> dict:
    """Info of an instance once the server reaped it. Polls the config, not the info: reading the info drains the
    instance's error queue, and a drain racing the reaper's can lose the last error (reported to the lead)."""
    def ended() -> bool:
        try:
            pipelines.get_instance_config(instance_id)
        except ValueError as exc:
            assert "not running any more" in str(exc)
            return True
        return False

    wait_until(ended, 20, "the instance to end")
    return pipelines.get_server_info()["finished_instances"][instance_id]


def test_builtin_transparent_and_default(pipelines: PipelineClient) -> None:
    _, stream = _create(pipelines, function="transparent")
    out = values(receive(stream, 1)[0])
    assert set(out) == {"image", "width", "height", "timestamp", "x_axis", "y_axis", "processing_parameters"}
    np.testing.assert_array_equal(out["image"], spot_image())
    _, stream = _create(pipelines)  # function None: the default processing
    out = values(receive(stream, 1)[0])
    profile = spot_image().sum(axis=0, dtype=np.float64)
    assert out["x_center_of_mass"] == pytest.approx((np.arange(WIDTH) * profile).sum() / profile.sum())
    assert out["max_value"] == spot_image().max()


def test_user_script_from_the_scripts_folder(pipelines: PipelineClient) -> None:
    pipelines.set_user_script("versioned", VERSIONED.format(version=1))
    instance_id, stream = _create(pipelines, function="versioned", gain=2.5)
    out = values(receive(stream, 1)[0])
    assert out["version"] == 1 and out["gain"] == 2.5
    assert out["total"] == int(spot_image().sum(dtype=np.int64))
    assert pipelines.get_instance_config(instance_id)["function"] == "versioned"


def test_user_script_by_file_path_only_with_allow_external_functions(pipelines: PipelineClient,
                                                                     tmp_path: Path) -> None:
    # The shared server runs without --allow_external_functions: a path is refused when the instance is created
    # (tests/robustness/test_isolation.py runs one on a server that allows it).
    path = tmp_path / "elsewhere.py"
    path.write_text(VERSIONED.format(version=7))
    with pytest.raises(ValueError, match="is a path, not a script of the scripts folder"):
        _create(pipelines, function=str(path))


def test_reload_takes_a_new_version_live_and_resets_itself(pipelines: PipelineClient) -> None:
    pipelines.set_user_script("versioned", VERSIONED.format(version=1))
    instance_id, stream = _create(pipelines, function="versioned")
    assert values(receive(stream, 1)[0])["version"] == 1
    pipelines.set_user_script("versioned", VERSIONED.format(version=2))
    pipelines.set_instance_config(instance_id, {"gain": 3.0})  # no reload: the loaded function stays
    out = values(receive(stream, 1, lambda m: values(m)["gain"] == 3.0)[0])
    assert out["version"] == 1

    with connect(stream) as source:  # connected before the change: its first frames are not missed
        applied = pipelines.set_instance_config(instance_id, {"reload": True})  # answers once it is applied
        assert applied["reload"] is False
        out = values(receive(source, 1, lambda m: values(m)["version"] == 2)[0])
    assert out["calls"] <= 3  # a fresh module: its state was reset
    assert out["reload_seen"] == "False"  # processing parameters: reset before the function ran
    assert pipelines.get_instance_config(instance_id)["reload"] is False
    assert pipelines.get_instance_info(instance_id)["config"]["reload"] is False


def test_set_function_script_uploads_and_switches_live(pipelines: PipelineClient, tmp_path: Path) -> None:
    instance_id, stream = _create(pipelines, function="transparent")
    receive(stream, 1)
    local = tmp_path / "my_live_function.py"
    local.write_text(VERSIONED.format(version=5))
    config = pipelines.set_function_script(instance_id, str(local))
    assert config["function"] == "my_live_function" and config["reload"] is False
    assert pipelines.get_user_script("my_live_function.py") == local.read_text()
    assert values(receive(stream, 1, lambda m: "version" in values(m))[0])["version"] == 5
    # again with a changed local file: uploaded and reloaded (same name)
    local.write_text(VERSIONED.format(version=6))
    with connect(stream) as source:  # connected before the change: its first frames are not missed
        pipelines.set_function_script(instance_id, str(local))  # answers once it is applied
        assert values(receive(source, 1, lambda m: values(m).get("version") == 6)[0])["calls"] <= 3
    # a script already on the server, by name
    pipelines.set_user_script("on_server", VERSIONED.format(version=9))
    pipelines.set_function_script(instance_id, "on_server")
    assert values(receive(stream, 1, lambda m: values(m).get("version") == 9)[0])["version"] == 9
    with pytest.raises(ValueError, match="neither a local file nor a user script"):
        pipelines.set_function_script(instance_id, "no_such_script")


def test_exception_with_abort_on_error_false_keeps_streaming(pipelines: PipelineClient) -> None:
    pipelines.set_user_script("failing", FAILING)
    instance_id, stream = _create(pipelines, function="failing", abort_on_error=False)
    messages = receive(stream, 6)
    assert all(m.data.pulse_id % 2 == 0 and values(m)["even"] == m.data.pulse_id for m in messages)
    wait_until(lambda: pipelines.get_instance_info(instance_id)["statistics"]["errors"] >= 3, 10, "errors counted")
    info = pipelines.get_instance_info(instance_id)
    assert info["is_running"] is True
    assert "Processing function failed at pulse id" in info["last_error"]
    assert "ValueError: odd pulse id" in info["last_error"]


def test_exception_with_abort_on_error_stops_the_instance(pipelines: PipelineClient) -> None:
    pipelines.set_user_script("failing", FAILING)
    instance_id, _ = _create(pipelines, function="failing")
    info = _ended_info(pipelines, instance_id)
    assert info["exit_code"] == 2
    assert "ValueError: odd pulse id" in info["last_error"]


def test_wrong_return_type_is_reported_per_frame(pipelines: PipelineClient) -> None:
    pipelines.set_user_script("returns_list", "def process_image(*args):\n    return [1, 2]\n")
    instance_id, _ = _create(pipelines, function="returns_list", abort_on_error=False)
    wait_until(lambda: pipelines.get_instance_info(instance_id)["statistics"]["errors"] >= 2, 10, "errors counted")
    info = pipelines.get_instance_info(instance_id)
    assert info["is_running"] is True
    assert "Processing function returned list, expected a dict" in info["last_error"]


@pytest.mark.parametrize(("file_name", "source", "function", "expected"), [
    ("syntax_bad.py", "x = 1\ndef process_image(:\n", "syntax_bad",
     "syntax error in script syntax_bad.py line 2"),
    ("import_fails.py", "X = 1\nY = X / 0\n", "import_fails",
     "error importing script import_fails.py: ZeroDivisionError: division by zero (import_fails.py line 2)"),
    ("no_function.py", "def process(data):\n    return {}\n", "no_function",
     "script no_function.py has no function 'process_image' (it defines: process)"),
    ("few_args.py", "def process_image(image):\n    return {}\n", "few_args",
     "'process_image' in script few_args.py cannot be called with 7 positional arguments"),
    (None, None, "not_there", "script 'not_there' not found in the scripts folder"),
])
def test_bad_scripts_fail_the_instance_with_a_clear_error(pipelines: PipelineClient, pipeline_server: RunningServer,
                                                           file_name, source, function, expected) -> None:
    if file_name:  # written straight into the folder: the upload route would refuse the syntax error
        (pipeline_server.scripts / file_name).write_text(source)
    instance_id, _ = _create(pipelines, function=function)
    info = _ended_info(pipelines, instance_id)
    assert info["exit_code"] == 1
    assert expected in info["last_error"]
    if file_name:
        (pipeline_server.scripts / file_name).unlink()


def test_bad_function_in_a_live_update_keeps_the_previous_one(pipelines: PipelineClient) -> None:
    instance_id, stream = _create(pipelines, function="transparent")
    receive(stream, 1)
    # Refused with the instance's reason (issue 11 item 7), and the config shown is still the one that runs.
    with pytest.raises(ValueError, match="Config not applied to instance .*not_there"):
        pipelines.set_instance_config(instance_id, {"function": "not_there"})
    assert pipelines.get_instance_config(instance_id)["function"] == "transparent"
    out = values(receive(stream, 1)[0])
    assert out["image"].shape == (HEIGHT, WIDTH)
    assert json.loads(out["processing_parameters"])["function"] == "transparent"
