"""Every route of both real servers answers what its OpenAPI document says: each answer, success or error, is
validated (strictly) against the model the served ``/openapi.json`` names for that route and status, and every
documented route is called at least once. The answers keep their shape: envelope keys first, user keys of configs
kept in the user's order, PSI's info fields present."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from pydantic import BaseModel

from cam_server.camera.config import CameraConfig
from cam_server.pipeline.config import LEADING_KEYS
from cam_server.rest import schemas
from tests.helpers.servers import ServerPair

CAMERA = {"source": "simulation", "source_type": "simulation", "size_x": 32, "size_y": 24, "frame_rate": 20,
          "image_type": "static_beam", "alias": ["doc_alias"], "group": ["doc_group"],
          "my_note": {"z": 1, "a": [1.5, None]}, "another": "é"}


@dataclass
class Documented:
    """A server and its served OpenAPI document; remembers which documented operations were called."""

    url: str
    document: dict[str, Any] = field(init=False)
    called: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.document = requests.get(f"{self.url}/openapi.json", timeout=10).json()

    def call(self, method: str, path: str, status: int = 200, **kwargs: Any) -> dict[str, Any]:
        """The JSON answer of ``method path`` after checking its status and that it is the documented model."""
        response = requests.request(method, self.url + path, timeout=60, **kwargs)
        assert response.status_code == status, response.text
        model = self._model(method, path, status, response.headers["content-type"])
        if model is not None:
            model.model_validate_json(response.content, strict=True)
            return response.json()
        return {}

    def _model(self, method: str, path: str, status: int, content_type: str) -> type[BaseModel] | None:
        for template, operations in self.document["paths"].items():  # in route order, as the server matches
            operation = operations.get(method.lower())
            if operation is not None and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path.split("?")[0]):
                self.called.add((method.lower(), template))
                documented = operation["responses"][str(status)]  # an error status the route documents
                media_type = content_type.split(";")[0]
                schema = documented["content"][media_type]["schema"]
                if "$ref" not in schema:
                    return None  # PNG, text
                return getattr(schemas, schema["$ref"].rsplit("/", 1)[1])
        raise AssertionError(f"{method} {path} is not in the document")

    def uncalled(self) -> set[tuple[str, str]]:
        every = {(m, p) for p, operations in self.document["paths"].items() for m in operations}
        return every - self.called


@dataclass
class Servers:
    camera: Documented
    pipeline: Documented


@pytest.fixture(scope="module")
def servers(servers: ServerPair) -> Servers:
    """The session's shared pair (the root ``servers``), each with its served document; the tests remove what they
    create (configs, scripts, backgrounds)."""
    return Servers(Documented(servers.camera.url), Documented(servers.pipeline.url))


def _in_user_order(config: dict[str, Any], user: dict[str, Any]) -> bool:
    """A pipeline config keeps the user's keys in the user's order, after the leading keys (processing.md 3.7)."""
    kept = [k for k in user if k not in LEADING_KEYS]
    return [k for k in config if k in kept] == kept


def _scripts(server: Documented, api: str) -> None:
    assert server.call("PUT", f"{api}/script/doc_a.py/script_bytes", data=b"x = 1\n")["script_name"] == "doc_a.py"
    server.call("POST", f"{api}/script/doc_b.py/script_bytes", data=b"y = 2\n")
    assert server.call("GET", f"{api}/script/doc_a.py/script_bytes")["script"] == "x = 1\n"
    assert {"doc_a.py", "doc_b.py"} <= set(server.call("GET", f"{api}/script")["scripts"])
    for name in ("doc_a.py", "doc_b.py"):
        server.call("DELETE", f"{api}/script/{name}/script_bytes")
    server.call("GET", f"{api}/script/doc_a.py/script_bytes", status=404)


def _server_routes(server: Documented, api: str) -> None:
    assert list(server.call("GET", f"{api}/version")) == ["state", "status", "version"]
    server.call("GET", f"{api}/config_names")
    server.call("GET", "/api/v1/logs")
    server.call("GET", "/api/v1/logs/txt")


def test_the_camera_server_answers_what_its_document_says(servers: Servers) -> None:
    cam, api = servers.camera, "/api/v1/cam"
    try:
        saved = cam.call("POST", f"{api}/doc_camera/config", json=CAMERA)
        assert list(saved) == ["state", "status", "config"]
        config = cam.call("GET", f"{api}/doc_camera/config")["config"]
        assert config == saved["config"]
        assert [k for k in config if k not in CameraConfig.model_fields] == ["my_note", "another"]  # user keys last
        assert config["my_note"] == CAMERA["my_note"] and config["another"] == "é"
        assert "doc_camera" in cam.call("GET", api)["cameras"]
        assert cam.call("GET", f"{api}/aliases")["aliases"]["doc_alias"] == "doc_camera"
        assert cam.call("GET", f"{api}/groups")["groups"]["doc_group"] == ["doc_camera"]
        assert cam.call("GET", f"{api}/groups/doc_group")["cameras"] == ["doc_camera"]
        assert cam.call("GET", f"{api}/doc_camera/is_online")["online"] is True
        assert cam.call("GET", f"{api}/doc_camera/geometry")["geometry"] == [32, 24]
        assert cam.call("GET", f"{api}/doc_camera")["stream"].startswith("tcp://")
        reservation = cam.call("GET", f"{api}/doc_camera?reserve=true")["reservation"]
        assert cam.call("DELETE", f"{api}/doc_camera/reservation/{reservation}")["released"] is True
        assert cam.call("GET", f"{api}/doc_camera/shared_memory")["shared_memory"]["announce"].startswith("ipc://")
        image = cam.call("GET", f"{api}/doc_camera/image_bytes")["image"]
        assert image["shape"] == [24, 32] and len(base64.b64decode(image["bytes"])) == 24 * 32 * 2
        cam.call("GET", f"{api}/doc_camera/image")
        info = cam.call("GET", f"{api}/info")["info"]
        instance = info["active_instances"]["doc_camera"]
        assert instance["config"] == config and instance["camera_name"] == "doc_camera"
        assert {"rx", "tx", "total_bytes", "frame_shape", "frames_in", "rate"} <= set(instance["statistics"])
        cam.call("DELETE", f"{api}/doc_camera")
        _scripts(cam, api)
        _server_routes(cam, api)
        # Errors: each one documented for its route, as the envelope.
        cam.call("POST", f"{api}/doc_camera/config", status=400, data=b"{not json")
        cam.call("POST", f"{api}/other_camera/config", status=409, json={**CAMERA, "alias": ["doc_camera"]})
        cam.call("POST", f"{api}/doc_camera/config", status=413, data=b" " * (1024 * 1024 + 1))
        cam.call("GET", f"{api}/doc_camera/geometry?timeout=soon", status=422)
        cam.call("GET", f"{api}/no_such_camera/config", status=404)
        cam.call("GET", f"{api}/no_such_camera/image", status=404)
        cam.call("DELETE", f"{api}/doc_camera/config")
    finally:
        requests.delete(f"{cam.url}{api}/doc_camera/config", timeout=10)
        cam.call("DELETE", api)
    assert cam.uncalled() == set()


def test_the_pipeline_server_answers_what_its_document_says(servers: Servers) -> None:
    pipe, api = servers.pipeline, "/api/v1/pipeline"
    requests.post(f"{servers.camera.url}/api/v1/cam/doc_camera/config", json=CAMERA, timeout=10).raise_for_status()
    user = {"camera_name": "doc_camera", "my_param": {"z": [1, 2]}, "image_threshold": 1, "zz": None}
    try:
        assert "doc_camera" in pipe.call("GET", f"{api}/camera")["cameras"]
        saved = pipe.call("POST", f"{api}/doc_pipeline/config", json={**user, "group": "doc"})["config"]
        assert _in_user_order(saved, user) and saved["my_param"] == {"z": [1, 2]}
        assert pipe.call("GET", f"{api}/doc_pipeline/config")["config"] == saved
        assert "doc_pipeline" in pipe.call("GET", api)["pipelines"]
        assert pipe.call("GET", f"{api}/groups")["groups"]["doc"] == ["doc_pipeline"]
        created = pipe.call("POST", f"{api}/doc_pipeline?instance_id=doc_named")
        assert list(created) == ["state", "status", "instance_id", "stream", "config"]
        private = pipe.call("POST", f"{api}?instance_id=doc_private", json=user)
        assert _in_user_order(private["config"], user)
        shared = pipe.call("POST", f"{api}/instance/", json=user)
        assert pipe.call("GET", f"{api}/instance/doc_private")["stream"] == private["stream"]
        changed = pipe.call("POST", f"{api}/instance/doc_private/config", json={"image_threshold": 2})["config"]
        assert changed["image_threshold"] == 2 and changed["my_param"] == {"z": [1, 2]}
        assert pipe.call("GET", f"{api}/instance/doc_private/config")["config"] == changed
        assert pipe.call("GET", f"{api}/instance/doc_private/exitcode")["exitcode"] is None
        info = pipe.call("GET", f"{api}/instance/doc_private/info")["info"]
        assert info["read_only"] is False and info["camera_name"] == "doc_camera" and info["config"] == changed
        message = pipe.call("GET", f"{api}/instance/doc_private/message")
        assert list(message) == ["state", "status", "message", "pulse_id", "global_timestamp"]
        pipe.call("DELETE", f"{api}/doc_named")
        server = pipe.call("GET", f"{api}/info")["info"]
        assert {"doc_private", shared["instance_id"]} <= set(server["active_instances"])
        assert "doc_named" in server["finished_instances"]
        # Backgrounds.
        background = pipe.call("POST", f"{api}/camera/doc_camera/background?n_images=2")["background_id"]
        assert pipe.call("GET", f"{api}/camera/doc_camera/background")["background_id"] == background
        assert pipe.call("GET", f"{api}/camera/doc_camera/backgrounds")["background_ids"] == [background]
        image = pipe.call("GET", f"{api}/background/{background}/image_bytes")["image"]
        pipe.call("GET", f"{api}/background/{background}/image")
        pipe.call("PUT", f"{api}/background/doc_copy/image_bytes", json=image)
        pipe.call("POST", f"{api}/background", json={"filename": "doc_list", "data": [[1, 2], [3, 4]]})
        assert "doc_list" in pipe.call("GET", f"{api}/background")["background_ids"]
        pipe.call("DELETE", f"{api}/background/doc_list")
        _scripts(pipe, api)
        _server_routes(pipe, api)
        # Errors: each one documented for its route, as the envelope.
        pipe.call("POST", api, status=400, json={"camera_name": "doc_camera", "queue_size": True})
        pipe.call("POST", f"{api}?instance_id=doc_private", status=409, json=user)
        pipe.call("POST", f"{api}/instance/{shared['instance_id']}/config", status=409, json={"image_threshold": 3})
        pipe.call("POST", f"{api}/instance/doc_private/config", status=413, data=b" " * (1024 * 1024 + 1))
        pipe.call("POST", f"{api}/camera/doc_camera/background?n_images=many", status=422)
        pipe.call("GET", f"{api}/background/no_such_background/image", status=404)
        pipe.call("DELETE", f"{api}/doc_private")
        pipe.call("DELETE", f"{api}/doc_pipeline/config")
    finally:
        requests.delete(f"{pipe.url}{api}/doc_pipeline/config", timeout=10)
        pipe.call("DELETE", api)
        requests.delete(f"{servers.camera.url}/api/v1/cam/doc_camera/config", timeout=10)
        backgrounds = requests.get(f"{pipe.url}{api}/background", timeout=10).json()["background_ids"]
        for name in (b for b in backgrounds if b.startswith("doc_")):  # the shared server keeps none of ours
            requests.delete(f"{pipe.url}{api}/background/{name}", timeout=10).raise_for_status()
        left = requests.get(f"{pipe.url}{api}/background", timeout=10).json()["background_ids"]
        assert not [b for b in left if b.startswith("doc_")], left
    assert pipe.uncalled() == set()


def test_an_unknown_route_answers_the_documented_default(servers: Servers) -> None:
    response = requests.get(f"{servers.pipeline.url}/api/v1/pipeline/a/b/c/d", timeout=10)
    assert response.status_code == 404
    schemas.ErrorAnswer.model_validate_json(response.content, strict=True)
