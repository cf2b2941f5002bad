"""Pure conversion and config rules of the EPICS source (no Channel Access involved)."""

from __future__ import annotations

import numpy as np
import pytest

from cam_server.camera.sources.epics import EpicsCameraSource, to_camera_dtype
from cam_server.common.errors import InvalidConfig

pytestmark = pytest.mark.unit


def test_same_dtype_is_not_copied():
    data = np.arange(10, dtype=np.uint16)
    out, clipped = to_camera_dtype(data, np.dtype("uint16"))
    assert out is data and not clipped


def test_int16_wire_reinterpreted_as_uint16():
    camera = np.array([0, 1, 32767, 32768, 40000, 65535], dtype=np.uint16)
    out, clipped = to_camera_dtype(camera.view(np.int16), np.dtype("uint16"))
    assert out.dtype == np.uint16 and np.array_equal(out, camera) and not clipped
    assert np.shares_memory(out, camera)  # a view, no copy


def test_int32_wire_converted_with_saturation():
    out, clipped = to_camera_dtype(np.array([0, 40000, 65535], dtype=np.int32), np.dtype("uint16"))
    assert out.tolist() == [0, 40000, 65535] and not clipped
    out, clipped = to_camera_dtype(np.array([-5, 70000, 12], dtype=np.int32), np.dtype("uint16"))
    assert out.tolist() == [0, 65535, 12] and clipped


def test_float_wire_to_integer_saturates_non_finite():
    out, clipped = to_camera_dtype(np.array([1.0, np.nan, np.inf, -np.inf, 300.0]), np.dtype("uint8"))
    assert out.tolist() == [1, 0, 255, 0, 255] and clipped


@pytest.mark.parametrize(("config", "message"), [
    ({}, "'source' must be the PV prefix"),
    ({"source": "  "}, "'source' must be the PV prefix"),
    ({"source": "X", "dtype": "nonsense"}, "'dtype' 'nonsense' is not a numpy dtype"),
    ({"source": "X", "dtype": "str"}, "must be an integer or float type"),
    ({"source": "X", "connection_timeout": 0}, "'connection_timeout' must be a positive number"),
    ({"source": "X", "connection_timeout": "1"}, "'connection_timeout' must be a positive number"),
])
def test_bad_config_is_named(config, message):
    with pytest.raises(InvalidConfig, match=message):
        EpicsCameraSource(config)


def test_defaults():
    source = EpicsCameraSource({"source": "P:X"})
    assert source.dtype == np.uint16 and source.connection_timeout == 5.0
    assert source.geometry() == (0, 0) and not source.connected and source.read(0.01) is None
    assert "not connected" in source.status
    source.close()  # closing a never-connected source is harmless
