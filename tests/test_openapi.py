"""The OpenAPI documents committed in docs/ are the ones the servers serve, and they are valid OpenAPI 3.1 that
describes our envelope (not FastAPI's defaults) on every route."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import pytest

from cam_server.camera.config import CameraConfig
from cam_server.cli.openapi import CAMERA_FILE, PIPELINE_FILE, documents, render
from cam_server.pipeline.config import PipelineConfig

pytestmark = pytest.mark.unit
DOCS = Path(__file__).resolve().parents[1] / "docs"
METHODS = ("get", "put", "post", "delete")


@pytest.fixture(scope="module")
def generated() -> dict[str, dict[str, Any]]:
    return documents()


def test_the_committed_documents_are_the_served_ones(generated: dict[str, dict[str, Any]]) -> None:
    for name, document in generated.items():
        path = DOCS / name
        committed = path.read_text(encoding="utf-8") if path.exists() else ""
        served = render(document)
        if committed != served:
            diff = difflib.unified_diff(committed.splitlines(), served.splitlines(), "committed", "served", lineterm="")
            pytest.fail(f"{path} is not what the server serves: run python3 dev.py openapi and commit the result.\n"
                        + "\n".join(list(diff)[:40]), pytrace=False)


def test_the_documents_are_valid_openapi_3(generated: dict[str, dict[str, Any]]) -> None:
    validator = pytest.importorskip("openapi_spec_validator", reason="install the test extras (python3 dev.py setup)")
    for document in generated.values():
        assert document["openapi"].startswith("3.1.")
        validator.validate(document)


def test_every_reference_resolves(generated: dict[str, dict[str, Any]]) -> None:
    for name, document in generated.items():
        components = document["components"]["schemas"]
        for ref in _refs(document):
            assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in components, (name, ref)


def test_every_route_answers_the_envelope(generated: dict[str, dict[str, Any]]) -> None:
    for document in generated.values():
        assert "HTTPValidationError" not in document["components"]["schemas"]
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                responses = operation["responses"]
                assert "default" in responses, (method, path)
                for status, response in responses.items():
                    if status == "200":
                        assert response["content"], (method, path)
                    else:
                        schema = response["content"]["application/json"]["schema"]
                        assert schema == {"$ref": "#/components/schemas/ErrorAnswer"}, (method, path, status)
                success = responses["200"]["content"]
                if "application/json" in success:
                    name = success["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
                    properties = document["components"]["schemas"][name]["properties"]
                    assert list(properties)[:2] == ["state", "status"], (method, path, name)


def test_the_png_routes_are_png(generated: dict[str, dict[str, Any]]) -> None:
    routes = [(generated[CAMERA_FILE], "/api/v1/cam/{camera_name}/image"),
              (generated[PIPELINE_FILE], "/api/v1/pipeline/background/{background_name}/image")]
    for document, path in routes:
        assert list(document["paths"][path]["get"]["responses"]["200"]["content"]) == ["image/png"]


def test_the_config_bodies_are_derived_from_the_validating_models(generated: dict[str, dict[str, Any]]) -> None:
    """The request bodies are the config models as a request sends them (cam_server/rest/request_schemas.py): every
    field of the model, user keys kept; a change of a running instance has no required keys nor rules between
    fields (the merged config is checked)."""
    for document, model, routes in (
            (generated[CAMERA_FILE], CameraConfig, [("post", "/api/v1/cam/{camera_name}/config", "CameraConfigBody")]),
            (generated[PIPELINE_FILE], PipelineConfig, [
                ("post", "/api/v1/pipeline", "PipelineConfigBody"),
                ("post", "/api/v1/pipeline/instance/", "PipelineConfigBody"),
                ("post", "/api/v1/pipeline/instance/{instance_id}/config", "PipelineConfigChange"),
                ("post", "/api/v1/pipeline/{pipeline_name}/config", "PipelineConfigBody")])):
        for method, path, name in routes:
            body = document["paths"][path][method]["requestBody"]
            assert body["required"] is True
            assert body["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{name}"}
            schema = document["components"]["schemas"][name]
            assert {f.alias or n for n, f in model.model_fields.items()} <= set(schema["properties"])
            assert schema.get("additionalProperties", True) is True  # user keys are kept
            assert ("allOf" in schema) == (name != "PipelineConfigChange"), name


def test_the_instance_info_has_psis_fields(generated: dict[str, dict[str, Any]]) -> None:
    """psi-interface.md section 2: the fields PSI's tools read are declared (and required) in the info models."""
    psi_statistics = {"total_bytes", "clients", "throughput", "time", "rx", "tx", "pid", "cpu", "memory",
                      "frame_shape"}
    for document, info, fields in (
            (generated[CAMERA_FILE], "CameraInstanceInfo", {"stream_address", "is_stream_active", "camera_geometry",
                                                            "camera_name", "last_start_time", "statistics",
                                                            "config"}),
            (generated[PIPELINE_FILE], "PipelineInstanceInfo", {"instance_id", "camera_name", "config", "read_only",
                                                                "stream_address", "is_stream_active",
                                                                "last_start_time", "statistics"})):
        schemas = document["components"]["schemas"]
        assert fields <= set(schemas[info]["required"]), info
        assert psi_statistics <= set(schemas["Statistics"]["required"])
        server = schemas[info.replace("Instance", "Server")]
        assert {"active_instances", "version", "cpu", "memory"} <= set(server["required"])


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [*([node["$ref"]] if "$ref" in node else []), *(r for v in node.values() for r in _refs(v))]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_rendering_is_stable() -> None:
    document = {"b": [2, 1], "a": {"d": "é", "c": None}}
    assert render(document) == render(json.loads(render(document)))
    assert render(document).startswith('{\n  "a": {\n    "c": null,\n    "d": "é"')
