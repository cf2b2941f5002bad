"""What a view is sent of a frame (cam_server.rest.view.frames): binning, levels, overlay coordinates, the message
format. Pure numpy, no server."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from cam_server.rest.view.frames import (
    ViewRequest,
    ViewRequestError,
    axis_to_pixel,
    bin_region,
    frame_from_values,
    probe,
    render_view,
    visible_region,
    width_to_pixels,
)

pytestmark = pytest.mark.unit


def decode(message: bytes) -> tuple[dict, np.ndarray]:
    length = struct.unpack("<I", message[:4])[0]
    header = json.loads(message[4:4 + length])
    pixels = np.frombuffer(message[4 + length:], dtype=np.uint8)
    if "width" in header:
        pixels = pixels.reshape(header["height"], header["width"])
    return header, pixels


@pytest.mark.parametrize(("bx", "by"), [(1, 1), (2, 3), (3, 2), (4, 4)])
def test_bin_region_is_the_block_mean(bx: int, by: int) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, size=(50, 61), dtype=np.uint16)
    x0, y0, w, h = 3, 5, 55, 41
    rows, cols = h // by, w // bx
    expected = image[y0:y0 + rows * by, x0:x0 + cols * bx].astype(np.float64)
    expected = expected.reshape(rows, by, cols, bx).mean(axis=(1, 3))
    np.testing.assert_allclose(bin_region(image, x0, y0, w, h, bx, by), expected, rtol=1e-6)


def test_the_whole_image_is_binned_down_to_the_canvas() -> None:
    image = np.arange(2160 * 2560, dtype=np.uint32).reshape(2160, 2560) % 4096
    frame = frame_from_values(7, 123, 1.5, {"image": image.astype(np.uint16)})
    header, pixels = decode(render_view(frame, ViewRequest(width=1280, height=800)))
    assert header["bin"] == [2, 3]
    assert (header["width"], header["height"]) == (1280, 720)
    assert pixels.shape == (720, 1280) and pixels.max() > 200
    assert header["region"] == [0, 0, 2560, 2160]
    assert header["seq"] == 7 and header["pulse_id"] == 123 and header["timestamp"] == 1.5


def test_a_zoomed_region_at_full_resolution_with_manual_levels() -> None:
    image = np.zeros((100, 200), dtype=np.uint16)
    image[40, 60] = 1000
    frame = frame_from_values(1, 1, None, {"image": image})
    request = ViewRequest.from_message({"type": "view", "x": 50, "y": 30, "w": 20, "h": 20, "width": 400,
                                        "height": 400, "min": 0, "max": 500})
    header, pixels = decode(render_view(frame, request))
    assert header["bin"] == [1, 1] and header["region"] == [50, 30, 20, 20]
    assert pixels[10, 10] == 255 and pixels.sum() == 255  # clipped to the manual maximum
    assert header["levels"] == [0.0, 500.0]


def test_visible_region_is_clamped_to_the_image() -> None:
    assert visible_region(100, 50, ViewRequest(x=90, y=40, w=30, h=30)) == (90, 40, 10, 10)
    assert visible_region(100, 50, ViewRequest()) == (0, 0, 100, 50)


def test_bad_view_requests_are_refused() -> None:
    with pytest.raises(ViewRequestError, match="rate"):
        ViewRequest.from_message({"rate": 0})
    with pytest.raises(ViewRequestError, match="min"):
        ViewRequest.from_message({"min": "low"})
    assert ViewRequest.from_message({"rate": 1000, "width": 10**9}).rate == 60.0


def test_calibrated_values_become_pixel_coordinates() -> None:
    axis = np.linspace(-1.0, 1.0, 201)  # 0.01 per pixel
    assert axis_to_pixel(axis, 0.0) == pytest.approx(100.0)
    assert axis_to_pixel(axis[::-1].copy(), 0.5) == pytest.approx(50.0)  # descending axis
    assert width_to_pixels(axis, 0.05) == pytest.approx(5.0)
    assert axis_to_pixel(None, 12.5) == 12.5
    assert axis_to_pixel(axis, float("nan")) is None


def test_overlays_and_values_of_a_processed_message() -> None:
    image = np.ones((20, 30), dtype=np.uint16)
    x_axis = np.arange(30, dtype=np.float32) * 2.0 + 10.0  # calibrated: 2 units per pixel from 10
    y_axis = np.arange(20, dtype=np.float32)
    data = {
        "image": image, "x_axis": x_axis, "y_axis": y_axis, "x_center_of_mass": 30.0, "y_center_of_mass": 7.25,
        "x_fit_mean": 32.0, "y_fit_mean": 7.0, "x_fit_standard_deviation": 4.0, "y_fit_standard_deviation": 2.0,
        "good_region": np.array([2, 3, 25, 18]), "slice_orientation": "vertical", "slice_length": np.float32(2.0),
        "slice_0_center_x": 30.0, "slice_0_center_y": np.float32(5.0), "slice_0_standard_deviation": 6.0,
        "slice_0_intensity": np.uint64(7), "intensity": np.int64(600), "x_fit_amplitude": float("nan"),
        "x_profile": image.sum(axis=0), "y_profile": image.sum(axis=1),
        "processing_parameters": json.dumps({"image_region_of_interest": [5, 30, 6, 20], "image_threshold": 1.5,
                                             "camera_name": "c"}),
    }
    frame = frame_from_values(1, 9, None, data)
    assert frame.overlays["center_of_mass"] == [pytest.approx(10.0), pytest.approx(7.25)]
    assert frame.overlays["fit"] == [pytest.approx(11.0), pytest.approx(7.0), pytest.approx(2.0), pytest.approx(2.0)]
    assert frame.overlays["good_region"] == [2, 3, 25, 18]
    assert frame.overlays["roi"] == [5, 30, 6, 20]
    assert frame.overlays["slices"] == {"orientation": "vertical", "length": pytest.approx(2.0),
                                        "items": [[pytest.approx(10.0), pytest.approx(5.0), pytest.approx(3.0)]]}
    assert frame.parameters == {"image_region_of_interest": [5, 30, 6, 20], "image_threshold": 1.5}
    assert frame.values["intensity"] == 600 and frame.values["x_fit_amplitude"] is None
    assert "processing_parameters" not in frame.values and "image" not in frame.values
    header, _ = decode(render_view(frame, ViewRequest(width=15, height=10)))
    assert header["profiles"]["x"] == {"scale": [20.0, 20.0], "profile": [0] * 15}  # binned by 2, flat
    assert probe(frame, 3, 4) == {"type": "probe", "x": 3, "y": 4, "pulse_id": 9, "value": 1, "x_cal": 16.0,
                                  "y_cal": 4.0}
    assert probe(frame, 30, 4)["value"] is None


def test_a_message_without_image_has_values_only() -> None:
    header, pixels = decode(render_view(frame_from_values(1, 2, None, {"value": 3.0}), ViewRequest()))
    assert header["values"] == {"value": 3.0} and "width" not in header and pixels.size == 0
