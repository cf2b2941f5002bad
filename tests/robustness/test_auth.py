"""Issue 11 item 9: optional authentication. With an API token every POST, PUT and DELETE needs it as a bearer token
(401 in the envelope otherwise, nothing done), reads stay open, and CamClient / PipelineClient send it.

The apps in this process (unit), then the real servers with the option and the environment variable.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cam_server.client.cam_client import CamClient
from cam_server.client.pipeline_client import PipelineClient
from cam_server.rest.auth import NO_TOKEN, TOKEN_ENV, WRONG_TOKEN
from tests.helpers.apps import LocalApp, camera_app, pipeline_app
from tests.helpers.net import free_port
from tests.helpers.servers import camera_server, pipeline_server

TOKEN = "s3cret-token"
CAMERA = {"name": "auth_cam", "source": "simulation", "source_type": "simulation", "size_x": 32, "size_y": 24,
          "frame_rate": 5}
SCRIPT = "def process_image(*args):\n    return {}\n"


@pytest.fixture(scope="module")
def camera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalApp]:
    with camera_app(tmp_path_factory.mktemp("auth_camera"), api_token=TOKEN) as app:
        yield app


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalApp]:
    with pipeline_app(tmp_path_factory.mktemp("auth_pipeline"), f"http://127.0.0.1:{free_port()}",
                      api_token=TOKEN) as app:
        yield app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# request → expected status without a token, with a wrong one, with the right one
MUTATING = [
    ("camera", "POST", "/api/v1/cam/auth_cam/config", {"json": CAMERA}, 200),
    ("camera", "PUT", "/api/v1/cam/script/auth.py/script_bytes", {"content": SCRIPT}, 200),
    ("camera", "DELETE", "/api/v1/cam/script/auth.py/script_bytes", {}, 200),
    ("camera", "DELETE", "/api/v1/cam/auth_cam/config", {}, 200),
    ("camera", "DELETE", "/api/v1/cam", {}, 200),
    ("pipeline", "POST", "/api/v1/pipeline/auth_pipe/config", {"json": {"camera_name": "auth_cam"}}, 503),
    ("pipeline", "PUT", "/api/v1/pipeline/script/auth.py/script_bytes", {"content": SCRIPT}, 200),
    ("pipeline", "POST", "/api/v1/pipeline/script/auth.py/script_bytes", {"content": SCRIPT}, 200),
    ("pipeline", "DELETE", "/api/v1/pipeline/script/auth.py/script_bytes", {}, 200),
    ("pipeline", "DELETE", "/api/v1/pipeline", {}, 200),
    ("pipeline", "POST", "/api/v1/pipeline", {"json": {"camera_name": "auth_cam"}}, 503),
]


@pytest.mark.unit
def test_mutating_routes_need_the_token(camera: LocalApp, pipeline: LocalApp) -> None:
    apps = {"camera": camera, "pipeline": pipeline}
    for which, method, path, body, status in MUTATING:
        http = apps[which].http
        for headers, message in (({}, NO_TOKEN), (bearer("wrong"), WRONG_TOKEN), ({"Authorization": TOKEN}, NO_TOKEN),
                                 ({"Authorization": f"Basic {TOKEN}"}, NO_TOKEN), (bearer(""), NO_TOKEN)):
            response = http.request(method, path, headers=headers, **body)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.json() == {"state": "error", "status": message}
            assert response.headers["WWW-Authenticate"] == "Bearer"
        response = http.request(method, path, headers=bearer(TOKEN), **body)
        assert response.status_code == status, (method, path, response.text)
    # Refused requests did nothing: the camera config saved with the token was deleted with it, no script is left.
    assert camera.http.get("/api/v1/cam/auth_cam/config").status_code == 404
    assert camera.http.get("/api/v1/cam/script").json()["scripts"] == []
    assert not (camera.base / "auth_cam.json").exists()


@pytest.mark.unit
def test_reads_stay_open(camera: LocalApp, pipeline: LocalApp) -> None:
    for http, path in ((camera.http, "/api/v1/cam"), (camera.http, "/api/v1/cam/info"),
                       (camera.http, "/api/v1/cam/simulation/config"), (pipeline.http, "/api/v1/pipeline"),
                       (pipeline.http, "/api/v1/pipeline/info"), (camera.http, "/openapi.json")):
        assert http.get(path).status_code == 200, path


@pytest.mark.unit
def test_the_clients_send_the_token(camera: LocalApp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(ValueError, match="Authentication required"):
        CamClient(camera.url).set_camera_config("auth_client", CAMERA)
    with pytest.raises(ValueError, match="Invalid API token"):
        CamClient(camera.url, token="wrong").set_camera_config("auth_client", CAMERA)
    assert CamClient(camera.url).get_cameras()  # reads need none
    client = CamClient(camera.url, token=TOKEN)
    client.set_camera_config("auth_client", CAMERA)
    client.delete_camera_config("auth_client")
    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # the default: the environment variable
    CamClient(camera.url).set_camera_config("auth_client", CAMERA)
    with pytest.raises(ValueError, match="Authentication required"):
        CamClient(camera.url, token="").delete_camera_config("auth_client")  # "": no token
    CamClient(camera.url).delete_camera_config("auth_client")
    assert PipelineClient("http://127.0.0.1:1")._session.headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.unit
def test_the_401_is_documented(camera: LocalApp, pipeline: LocalApp) -> None:
    for app in (camera, pipeline):
        for path, operations in app.http.get("/openapi.json").json()["paths"].items():
            for method, operation in operations.items():
                assert ("401" in operation["responses"]) == (method in ("post", "put", "delete")), (method, path)


def test_servers_take_the_token_from_the_option_and_the_environment(tmp_path: Path) -> None:
    camera_token, pipeline_token = "camera-token", "pipeline-token"
    with camera_server(tmp_path, env={TOKEN_ENV: camera_token}) as cam, \
            pipeline_server(tmp_path, cam.url, env={TOKEN_ENV: ""},
                            extra_args=["--api_token", pipeline_token, "--cam_server_token", camera_token]) as pipe:
        with pytest.raises(ValueError, match="Authentication required"):
            CamClient(cam.url, token="").set_camera_config("auth_cam", CAMERA)
        CamClient(cam.url, token=camera_token).set_camera_config("auth_cam", CAMERA)
        pipelines = PipelineClient(pipe.url, token=pipeline_token)
        with pytest.raises(ValueError, match="Invalid API token"):
            PipelineClient(pipe.url, token=camera_token).create_instance_from_config({"camera_name": "auth_cam"})
        # The pipeline server asks the camera server with its own token for the camera.
        instance_id, _ = pipelines.create_instance_from_config({"camera_name": "auth_cam"})
        assert PipelineClient(pipe.url, token="").get_instance_info(instance_id)["is_running"] is True
        pipelines.stop_instance(instance_id)
        CamClient(cam.url, token=camera_token).stop_all_instances()
