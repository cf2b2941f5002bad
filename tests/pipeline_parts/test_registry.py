"""The registry of pipeline types is the one list: config validation, the instance entry point and the docs read
it."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from cam_server.common.errors import InvalidConfig
from cam_server.pipeline.config import expand_config
from cam_server.pipeline.registry import DEFAULT_TYPE, PIPELINE_TYPES

pytestmark = pytest.mark.unit
DOC = Path(__file__).resolve().parents[2] / "docs" / "pipeline_types.md"


def test_the_docs_table_is_the_registry():
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| `")]
    documented = {}
    for row in rows[:len(PIPELINE_TYPES) + 5]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) == 4 and cells[3].startswith("`types/"):
            documented[cells[0].split("`")[1]] = cells
    assert list(documented) == list(PIPELINE_TYPES)
    for name, kind in PIPELINE_TYPES.items():
        cells = documented[name]
        assert cells[1:] == [kind.input, kind.sends, f"`types/{kind.module}.py`"]
        assert ("(default)" in cells[0]) == (name == DEFAULT_TYPE)


@pytest.mark.parametrize("name", list(PIPELINE_TYPES))
def test_every_type_has_its_runner_or_handler(name):
    kind = PIPELINE_TYPES[name]
    module = importlib.import_module(kind.module_path)
    if kind.run is None:
        assert callable(module.make_handler)
    else:
        assert callable(getattr(module, kind.run))


@pytest.mark.parametrize("name", list(PIPELINE_TYPES))
def test_validation_and_defaults_follow_the_registry(name):
    kind = PIPELINE_TYPES[name]
    config = {"pipeline_type": name} if not kind.needs_input else {"pipeline_type": name, "camera_name": "cam"}
    expanded = expand_config(config)
    assert expanded["mode"] == kind.output_mode and expanded["input_mode"] == kind.input_mode
    assert expanded["block"] is (kind.output_mode == "PUSH")
    if kind.needs_input:
        with pytest.raises(InvalidConfig, match=f"camera_name is required for pipeline_type '{name}'"):
            expand_config({"pipeline_type": name})


def test_unknown_type_lists_the_registry():
    with pytest.raises(InvalidConfig, match="unknown pipeline_type 'nope'; use one of " + ", ".join(PIPELINE_TYPES)):
        expand_config({"pipeline_type": "nope", "camera_name": "cam"})
