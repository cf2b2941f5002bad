"""Answers PSI's clients get to bad pipeline requests (psi-interface.md 1-3): unknown or invalid instance ids, bad
shared-instance configs, invalid hand-written saved configs. None of these starts an instance, so the apps run in
this process (``apps``, with a camera app for the camera checks)."""

from __future__ import annotations

import pytest

from cam_server.client.pipeline_client import PipelineClient
from tests.helpers.apps import LocalApps

pytestmark = pytest.mark.unit

API = "/api/v1/pipeline"


def call(apps: LocalApps, method: str, path: str, **kwargs) -> tuple[int, dict]:
    response = apps.pipeline.http.request(method, f"{API}{path}", **kwargs)
    return response.status_code, response.json()


def assert_error(apps: LocalApps, method: str, path: str, status: int, message: str, **kwargs) -> str:
    code, body = call(apps, method, path, **kwargs)
    assert (code, body["state"]) == (status, "error"), body
    assert message in body["status"], body
    return body["status"]


# --- instances (test_instances.py) -------------------------------------------------------------------------------

def test_exit_code_of_unknown_or_bad_ids(apps):
    assert_error(apps, "GET", "/instance/never_started/exitcode", 404, "Instance 'never_started' does not exist")
    assert_error(apps, "GET", "/instance/..%5Cx/exitcode", 400, "Invalid instance id")
    with pytest.raises(ValueError, match="Instance 'never_started' does not exist"):
        PipelineClient(apps.pipeline.url).get_instance_exit_code("never_started")


def test_shared_instance_from_config_bad_requests(apps):
    assert_error(apps, "POST", "/instance/", 400, "Request body is not valid JSON", content="{nope")
    assert_error(apps, "POST", "/instance/", 400, "camera_name is required", json={})
    assert_error(apps, "POST", "/instance/", 404, "Camera 'no_camera_here' does not exist",
                 json={"camera_name": "no_camera_here"})
    assert_error(apps, "POST", "/instance/", 400, "'pipeline_type'",
                 json={"camera_name": "simulation", "pipeline_type": "magic"})
    # Without the slash it is the pipeline-name route, and "instance" is no pipeline name.
    assert_error(apps, "POST", "/instance", 400, "reserved by the REST API", json={"camera_name": "simulation"})
    assert call(apps, "GET", "/info")[1]["info"]["active_instances"] == {}


# --- get_instance_message and saved configs (test_behaviours.py) -------------------------------------------------

def test_message_of_an_unknown_instance(apps):
    with pytest.raises(ValueError, match="Instance 'no_such_instance' does not exist"):
        PipelineClient(apps.pipeline.url).get_instance_message("no_such_instance")


@pytest.mark.parametrize(("content", "problem"), [
    ('{"camera_name": "simulation", "averaging": 0}', "'averaging': must be a non-zero integer"),
    ('{"image_threshold": 1}', "camera_name is required"),
    ('{"camera_name": ', "is not valid JSON"),
    ('["simulation"]', "must be a JSON object"),
    (b"\xff\xfe{}", "cannot be read"),
])
def test_invalid_hand_written_config_is_a_clear_400(apps, content, problem):
    path = apps.pipeline.base / "hand_bad.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    try:
        status, body = call(apps, "GET", "/hand_bad/config")
        assert status == 400 and body["state"] == "error"
        assert "hand_bad.json" in body["status"] and problem in body["status"], body
        status, body = call(apps, "POST", "/hand_bad")  # an instance of it: the same clear answer
        assert status == 400 and "hand_bad.json" in body["status"] and problem in body["status"], body
    finally:
        path.unlink()
