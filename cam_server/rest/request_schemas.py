"""The request side of the OpenAPI documents, as the servers check it: names, stream addresses, bounds, and the
rules between fields, so that a client (or schemathesis) can tell a request the server accepts from one it refuses.

The config models (:class:`PipelineConfig`, :class:`CameraConfig`) describe what the servers *answer*: every field
filled in. A request body differs: ``null`` means "the default" for a pipeline parameter, a camera's ``alias`` may
be one name, and some values are checked by validators the model's JSON schema cannot show (names, addresses,
``averaging`` not 0, a FILE output needs a ``file``, ...). :func:`body_schemas` derives the body schemas from the
models and adds what the validators check (the constants are the validators' own); :func:`document_parameters`
does the same for path and query parameters, which the handlers check themselves (our messages and status codes,
not FastAPI's). ``tests/robustness/test_schemathesis.py`` holds the document to the servers.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import numpy as np

from cam_server.camera.config import (
    MAX_FRAME_RATE as MAX_CAMERA_FRAME_RATE,
)
from cam_server.camera.config import (
    MAX_MARKER,
    MAX_MARKER_SIZE,
    MAX_SIMULATED_SIDE,
    CameraConfig,
)
from cam_server.camera.manager import FRAME_TIMEOUT, MAX_FRAME_TIMEOUT
from cam_server.camera.render import COLORMAPS, MAX_OUTPUT_PIXELS, MAX_SCALE
from cam_server.pipeline.config import (
    MAX_AVERAGING,
    MAX_BINNING,
    MAX_COUNT,
    MAX_FRAME_RATE,
    MAX_PROCESSING_THREADS,
    MAX_PULSE_ID,
    MAX_RUNNING_AVERAGE,
    NULL_IS_VALUE,
    ROTATION_MODES,
    PipelineConfig,
)
from cam_server.pipeline.registry import PIPELINE_TYPES
from cam_server.pipeline.server.backgrounds import MAX_N_IMAGES

# common/names.py: 1-200 letters, digits or '_.:+-', not starting with '.' or '-', no '..'.
NAME_PATTERN = r"^[A-Za-z0-9_](?:[A-Za-z0-9_:+-]|\.(?!\.))*$"
NAME: dict[str, Any] = {"type": "string", "pattern": NAME_PATTERN, "maxLength": 200}
# Not white space as Python's str.isspace() says (ECMA's \s lacks \x1c-\x1f and \x85).
_VISIBLE = r"[^\s\x1c-\x1f\x85]"
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# bsread/address.py: tcp://host:port (port 1-65535) or ipc://path, no white space.
ADDRESS_PATTERN = rf"^(?:tcp://{_VISIBLE}+:0*{_PORT}|ipc://{_VISIBLE}+)$"
ADDRESS: dict[str, Any] = {"type": "string", "pattern": ADDRESS_PATTERN}
# A bsread camera named by its PV prefix: no white space, no "scheme://".
PV_PREFIX: dict[str, Any] = {"type": "string", "pattern": rf"^(?:(?!://){_VISIBLE})+$"}
# FILE output (pipeline/file_path.py, with the server's file folder): a relative path inside it, no '..' segment,
# no leading '~' or white space, no empty segment.
_SEGMENT = r"(?:[^/\s\x1c-\x1f\x85.~\x00][^/\x00]*|\.[^/.\x00][^/\x00]*|\.\.[^/\x00]+)"
FILE_PATTERN = rf"^{_SEGMENT}(?:/(?:{_SEGMENT}|~[^/\x00]*))*$"
# A parameter read as a float: any JSON number a double holds (a longer integer is refused, as it is no float).
MAX_DOUBLE = 1.7976931348623157e308
FINITE: dict[str, Any] = {"type": "number", "minimum": -MAX_DOUBLE, "maximum": MAX_DOUBLE}
ROI: dict[str, Any] = {
    "type": "array", "minItems": 4, "maxItems": 4, "items": False,
    "prefixItems": [{"type": "integer", "minimum": 0, "maximum": MAX_COUNT},
                    {"type": "integer", "minimum": 1, "maximum": MAX_COUNT}] * 2,
    "description": "[offset_x, size_x, offset_y, size_y]; sizes past the image edge are clamped, the offsets must "
                   "be inside the image"}
NULL: dict[str, Any] = {"type": "null"}
# Types that need no input (the others need camera_name, input_stream or input_pipeline).
_NO_INPUT = sorted(name for name, kind in PIPELINE_TYPES.items() if not kind.needs_input)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, NULL]}


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """``schema`` with its ``$ref`` to ``$defs`` replaced by copies of the definitions (then patched freely)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(copy.deepcopy(defs[ref.removeprefix("#/$defs/")]), defs)
        return {key: _inline(value, defs) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    return schema


def _model_schema(model: type) -> dict[str, Any]:
    schema = model.model_json_schema(mode="validation")
    defs = schema.pop("$defs", {})
    return _inline(schema, defs)


def _without_titles(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _without_titles(v) for k, v in schema.items() if k != "title" or not isinstance(v, str)}
    if isinstance(schema, list):
        return [_without_titles(v) for v in schema]
    return schema


def _rotation() -> dict[str, Any]:
    numeric_text = {"type": "string", "pattern": r"^\s*[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3})?\s*$"}
    return {
        "type": "object", "additionalProperties": False,
        "properties": {
            "angle": {**FINITE, "default": 0.0, "description": "degrees"},
            "order": {"type": "integer", "minimum": 1, "maximum": 5, "default": 1},
            "mode": {"anyOf": [{"enum": list(ROTATION_MODES)}, FINITE, numeric_text], "default": "0.0",
                     "description": "a scipy fill mode, 'ortho' (quarter turns only), or the fill value"}},
        "if": {"properties": {"mode": {"const": "ortho"}}, "required": ["mode"]},
        "then": {"properties": {"angle": {"multipleOf": 90}}},
    }


def _pipeline_properties() -> dict[str, Any]:
    """What the validators of :class:`PipelineConfig` check, field by field (a value a JSON client can send)."""
    count = {"type": "integer", "minimum": 0, "maximum": MAX_COUNT}
    return {
        "image_background": NAME,
        "image_threshold": FINITE,
        "image_region_of_interest": ROI,
        "image_good_region": {"type": "object", "additionalProperties": False,
                              "properties": {"threshold": FINITE, "gfscale": FINITE}},
        "pipeline_type": {"enum": list(PIPELINE_TYPES), "default": "processing"},
        "camera_name": NAME, "input_pipeline": NAME, "output_pipeline": NAME,
        "input_stream": ADDRESS, "output_stream": ADDRESS, "bsread_address": ADDRESS,
        "stream_timeout": FINITE, "camera_timeout": FINITE, "no_client_timeout": FINITE,
        "rotation": _rotation(),
        "averaging": {"type": "integer", "minimum": -MAX_RUNNING_AVERAGE, "maximum": MAX_AVERAGING,
                      "not": {"const": 0},
                      "description": f"N > 0: one mean of N frames per N frames (N <= {MAX_AVERAGING}); N < 0: "
                                     f"the running mean of the last |N| frames (|N| <= {MAX_RUNNING_AVERAGE})"},
        "max_frame_rate": {"type": "number", "minimum": 0, "maximum": MAX_FRAME_RATE,
                           "description": "Hz; 0 or null: no limit"},
        "downsampling": count, "records": count, "buffer_size": count,
        "input_queue_size": {"type": "integer", "minimum": 1, "maximum": MAX_COUNT},
        "input_catch_up_after": {"type": "number", "minimum": 0, "maximum": 3600},
        "camera_server_timeout": {"type": "number", "minimum": 0, "maximum": 1e300},
        "memory_limit": {"type": "number", "minimum": 0, "maximum": 1e300},
        "processing_threads": {"type": "integer", "minimum": 0, "maximum": MAX_PROCESSING_THREADS},
        "pid_range": {"type": "array", "minItems": 2, "maxItems": 2,
                      "items": {"type": "integer", "minimum": -MAX_PULSE_ID, "maximum": MAX_PULSE_ID}},
        "file": {"type": "string", "pattern": FILE_PATTERN,
                 "description": "HDF5 file (mode FILE): a new file, relative to the server's file folder"},
        # User keys our own processing reads (checked like the fields).
        "pause": {"type": "boolean"},
        "binning_mean": {"type": "boolean"},
        "binning_x": {"type": "integer", "minimum": 1, "maximum": MAX_BINNING},
        "binning_y": {"type": "integer", "minimum": 1, "maximum": MAX_BINNING},
    }


def _pipeline_rules() -> list[dict[str, Any]]:
    """The rules between fields (``PipelineConfig._cross_field``)."""
    present = {"type": ["string", "array", "number", "boolean", "object"]}  # given, and not null

    def given(key: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"properties": {key: schema or present}, "required": [key]}

    needs_input = {"anyOf": [given("camera_name"), given("input_stream"), given("input_pipeline"),
                             {"allOf": [given("pipeline_type", {"const": "stream"}),
                                        {"anyOf": [given("bsread_address"),
                                                   given("bsread_channels", {"type": "array", "minItems": 1})]}]}]}
    return [
        {"if": given("mode", {"const": "FILE"}), "then": given("file")},
        {"if": given("pipeline_type", {"enum": _NO_INPUT}), "else": needs_input},
        {"if": {"allOf": [given("bsread_channels", {"type": "array", "minItems": 1}),
                          {"properties": {"pipeline_type": {"enum": ["processing", None]}}}]},
         "then": given("bsread_address")},
    ]


def pipeline_config_body(change: bool = False) -> dict[str, Any]:
    """A pipeline config as a request sends it: ``null`` is the default of any parameter; keys we do not know are
    user parameters. ``change``: an incremental change of a running instance (any subset of the keys; the result
    of the merge is checked like a new config)."""
    schema = _without_titles(_model_schema(PipelineConfig))
    properties: dict[str, Any] = schema["properties"]
    for key, value in _pipeline_properties().items():
        described = properties.get(key, {})
        extra = {k: described[k] for k in ("default", "description") if k in described}
        properties[key] = {**value, **extra}
    for key, value in list(properties.items()):  # null: the default (camera_timeout: null disables it)
        if value.get("type") != "null" and NULL not in value.get("anyOf", []):
            properties[key] = _nullable({k: v for k, v in value.items() if k not in ("default", "description")})
            properties[key].update({k: value[k] for k in ("default", "description") if k in value})
    schema.pop("description", None)
    schema.pop("required", None)
    if change:
        schema["description"] = ("Only the keys to change (merged into dict-valued parameters); null returns a key to "
                                 "its default. The merged config must be valid as a new one.")
    else:
        schema["description"] = ("A pipeline config: only its input (usually camera_name) is needed, every other key "
                                 f"has a default; null is the default. {sorted(NULL_IS_VALUE)}: null is a value.")
        schema["allOf"] = _pipeline_rules()
    return schema


_DTYPES = sorted({np.dtype(code).name for code in np.typecodes["AllInteger"] + np.typecodes["Float"]
                  if np.dtype(code).itemsize <= 8})


def _camera_properties() -> dict[str, Any]:
    names = {"anyOf": [{"type": "array", "items": NAME}, NAME, NULL], "description": "names (or one name)"}
    return {
        "alias": names, "group": names,
        "dtype": _nullable({"enum": _DTYPES}),
        "roi": _nullable(ROI),
        "no_client_timeout": {**FINITE, "description": "seconds; <= 0 keeps the instance running without clients"},
        "camera_calibration": _nullable({
            "type": "object",
            "properties": {"reference_marker": {"type": "array", "minItems": 4, "maxItems": 4,
                                                "items": {"type": "number", "minimum": -MAX_MARKER,
                                                          "maximum": MAX_MARKER}},
                           "reference_marker_width": {"type": "number", "exclusiveMinimum": 0,
                                                      "maximum": MAX_MARKER_SIZE},
                           "reference_marker_height": {"type": "number", "exclusiveMinimum": 0,
                                                       "maximum": MAX_MARKER_SIZE},
                           "angle_horizontal": {"type": "number", "exclusiveMinimum": -90, "exclusiveMaximum": 90},
                           "angle_vertical": {"type": "number", "exclusiveMinimum": -90, "exclusiveMaximum": 90}}}),
        "connection_timeout": _nullable({"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DOUBLE,
                                         "description": "EPICS: seconds to wait for the camera's PVs"}),
        "frame_rate": _nullable({"type": "number", "exclusiveMinimum": 0, "maximum": MAX_CAMERA_FRAME_RATE}),
    }


def camera_config_body() -> dict[str, Any]:
    """A camera config as a request sends it (the whole config; it replaces the saved one)."""
    schema = _without_titles(_model_schema(CameraConfig))
    properties: dict[str, Any] = schema["properties"]
    for key, value in _camera_properties().items():
        described = properties.get(key, {})
        properties[key] = {**value, **{k: described[k] for k in ("default",) if k in described}}
    not_blank = {"not": {"anyOf": [NULL, {"type": "string", "pattern": r"^\s*$"}]}}
    properties["name"] = {"description": "ignored: the camera is the one the URL names"}
    properties["source"] = {**not_blank, "description": "PV prefix (epics, area_detector), stream address or PV "
                                                        "prefix (bsread), anything (simulation)"}
    schema["required"] = ["source", "source_type"]
    schema["description"] = "One camera. ``source`` meaning depends on ``source_type``."
    schema["allOf"] = [
        {"if": {"properties": {"source_type": {"const": "bsread"}}},
         "then": {"properties": {"source": {"anyOf": [ADDRESS, PV_PREFIX]}}}},
        {"if": {"properties": {"source_type": {"enum": ["epics", "area_detector"]}}},
         "then": {"properties": {"source": {"type": "string"}}}},
        {"if": {"properties": {"source_type": {"const": "simulation"}}},
         "then": {"properties": {"size_x": _nullable({"type": "integer", "maximum": MAX_SIMULATED_SIDE}),
                                 "size_y": _nullable({"type": "integer", "maximum": MAX_SIMULATED_SIDE})}}},
    ]
    return schema


@cache
def body_schemas() -> dict[str, dict[str, Any]]:
    """The request body schemas by component name (built once)."""
    return {"PipelineConfigBody": pipeline_config_body(), "PipelineConfigChange": pipeline_config_body(change=True),
            "CameraConfigBody": camera_config_body()}


# Path and query parameters, by name (the handlers check them; FastAPI only passes them on).
PARAMETERS: dict[str, dict[str, Any]] = {
    "camera_name": NAME, "pipeline_name": NAME, "instance_id": NAME, "background_name": NAME,
    "script_name": NAME, "group": NAME, "name": NAME,
    "n_images": {"type": "integer", "minimum": 1, "maximum": MAX_N_IMAGES, "default": 10,
                 "description": "images to average"},
    "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_FRAME_TIMEOUT, "default": FRAME_TIMEOUT,
                "description": "seconds to wait for a frame"},
    "scale": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_SCALE,
              "description": f"picture size / image size (a picture has at most {MAX_OUTPUT_PIXELS} pixels)"},
    "min_value": FINITE, "max_value": FINITE,
    "colormap": {"enum": [*COLORMAPS, "grey", "grey_r", "greys"], "default": "gray"},
}


def document_parameters(document: dict[str, Any]) -> None:
    """Give the path and query parameters of ``document`` the schemas of :data:`PARAMETERS` (in place)."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else ():
                schema = PARAMETERS.get(parameter.get("name"))
                if schema is not None:
                    described = parameter.get("schema", {})
                    parameter["schema"] = {**schema, **{k: described[k] for k in ("description",) if k in described}}
