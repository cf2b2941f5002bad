"""Bad pipeline REST requests get clear error envelopes, and a corrupt saved pipeline is reported: the pipeline app
in this process (``apps``, with a camera app for the camera checks), since none of these requests starts an instance."""

from __future__ import annotations

import pytest

from cam_server.client.pipeline_client import PipelineClient

pytestmark = pytest.mark.unit

API = "/api/v1/pipeline"


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "message"), [
    ("POST", "", {"content": "{not json"}, 400, "Request body is not valid JSON"),
    ("POST", "", {"content": ""}, 400, "Request body is empty"),
    ("POST", "", {"json": [1, 2]}, 400, "Request body must be a JSON object"),
    ("POST", "", {"json": {}}, 400, "camera_name is required"),
    ("POST", "", {"json": {"camera_name": "no_camera_here"}}, 404, "Camera 'no_camera_here' does not exist"),
    ("POST", "", {"json": {"camera_name": "simulation", "pipeline_type": "magic"}}, 400,
     "'pipeline_type': unknown pipeline_type 'magic'"),
    ("POST", "", {"json": {"camera_name": "simulation"}, "params": {"instance_id": "../x"}}, 400,
     "Invalid instance id '../x'"),
    ("POST", "/no_such_pipeline", {}, 404, "Pipeline 'no_such_pipeline' does not exist"),
    ("GET", "/instance/unknown_instance", {}, 404, "'unknown_instance' is not running"),
    ("GET", "/instance/unknown_instance/info", {}, 404, "Instance 'unknown_instance' does not exist"),
    ("GET", "/instance/unknown_instance/config", {}, 404, "Instance 'unknown_instance' does not exist"),
    ("POST", "/instance/unknown_instance/config", {"json": {"image_threshold": 1}}, 404,
     "Instance 'unknown_instance' does not exist"),
    ("GET", "/instance/unknown_instance/message", {}, 404, "Instance 'unknown_instance' does not exist"),
    ("DELETE", "/unknown_instance", {}, 404, "Instance 'unknown_instance' is not running"),
    ("GET", "/..etc/config", {}, 400, "Invalid pipeline name '..etc'"),
    ("GET", "/..%2Fetc/config", {}, 404, "Not Found"),  # decoded to a path no route matches
    ("GET", "/instance/..%5Cx", {}, 400, "Invalid instance id '..\\\\x'"),  # repr of ..\x
    ("POST", "/bad%20name/config", {"json": {"camera_name": "simulation"}}, 400, "Invalid pipeline name 'bad name'"),
    ("POST", "/info/config", {"json": {"camera_name": "simulation"}}, 400, "reserved by the REST API"),
    # 409: the config is fine, the camera server does not know the camera (the saved pipeline is no missing URL)
    ("POST", "/new_pipeline/config", {"json": {"camera_name": "no_camera_here"}}, 409,
     "Camera 'no_camera_here' does not exist"),
    ("POST", "/new_pipeline/config", {"json": {"camera_name": "simulation", "averaging": 0}}, 400, "'averaging'"),
    ("POST", "/camera/simulation/background", {"params": {"n_images": "many"}}, 422, "n_images"),
])
def test_bad_inputs_get_clear_errors_and_the_server_stays_healthy(apps, method, path, kwargs, status, message):
    response = apps.pipeline.http.request(method, f"{API}{path}", **kwargs)
    body = response.json()
    assert (response.status_code, body["state"]) == (status, "error")
    assert message in body["status"]
    assert apps.pipeline.http.get(API).status_code == 200


def test_corrupt_saved_pipeline_is_reported(apps):
    client = PipelineClient(apps.pipeline.url)
    (apps.pipeline.base / "broken_pipeline.json").write_text("{oops")
    try:
        with pytest.raises(ValueError, match="Pipeline 'broken_pipeline' is not valid JSON"):
            client.get_pipeline_config("broken_pipeline")
        with pytest.raises(ValueError, match="not valid JSON"):
            client.get_instance_stream("broken_pipeline")
        assert "simulation_sp" in client.get_pipelines()
    finally:
        (apps.pipeline.base / "broken_pipeline.json").unlink()
