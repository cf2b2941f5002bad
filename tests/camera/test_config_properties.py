"""Property tests (hypothesis) of camera config validation (issue 10, "Prove it").

Camera configs as REST clients and hand-edited files give them: the documented keys with values that are right,
nearly right (wrong type, out of range, huge, NaN, odd numpy dtype spellings) or any JSON value, plus user keys.
Properties:

* ``parse_camera_config`` either returns a config or raises ``InvalidConfig``, never another exception (a 500 on
  save, or a camera that fails only when it streams);
* a parsed config is a fixed point: parsing its ``to_dict()`` again, also after a JSON round trip (what the store
  writes and reads back), gives the same dict.

Derandomized, bounded (``max_examples``), no example database: the same examples on every run and in CI.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cam_server.camera.config import CameraConfig, parse_camera_config
from cam_server.common.errors import InvalidConfig

pytestmark = pytest.mark.unit

SETTINGS = settings(max_examples=600, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

KEYS = tuple(CameraConfig.model_fields) + ("connection_timeout",)
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
           | st.text(max_size=12))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)
NUMBERS = st.sampled_from([0, 1, -1, 5, 5.0, 2.5, 90, 1e-9, 1e308, 65536, 65537, 2**31, 2**63, 2**100,
                           float("nan"), float("inf"), True, False, "5", None])
WORDS = st.sampled_from([
    "simulation", "bsread", "epics", "area_detector", "tcp", "ipc", "PULL", "SUB", "push", "tcp://127.0.0.1:9999",
    "ipc:///tmp/cam.ipc", "tcp://host", "SARES20-CAMS142-M1", "PV PREFIX", "", " ", "a/b", "cam", "raw",
    "static_beam", "uint16", "uint8", "int32", "float32", "float64", "<u2", ">f8", "bool", "complex64", "float128",
    "S5", "U3", "O", "V8", "i4,", "i4,i4", "2i4", "(2,3)f4", "datetime64", "\x00", "f2"])
LISTS = st.sampled_from([[0, 10, 0, 10], [0, 0, 0, 0], [-1, 5, 0, 5], [1.5, 2, 3, 4], [0, 10, 0], [], ["a"],
                         ["cam", "other"], [None], [["a", "i4"]], [0, 0, 100, 100]])
DICTS = st.sampled_from([{}, {"reference_marker": [0, 0, 100, 100]}, {"reference_marker": [0, 0, 100]},
                         {"reference_marker_width": 0}, {"angle_horizontal": True}, {"angle_vertical": "x"},
                         {"names": ["a"], "formats": ["i4"]}, {"names": ["a", "a"], "formats": ["i4", "i4"]},
                         {"names": ["a"], "formats": ["i4"], "offsets": "x"}, {"names": 5}])
NEAR = NUMBERS | WORDS | LISTS | DICTS | st.booleans()
VALUES = NEAR | NEAR | JSON_VALUES  # nearly right twice as often as anything


@st.composite
def configs(draw: Any) -> dict[str, Any]:
    """A camera config dict: usually a source type and a source, a few documented keys, sometimes user keys."""
    config: dict[str, Any] = {}
    if draw(st.integers(0, 3)):
        kind = draw(st.sampled_from(["simulation", "bsread", "epics", "area_detector"]))
        config["source_type"] = kind
        config["source"] = {"simulation": "simulation", "bsread": "tcp://127.0.0.1:9999"}.get(kind, "PREFIX:CAM")
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=4, unique=True)):
        config[key] = draw(VALUES)
    for key in draw(st.lists(st.text(max_size=10), max_size=2)):
        config[key] = draw(VALUES)
    return config


def _parse(config: Any, name: str | None = None) -> dict[str, Any] | None:
    """``to_dict()`` of the parsed config, or None when ``InvalidConfig`` (the only error allowed) refused it."""
    try:
        parsed = parse_camera_config(config, name).to_dict()
    except InvalidConfig as exc:
        assert "amera config" in str(exc), str(exc)
        event("refused")
        return None
    event("valid")
    return parsed


def _check_fixed_point(parsed: dict[str, Any], name: str | None) -> None:
    text = json.dumps(parsed)
    assert json.dumps(parse_camera_config(parsed, name).to_dict()) == text
    assert json.dumps(parse_camera_config(json.loads(text), name).to_dict()) == text


@SETTINGS
@given(configs(), st.sampled_from([None, "cam"]))
def test_parse_camera_config_validates_or_refuses(config: dict[str, Any], name: str | None) -> None:
    parsed = _parse(config, name)
    if parsed is not None:
        _check_fixed_point(parsed, name)


@settings(SETTINGS, max_examples=200)
@given(JSON_VALUES)
def test_any_json_value(value: Any) -> None:
    """Not even a dict (a list, a number, a string): refused with InvalidConfig."""
    parsed = _parse(value)
    if parsed is not None:
        _check_fixed_point(parsed, None)
