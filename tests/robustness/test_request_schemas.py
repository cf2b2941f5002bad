"""The request schemas of the OpenAPI documents say what the servers check (cam_server/rest/request_schemas.py):
names, stream addresses, FILE paths and config bodies, held against the validators themselves."""

from __future__ import annotations

from typing import Any

import jsonschema_rs  # what schemathesis validates with: ECMA-262 patterns, as JSON Schema says
import pytest

from cam_server.bsread.address import is_stream_address
from cam_server.camera.config import parse_camera_config
from cam_server.common.errors import CamServerError
from cam_server.common.names import validate_name
from cam_server.pipeline.config import expand_config
from cam_server.rest.request_schemas import ADDRESS, FILE_PATTERN, NAME, body_schemas

pytestmark = pytest.mark.unit

NAMES = ["a", "a.b", "a..b", ".a", "-a", "a-", "a.", "_x", "1:2+3", "a\n", "a/b", "a b", "ü", "", "a" * 200,
         "a" * 201, "..", "a.-b", "a.:b"]
ADDRESSES = ["tcp://h:1", "tcp://h:65535", "tcp://h:65536", "tcp://h:0", "tcp://h:007", "tcp://:1", "tcp://h",
             "tcp://h:", "ipc://x", "ipc://", "tcp://h h:1", "tcp://[::1]:5", "tcp://*:9", "udp://h:1", "tcp://h:1 ",
             "tcp://h\x1c:1"]


def _valid(schema: dict[str, Any], value: Any) -> bool:
    return jsonschema_rs.Draft202012Validator(schema).is_valid(value)


def _accepted(check, value: Any) -> bool:
    try:
        check(value)
    except (CamServerError, ValueError):
        return False
    return True


@pytest.mark.parametrize("name", NAMES)
def test_name_schema_is_validate_name(name: str) -> None:
    assert _valid(NAME, name) == _accepted(validate_name, name)


@pytest.mark.parametrize("address", ADDRESSES)
def test_address_schema_is_the_address_parser(address: str) -> None:
    assert _valid(ADDRESS, address) == is_stream_address(address)


@pytest.mark.parametrize(("file", "valid"), [("a.h5", True), ("sub/a.h5", True), ("/abs.h5", False), ("../a", False),
                                             ("a/../b", False), ("~/a", False), (" a", False), ("a/", False),
                                             (".hidden", True), ("..a", True), ("a//b", False), ("", False)])
def test_file_pattern(file: str, valid: bool) -> None:
    assert _valid({"type": "string", "pattern": FILE_PATTERN}, file) == valid


@pytest.mark.parametrize(("config", "accepted"), [
    ({"camera_name": "c"}, True),
    ({}, False),  # no input
    ({"pipeline_type": "custom"}, True),
    ({"camera_name": "c", "mode": "FILE"}, False),
    ({"camera_name": "c", "mode": "FILE", "file": "out.h5"}, True),
    ({"camera_name": "c", "bsread_channels": ["x"]}, False),  # processing merges only from a given stream
    ({"camera_name": "c", "bsread_channels": ["x"], "bsread_address": "tcp://h:1"}, True),
    ({"pipeline_type": "stream", "bsread_channels": ["x"]}, True),
    ({"camera_name": "c", "averaging": 0}, False),
    ({"camera_name": "c", "averaging": -100, "stream_timeout": None}, True),
    ({"camera_name": "c", "rotation": {"angle": 45, "mode": "ortho"}}, False),
    ({"camera_name": "c", "rotation": {"angle": 180, "mode": "ortho"}}, True),
    ({"camera_name": "c", "rotation": {"mode": "1.5"}}, True),
    ({"camera_name": "c", "rotation": {"mode": "sideways"}}, False),
    ({"camera_name": "c", "image_region_of_interest": [0, 0, 0, 1]}, False),
    ({"camera_name": "c", "copy": "yes"}, False),
    ({"camera_name": "c", "user_key": {"any": ["thing"]}}, True),
])
def test_pipeline_body_schema_is_the_config_model(config: dict[str, Any], accepted: bool) -> None:
    schema = body_schemas()["PipelineConfigBody"]
    assert _valid(schema, config) == accepted == _accepted(expand_config, config)


@pytest.mark.parametrize(("config", "accepted"), [
    ({"source": "s", "source_type": "simulation"}, True),
    ({"source": None, "source_type": "simulation"}, False),
    ({"source": " ", "source_type": "epics"}, False),
    ({"source": "tcp://h:99999", "source_type": "bsread"}, False),
    ({"source": "X:CAM", "source_type": "bsread"}, True),
    ({"source": 5, "source_type": "epics"}, False),
    ({"source": "s", "source_type": "simulation", "size_x": 8193}, False),
    ({"source": "s", "source_type": "epics", "size_x": 8193}, True),
    ({"source": "s", "source_type": "simulation", "alias": "one"}, True),
    ({"source": "s", "source_type": "simulation", "dtype": "f"}, False),  # the schema's names only
    ({"source": "s", "source_type": "simulation", "roi": [0, 1, False, 1]}, False),
    ({"source": "s", "source_type": "simulation", "rotate": "1"}, False),
])
def test_camera_body_schema_is_the_config_model(config: dict[str, Any], accepted: bool) -> None:
    schema = body_schemas()["CameraConfigBody"]
    assert _valid(schema, config) == accepted
    if config.get("dtype") != "f":  # numpy reads "f" as float32: accepted, not documented
        assert _accepted(lambda c: parse_camera_config(c, "cam"), config) == accepted
