"""PNG rendering and raw image payloads (no server)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from cam_server.camera.render import COLORMAPS, colormap_lut, image_bytes_payload, render_png, to_levels
from cam_server.common.errors import CamServerError

pytestmark = pytest.mark.unit


def test_levels_map_the_range_linearly() -> None:
    image = np.array([[0, 100], [200, 300]], dtype=np.uint16)
    np.testing.assert_array_equal(to_levels(image), [[0, 85], [170, 255]])
    np.testing.assert_array_equal(to_levels(image, min_value=100, max_value=200), [[0, 0], [255, 255]])
    np.testing.assert_array_equal(to_levels(np.full((2, 2), 7)), np.zeros((2, 2)))


@pytest.mark.parametrize("name", COLORMAPS)
def test_colormaps_are_256_rgb_entries(name: str) -> None:
    lut = colormap_lut(name)
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert len({tuple(row) for row in lut}) > 100


def test_png_gray_values_and_scale() -> None:
    image = np.array([[0, 65535], [0, 65535]], dtype=np.uint16)
    picture = Image.open(io.BytesIO(render_png(image)))
    assert picture.size == (2, 2)
    np.testing.assert_array_equal(np.asarray(picture)[0], [[0, 0, 0], [255, 255, 255]])
    assert Image.open(io.BytesIO(render_png(image, scale=3, colormap="hot"))).size == (6, 6)
    with pytest.raises(CamServerError, match="Unknown colormap 'nope'"):
        render_png(image, colormap="nope")
    with pytest.raises(CamServerError, match="Invalid scale 0"):
        render_png(image, scale=0)


def test_image_bytes_payload_round_trip() -> None:
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    payload = image_bytes_payload(image, {"pulse_id": np.int64(5), "timestamp": np.float64(1.5)})
    assert payload["shape"] == [3, 4] and payload["dtype"] == "uint16" and payload["pulse_id"] == 5
    decoded = np.frombuffer(base64.b64decode(payload["bytes"]), payload["dtype"]).reshape(payload["shape"])
    np.testing.assert_array_equal(decoded, image)
