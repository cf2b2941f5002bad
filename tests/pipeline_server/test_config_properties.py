"""Property tests (hypothesis) of pipeline config validation (issue 10, "Prove it").

Configs are JSON-like dicts as REST clients send them: the documented keys with values that are right, nearly right
(wrong case, wrong type, out of range, huge, NaN, fractions) or any JSON value, plus user keys. Properties:

* ``expand_config`` either returns a config or raises ``InvalidConfig``, never another exception (a 500);
* an expanded config is a fixed point: expanding it again, also after a JSON round trip (what the server stores and
  reads back), gives it unchanged, key order included; an empty update changes nothing;
* ``update_config`` of a valid config with any update either gives a valid config (again a fixed point) or
  ``InvalidConfig``.

Derandomized, bounded (``max_examples``), no example database: the same examples on every run and in CI.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cam_server.common.errors import InvalidConfig
from cam_server.pipeline.config import FIELDS, expand_config, parse_pipeline_config, update_config
from cam_server.pipeline.registry import PIPELINE_TYPES

pytestmark = pytest.mark.unit

SETTINGS = settings(max_examples=600, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
           | st.text(max_size=12))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)
NUMBERS = st.sampled_from([0, 1, -1, 5, 5.0, 2.5, -0.5, 1e-9, 1e308, 2**31 - 1, 2**31, 2**63, 2**100, float("nan"),
                           float("inf"), -float("inf"), True, False, "5", None])
WORDS = st.sampled_from([
    "PUB", "pub", "PUSH", "FILE", "file", "SUB", "PULL", "once", "always", "on_change", "DEFAULT", "flat", "passive",
    "signed", "vertical", "horizontal", "reflect", "ortho", "nearest", "0.5", "simulation", "test_camera", "a/b",
    "../x", "", " ", "tcp://127.0.0.1:9000", "ipc:///tmp/x.ipc", "tcp://host", "tcp://:1", "out.h5", "/tmp/out.h5",
    "function.py", *PIPELINE_TYPES])
LISTS = st.sampled_from([[0, 10, 0, 10], [0, 0, 0, 0], [-1, 5, 0, 5], [1.0, 2.0, 3.0, 4.0], [1.5, 2, 3, 4],
                         [1, 2], [100, 50], [2**63, 2**63 + 1], ["a", "b"], ["x"], [], [None], [True, 1, 2, 3]])
BLOCKS = st.sampled_from([{}, {"threshold": 0.3}, {"gfscale": 2, "threshold": 0.5}, {"number_of_slices": 3},
                          {"number_of_slices": 0}, {"orientation": "horizontal", "scale": 1.5}, {"angle": 90},
                          {"angle": 45, "mode": "ortho"}, {"angle": 90, "mode": "ortho", "order": 1},
                          {"order": 9}, {"mode": "1.5"}, {"mode": float("nan")}, {"unknown": 1}, {"threshold": True}])
NEAR = NUMBERS | WORDS | LISTS | BLOCKS | st.booleans()
VALUES = NEAR | NEAR | JSON_VALUES  # nearly right twice as often as anything


@st.composite
def configs(draw: Any) -> dict[str, Any]:
    """A config dict: usually an input, a few documented keys, sometimes user keys and the background alias."""
    config: dict[str, Any] = {}
    if draw(st.integers(0, 3)):
        config["camera_name"] = draw(st.sampled_from(["simulation", "test_camera"]))
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        config[key] = draw(VALUES)
    if draw(st.integers(0, 9)) == 0:
        config["background_id"] = draw(VALUES)
    for key in draw(st.lists(st.text(max_size=10), max_size=2)):
        config[key] = draw(VALUES)
    order = draw(st.permutations(list(config)))
    return {key: config[key] for key in order}


def _text(config: dict[str, Any]) -> str:
    """Comparable form, key order included (NaN in a user key is equal to itself here)."""
    return json.dumps(config)


def _expand(config: dict[str, Any]) -> dict[str, Any] | None:
    """The expanded config, or None when ``InvalidConfig`` (the only error allowed) refused it."""
    try:
        expanded = expand_config(config)
    except InvalidConfig as exc:
        assert str(exc).startswith("Invalid pipeline config"), str(exc)
        event("refused")
        return None
    event("valid")
    return expanded


def _check_fixed_point(expanded: dict[str, Any]) -> None:
    assert _text(expand_config(expanded)) == _text(expanded)
    assert _text(expand_config(json.loads(json.dumps(expanded)))) == _text(expanded)
    assert _text(update_config(expanded, {})) == _text(expanded)
    parse_pipeline_config(expanded)  # what an instance gets


@SETTINGS
@given(configs())
def test_expand_config_validates_or_refuses(config: dict[str, Any]) -> None:
    expanded = _expand(config)
    if expanded is not None:
        _check_fixed_point(expanded)


@settings(SETTINGS, max_examples=300)
@given(configs(), configs())
def test_update_config_validates_or_refuses(config: dict[str, Any], update: dict[str, Any]) -> None:
    current = _expand(config) or expand_config({"camera_name": "simulation"})
    try:
        updated = update_config(current, update)
    except InvalidConfig as exc:
        assert str(exc).startswith("Invalid pipeline config"), str(exc)
        event("update refused")
        return
    event("update valid")
    _check_fixed_point(updated)


@settings(SETTINGS, max_examples=200)
@given(JSON_VALUES)
def test_any_json_value(value: Any) -> None:
    """Not even a dict (a list, a number, a string body): refused with InvalidConfig."""
    expanded = _expand(value)
    if expanded is not None:
        _check_fixed_point(expanded)


def test_update_keeps_the_key_order() -> None:
    """What the properties found: a parameter set back to its default (and the derived mode, block and input_mode)
    kept its value but moved to the end of the config."""
    expanded = expand_config({"camera_name": "simulation", "queue_size": 5, "user_key": 1})
    assert list(update_config(expanded, {})) == list(expanded)
    assert list(update_config(expanded, {"queue_size": None, "user_key": None})) == list(expanded)
    assert list(update_config(expanded, {"mode": "PUSH"})) == list(expanded)
