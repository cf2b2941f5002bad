"""Loading the golden bsread fixtures (/work/shared/fixtures/bsread) for the tests."""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = next((p for p in (ROOT.parent / "shared" / "fixtures" / "bsread",
                             Path("/work/shared/fixtures/bsread")) if (p / "manifest.json").exists()),
                Path("/work/shared/fixtures/bsread"))


@cache
def manifest() -> dict[str, Any]:
    return json.loads((FIXTURES / "manifest.json").read_text())


def streams(origin: str | None = None) -> list[dict[str, Any]]:
    return [s for s in manifest()["streams"] if origin is None or s["origin"] == origin]


def message_frames(message: dict[str, Any]) -> list[bytes]:
    folder = FIXTURES / message["dir"]
    return [(folder / f"part_{i:02d}.bin").read_bytes() for i in range(message["n_parts"])]


def expected_value(message: dict[str, Any], desc: dict[str, Any]) -> Any:
    """The Python value described by a manifest ``<value>`` entry."""
    kind = desc["kind"]
    if kind == "none":
        return None
    if kind in ("string", "json"):
        return desc["value"]
    if kind == "scalar":
        return np.dtype(desc["dtype"]).type(desc["value"])
    if kind == "array":
        return np.load(FIXTURES / message["dir"] / desc["file"])
    raise AssertionError(f"unknown value kind {kind}")


def sender_input(message: dict[str, Any], desc: dict[str, Any]) -> Any:
    """The Python value that was handed to the real sender."""
    kind = desc["python_type"]
    if kind == "NoneType":
        return None
    if kind in ("int", "float", "str", "list"):
        return desc["value"]
    if kind == "numpy.ndarray":
        return np.load(FIXTURES / message["dir"] / desc["file"])
    if kind.startswith("numpy."):
        return getattr(np, kind.split(".", 1)[1])(desc["value"])
    raise AssertionError(f"unknown python_type {kind}")


def assert_same_value(actual: Any, expected: Any, where: str) -> None:
    """Equality including dtype (byte order too) and NaN positions."""
    if expected is None:
        assert actual is None, f"{where}: expected None, got {actual!r}"
        return
    if isinstance(expected, str):
        assert isinstance(actual, str) and actual == expected, f"{where}: {actual!r} != {expected!r}"
        return
    if isinstance(expected, np.ndarray):
        assert isinstance(actual, np.ndarray), f"{where}: expected array, got {type(actual).__name__}"
        assert actual.dtype == expected.dtype and actual.dtype.str == expected.dtype.str, \
            f"{where}: dtype {actual.dtype.str} != {expected.dtype.str}"
        assert actual.shape == expected.shape, f"{where}: shape {actual.shape} != {expected.shape}"
        assert np.array_equal(actual, expected, equal_nan=expected.dtype.kind == "f"), f"{where}: values differ"
        return
    assert isinstance(actual, np.generic) and not isinstance(actual, np.ndarray), \
        f"{where}: expected numpy scalar, got {type(actual).__name__}"
    assert actual.dtype == expected.dtype, f"{where}: dtype {actual.dtype} != {expected.dtype}"
    if expected.dtype.kind == "f" and math.isnan(float(expected)):
        assert math.isnan(float(actual)), f"{where}: expected NaN"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"
