"""User scripts storage and REST routes, the same on the camera and the pipeline server."""

from __future__ import annotations

import pytest
import requests

from cam_server.client.cam_client import CamClient
from cam_server.client.pipeline_client import PipelineClient
from tests.helpers.servers import RunningServer

SCRIPT = "def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):\n" \
         "    return {'answer': 42}\n"


@pytest.fixture(params=["cam", "pipeline"])
def scripts(request: pytest.FixtureRequest, cam_server: RunningServer, pipeline_server: RunningServer):
    """(client, server, REST api prefix) of one server, with an empty scripts folder (other tests upload too)."""
    cam, pipe = cam_server, pipeline_server
    if request.param == "cam":
        client, server, api = CamClient(cam.url), cam, f"{cam.url}/api/v1/cam"
    else:
        client, server, api = PipelineClient(pipe.url), pipe, f"{pipe.url}/api/v1/pipeline"
    _remove_all_scripts(client, api)
    yield client, server, api
    _remove_all_scripts(client, api)


def _remove_all_scripts(client, api: str) -> None:
    """Every script of the folder, also those listed as broken (other modules upload scripts with syntax errors)."""
    listed = requests.get(f"{api}/script", timeout=10).json()
    for name in [*listed["scripts"], *listed.get("broken", {})]:
        client.delete_user_script(name)


def test_upload_list_download_delete(scripts) -> None:
    client, server, _ = scripts
    assert client.get_user_scripts() == []
    assert client.set_user_script("my_proc", SCRIPT) == "my_proc.py"
    assert client.set_user_script("other.py", b"X = 1\n") == "other.py"
    assert client.get_user_scripts() == ["my_proc.py", "other.py"]
    assert (server.scripts / "my_proc.py").read_text() == SCRIPT  # a real file in the -u folder
    assert client.get_user_script("my_proc") == SCRIPT
    assert client.get_user_script("my_proc.py") == SCRIPT  # with or without the suffix: the same script
    client.set_user_script("my_proc.py", SCRIPT.replace("42", "43"))  # replaces
    assert "43" in client.get_user_script("my_proc")
    assert sorted(p.name for p in server.scripts.iterdir() if p.is_file()) == ["my_proc.py", "other.py"]  # no tmp
    client.delete_user_script("my_proc")
    assert client.get_user_scripts() == ["other.py"]
    assert not (server.scripts / "my_proc.py").exists()


def test_put_and_post_upload_raw_body(scripts) -> None:
    client, _, api = scripts
    for method, name in (("PUT", "put_script"), ("POST", "post_script")):
        response = requests.request(method, f"{api}/script/{name}/script_bytes", data=b"Y = 2\n", timeout=10)
        assert response.status_code == 200, response.text
        assert response.json() == {"state": "ok", "status": f"Script {name}.py saved.", "script_name": f"{name}.py"}
    listed = requests.get(f"{api}/script", timeout=10).json()
    assert listed["state"] == "ok" and listed["scripts"] == ["post_script.py", "put_script.py"]
    got = requests.get(f"{api}/script/put_script/script_bytes", timeout=10).json()
    assert got["script"] == "Y = 2\n"


@pytest.mark.parametrize(("method", "name", "body", "status", "message"), [
    ("GET", "missing", None, 404, "Script 'missing.py' does not exist in the scripts folder"),
    ("DELETE", "missing.py", None, 404, "Script 'missing.py' does not exist"),
    ("PUT", "..evil", b"X = 1\n", 400, "Invalid script name '..evil'"),
    ("GET", ".hidden", None, 400, "Invalid script name '.hidden'"),
    ("PUT", "a%2F..%2Fb", b"X = 1\n", 400, "Invalid script name 'a/../b'"),
    ("PUT", "empty", b"", 400, "Script empty.py is empty"),
    ("POST", "blank", b"  \n\n", 400, "Script blank.py is empty"),
    ("PUT", "broken", b"x = 1\ndef f(:\n    pass\n", 400, "Syntax error in script broken.py line 2"),
    ("PUT", "latin", "x = 'caf\u00e9'\n".encode("latin-1"), 400, "Script latin.py is not UTF-8 text"),
])
def test_errors(scripts, method: str, name: str, body: bytes | None, status: int, message: str) -> None:
    client, server, api = scripts
    response = requests.request(method, f"{api}/script/{name}/script_bytes", data=body, timeout=10)
    assert response.status_code == status, response.text
    assert response.json()["state"] == "error"
    assert message in response.json()["status"]
    assert client.get_user_scripts() == []  # nothing stored by a refused upload


def test_client_errors_carry_the_server_message(scripts) -> None:
    client, _, _ = scripts
    with pytest.raises(ValueError, match=r"Syntax error in script bad\.py line 1: .*def f\(:"):
        client.set_user_script("bad", "def f(:\n")
    with pytest.raises(ValueError, match="Script 'nope.py' does not exist"):
        client.get_user_script("nope")
    with pytest.raises(ValueError, match="Script 'nope.py' does not exist"):
        client.delete_user_script("nope")
    with pytest.raises(ValueError, match="Invalid script name"):
        client.set_user_script("../up", "X = 1\n")


def test_script_is_a_reserved_name(cameras: CamClient, pipelines: PipelineClient) -> None:
    with pytest.raises(ValueError, match="reserved"):
        cameras.set_camera_config("script", {"source": "x", "source_type": "simulation"})
    with pytest.raises(ValueError, match="reserved"):
        pipelines.save_pipeline_config("script", {"camera_name": "uc_relay"})
