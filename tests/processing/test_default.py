from __future__ import annotations

import json

import numpy as np
import pytest

from cam_server.processing.default import preprocess_frame, process_image, transparent
from cam_server.processing.simulation import SimulatedBeam
from tests.processing.conftest import gaussian_image

pytestmark = pytest.mark.unit

CHANNELS = [
    ("x_axis", np.float32, (200,)), ("y_axis", np.float32, (150,)), ("image", np.uint16, (150, 200)),
    ("width", int, None), ("height", int, None), ("timestamp", float, None),
    ("min_value", np.uint16, None), ("max_value", np.uint16, None),
    ("x_profile", np.int64, (200,)), ("y_profile", np.int64, (150,)), ("intensity", np.int64, None),
    ("x_fwhm", np.float32, None), ("y_fwhm", np.float32, None), ("processing_parameters", str, None),
    ("x_center_of_mass", float, None), ("x_rms", float, None), ("y_center_of_mass", float, None),
    ("y_rms", float, None),
    ("x_fit_gauss_function", np.float32, (200,)), ("x_fit_offset", float, None), ("x_fit_amplitude", float, None),
    ("x_fit_standard_deviation", float, None), ("x_fit_mean", float, None),
    ("y_fit_gauss_function", np.float32, (150,)), ("y_fit_offset", float, None), ("y_fit_amplitude", float, None),
    ("y_fit_standard_deviation", float, None), ("y_fit_mean", float, None),
]


def _axes(image):
    return np.arange(image.shape[1], dtype=np.float32), np.arange(image.shape[0], dtype=np.float32)


def test_all_28_channels_in_order_with_dtypes_and_shapes(spot):
    x_axis, y_axis = _axes(spot)
    out = process_image(spot, 7, (1700000000, 500_000_000), x_axis, y_axis, {"camera_name": "sim"})
    assert list(out) == [name for name, _, _ in CHANNELS]
    for name, kind, shape in CHANNELS:
        value = out[name]
        if kind in (int, float, str):
            assert type(value) is kind, name
        else:
            assert value.dtype == kind, name
        if shape is not None:
            assert value.shape == shape, name


def test_channel_values_of_a_known_gaussian(spot):
    x_axis, y_axis = _axes(spot)
    out = process_image(spot, 7, (1700000000, 500_000_000), x_axis, y_axis, {"camera_name": "sim"})
    assert out["width"] == 200 and out["height"] == 150
    assert out["timestamp"] == pytest.approx(1700000000.5)
    assert out["intensity"] == int(spot.astype(np.int64).sum())
    assert out["max_value"] == spot.max() and out["min_value"] == 100
    assert out["x_fit_mean"] == pytest.approx(90.3, abs=0.02)
    assert out["y_fit_mean"] == pytest.approx(70.6, abs=0.02)
    assert out["x_fit_standard_deviation"] == pytest.approx(12.0, rel=2e-3)
    assert out["y_fit_standard_deviation"] == pytest.approx(6.0, rel=2e-3)
    # FWHM is sample based: 2.355·σ within a pixel or two
    assert abs(out["x_fwhm"] - 2.3548 * 12) <= 2 and abs(out["y_fwhm"] - 2.3548 * 6) <= 2
    # centre of mass is biased towards the middle by the flat offset but close to the spot
    assert out["x_center_of_mass"] == pytest.approx(90.3, abs=3)
    assert json.loads(out["processing_parameters"]) == {"camera_name": "sim"}


def test_processing_parameters_drop_the_passive_background():
    image = gaussian_image()
    x_axis, y_axis = _axes(image)
    params = {"image_background_enable": "passive"}
    image, x_axis, y_axis = preprocess_frame(image, x_axis, y_axis, params, np.ones_like(image))
    assert params["background_data"].shape == image.shape
    out = transparent(image, 1, (0, 0), x_axis, y_axis, params)
    assert list(out) == ["x_axis", "y_axis", "image", "width", "height", "timestamp", "processing_parameters"]
    assert json.loads(out["processing_parameters"]) == {"image_background_enable": "passive"}


def test_good_region_and_slices_channels(spot):
    x_axis, y_axis = _axes(spot)
    params = {"image_good_region": {"threshold": 0.3, "gfscale": 1.8},
              "image_slices": {"number_of_slices": 4, "scale": 2.0, "orientation": "vertical"}}
    out = process_image(spot, 1, (0, 0), x_axis, y_axis, params)
    xs, ys, xe, ye = out["good_region"]
    assert out["good_region"].dtype == np.int64
    assert xs < 90 < xe and ys < 70 < ye
    assert out["gr_x_axis"].shape == (xe - xs,) and out["gr_y_profile"].shape == (ye - ys,)
    assert out["gr_intensity"] == int(spot[ys:ye, xs:xe].astype(np.int64).sum())
    assert out["gr_x_fit_mean"] == pytest.approx(90.3, abs=0.05)
    assert out["slice_amount"] == 5 and out["slice_orientation"] == "vertical"
    for i in range(5):
        assert out[f"slice_{i}_center_x"] == pytest.approx(90.3, abs=0.05)
        assert out[f"slice_{i}_standard_deviation"] == pytest.approx(12.0, rel=5e-3)
        assert out[f"slice_{i}_intensity"].dtype == np.uint64
    centers_y = [out[f"slice_{i}_center_y"] for i in range(5)]
    assert centers_y == sorted(centers_y)
    assert abs(out["coupling"]) < 1e-3  # untilted beam


def test_good_region_threshold_above_one_gives_all_none(spot):
    x_axis, y_axis = _axes(spot)
    out = process_image(spot, 1, (0, 0), x_axis, y_axis, {"image_good_region": {"threshold": 99999},
                                                           "image_slices": {}})
    assert out["good_region"] is None and out["gr_intensity"] is None
    assert out["slice_amount"] == 1 and out["slice_0_center_x"] is None and out["coupling"] is None


def test_coupling_sign_follows_the_beam_tilt():
    rows, cols = np.mgrid[0:200, 0:200].astype(np.float64)
    results = {}
    for tilt in (0.3, -0.3):
        # centre row moves with the column: y = 100 + tilt·(x − 100)
        image = 100 + 40000 * np.exp(-((cols - 100) ** 2) / (2 * 20**2)
                                     - ((rows - 100 - tilt * (cols - 100)) ** 2) / (2 * 4**2))
        image = image.astype(np.uint16)
        x_axis, y_axis = _axes(image)
        out = process_image(image, 1, (0, 0), x_axis, y_axis,
                            {"image_good_region": {}, "image_slices": {"number_of_slices": 7,
                                                                       "orientation": "horizontal"}})
        results[tilt] = out
        assert out["coupling_slope"] == pytest.approx(tilt, abs=0.05)
    assert results[0.3]["coupling"] > 0 > results[-0.3]["coupling"]


def test_all_zero_image_gives_nan_moments():
    image = np.zeros((20, 30), dtype=np.uint16)
    x_axis, y_axis = _axes(image)
    out = process_image(image, 1, (0, 0), x_axis, y_axis, {})
    assert np.isnan(out["x_center_of_mass"]) and np.isnan(out["y_rms"])
    assert out["x_fit_amplitude"] == 0.0


def test_preprocess_order_binning_background_roi_threshold():
    image = np.arange(48, dtype=np.uint16).reshape(6, 8) * 10
    x_axis, y_axis = _axes(image)
    background = np.full((3, 4), 20, dtype=np.uint16)
    params = {"binning_x": 2, "binning_y": 2, "image_background_enable": True,
              "image_region_of_interest": [1, 2, 1, 5], "image_threshold": 500.5}
    out, xa, ya = preprocess_frame(image, x_axis, y_axis, params, background)
    binned = image.reshape(3, 2, 4, 2).sum(axis=(1, 3)).astype(np.int64) - 20
    expected = binned[0:3, 1:3]  # size_y 5 clamps to 3 rows, so offset_y 1 clamps to 0
    expected[expected < 500.5] = 0
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(xa, [2.5, 4.5])
    np.testing.assert_array_equal(ya, [0.5, 2.5, 4.5])
    assert not np.shares_memory(out, image)


def test_preprocess_ortho_rotation_remaps_axes():
    image = np.arange(6, dtype=np.uint16).reshape(2, 3)
    x_axis = np.array([10, 11, 12], dtype=np.float32)
    y_axis = np.array([20, 21], dtype=np.float32)
    out, xa, ya = preprocess_frame(image, x_axis, y_axis, {"rotation": {"angle": 90, "mode": "ortho"}})
    np.testing.assert_array_equal(out, np.rot90(image))
    np.testing.assert_array_equal(xa, y_axis)
    np.testing.assert_array_equal(ya, x_axis[::-1])


def test_preprocess_ortho_rotation_with_unequal_binning_keeps_axes_matching_the_image():
    # Decision (docs/processing.md): axes are binned with the image, then remapped; the spec's order (remap at
    # step 5, bin at 9.1) would bin the new x axis (old y) by binning_x and no longer match the image.
    image = np.arange(24, dtype=np.uint16).reshape(4, 6)
    x_axis = np.arange(6, dtype=np.float32)
    y_axis = np.arange(10, 14, dtype=np.float32)
    params = {"binning_x": 2, "binning_y": 1, "rotation": {"angle": 90, "mode": "ortho"}}
    out, xa, ya = preprocess_frame(image, x_axis, y_axis, params)
    assert out.shape == (3, 4)
    np.testing.assert_array_equal(xa, [10, 11, 12, 13])
    np.testing.assert_array_equal(ya, [4.5, 2.5, 0.5])
    assert xa.dtype == ya.dtype == np.float32


def test_simulated_frame_processes_with_the_beam_near_the_centre():
    image = SimulatedBeam(640, 480, seed=11).next_frame()
    x_axis, y_axis = _axes(image)
    out = process_image(image, 1, (0, 0), x_axis, y_axis, {"image_good_region": {}, "image_slices": {}})
    assert 320 - 40 < out["x_fit_mean"] < 320 + 5
    assert 240 - 8 < out["y_fit_mean"] < 240 + 3
    assert out["max_value"] == 58981
