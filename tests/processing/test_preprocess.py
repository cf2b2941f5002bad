from __future__ import annotations

import numpy as np
import pytest

from cam_server.processing.preprocess import (
    Averager,
    apply_roi,
    apply_threshold,
    bin_for_pipeline,
    rotate_axes_ortho,
    rotate_image,
    subtract_background,
)

pytestmark = pytest.mark.unit


def test_background_normal_clamps_at_zero_in_image_dtype():
    image = np.array([[5, 10], [0, 65535]], dtype=np.uint16)
    background = np.array([[6, 3], [1, 65535]], dtype=np.uint16)
    out = subtract_background(image, background, True)
    np.testing.assert_array_equal(out, [[0, 7], [0, 0]])
    assert out.dtype == np.uint16 and image[0, 1] == 10


def test_background_signed_keeps_negatives_as_int32():
    out = subtract_background(np.array([[5, 10]], dtype=np.uint16), np.array([[6, 3]], dtype=np.uint16), "signed")
    np.testing.assert_array_equal(out, [[-1, 7]])
    assert out.dtype == np.int32


def test_background_passive_leaves_the_image():
    image = np.ones((2, 2), dtype=np.uint16)
    assert subtract_background(image, np.ones((2, 2), dtype=np.uint16), "passive") is image


def test_background_of_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match=r"Invalid background_image size \(2, 3\)"):
        subtract_background(np.ones((2, 2), dtype=np.uint16), np.ones((2, 3), dtype=np.uint16), True)


def test_threshold_uses_the_float_value():
    image = np.array([[0, 1, 2, 3]], dtype=np.uint16)
    np.testing.assert_array_equal(apply_threshold(image, 0.5), [[0, 1, 2, 3]])
    np.testing.assert_array_equal(apply_threshold(image, 1.9), [[0, 0, 2, 3]])
    np.testing.assert_array_equal(apply_threshold(image, 2), [[0, 0, 2, 3]])
    np.testing.assert_array_equal(apply_threshold(image, 1e9), [[0, 0, 0, 0]])
    np.testing.assert_array_equal(image, [[0, 1, 2, 3]])  # input untouched
    assert apply_threshold(image, None) is image and apply_threshold(image, 0) is image


def test_threshold_float_image():
    np.testing.assert_array_equal(apply_threshold(np.array([[0.4, 0.6]]), 0.5), [[0.0, 0.6]])


def test_roi_is_clamped_and_returns_views():
    image = np.arange(100, dtype=np.uint16).reshape(10, 10)
    axis = np.arange(10, dtype=np.float32)
    out, x, y = apply_roi(image, axis, axis, [8, 4, -3, 20])
    assert out.shape == (10, 4) and np.shares_memory(out, image)
    np.testing.assert_array_equal(x, [6, 7, 8, 9])
    np.testing.assert_array_equal(y, axis)
    with pytest.raises(ValueError, match="image_region_of_interest"):
        apply_roi(image, axis, axis, [0, 0, 0, 5])
    with pytest.raises(ValueError, match="image_region_of_interest"):
        apply_roi(image, axis, axis, [0, 1])


def test_rotation_modes():
    image = np.zeros((9, 9), dtype=np.uint16)
    image[4, 6] = 1000
    turned = rotate_image(image, 90, 1, "0.0")
    assert turned.dtype == np.uint16 and turned.shape == (9, 9)
    assert turned[2, 4] == 1000  # counter-clockwise: right of centre goes up
    np.testing.assert_array_equal(rotate_image(image, 90, 1, "ortho"), np.rot90(image))
    filled = rotate_image(np.ones((9, 9)), 45, 1, "7.0")
    assert filled[0, 0] == 7.0
    assert rotate_image(np.ones((9, 9)), 45, 1, "nearest")[0, 0] == 1.0
    with pytest.raises(ValueError, match="Invalid rotation mode"):
        rotate_image(image, 45, 1, "bogus")


def test_ortho_axes_for_each_quarter_turn():
    x = np.array([0.0, 1.0, 2.0])
    y = np.array([10.0, 11.0])
    for angle, (ex, ey) in {90: (y, x[::-1]), 180: (x[::-1], y[::-1]), 270: (y[::-1], x), -90: (y[::-1], x),
                            0: (x, y)}.items():
        nx, ny = rotate_axes_ortho(x, y, angle)
        np.testing.assert_array_equal(nx, ex)
        np.testing.assert_array_equal(ny, ey)


def test_pipeline_binning_sum_clips_and_mean_axes():
    image = np.full((4, 6), 40000, dtype=np.uint16)
    axis_x = np.arange(6, dtype=np.float32)
    axis_y = np.arange(4, dtype=np.float32)
    out, x, y = bin_for_pipeline(image, axis_x, axis_y, 4, 2)
    assert out.shape == (2, 1) and out.dtype == np.uint16 and out[0, 0] == 65535
    np.testing.assert_array_equal(x, [1.5])
    np.testing.assert_array_equal(y, [0.5, 2.5])
    out, _, _ = bin_for_pipeline(image, axis_x, axis_y, 2, 2, mean=True)
    assert out[0, 0] == 40000


def test_averager_positive_emits_every_n():
    averager = Averager(3)
    frames = [np.full((2, 2), v, dtype=np.uint16) for v in (1, 2, 6, 10, 20, 30)]
    outputs = [averager.add(f) for f in frames]
    assert outputs[0] is None and outputs[1] is None and outputs[3] is None
    np.testing.assert_array_equal(outputs[2], np.full((2, 2), 3.0))
    np.testing.assert_array_equal(outputs[5], np.full((2, 2), 20.0))
    assert outputs[2].dtype == np.float64


def test_averager_negative_running_mean_from_first_frame():
    averager = Averager(-2)
    values = [averager.add(np.full((1, 1), v, dtype=np.uint16))[0, 0] for v in (4, 8, 20, 2)]
    assert values == [4.0, 6.0, 14.0, 11.0]


def test_averager_resets_on_shape_change():
    averager = Averager(2)
    assert averager.add(np.ones((2, 2))) is None
    assert averager.add(np.ones((3, 2))) is None  # restarted
    np.testing.assert_array_equal(averager.add(np.full((3, 2), 3.0)), np.full((3, 2), 2.0))
    with pytest.raises(ValueError, match="averaging"):
        Averager(0)


def _frame(seed: int) -> np.ndarray:
    frame = np.random.default_rng(seed).integers(0, 4000, (48, 64)).astype(np.uint16)
    frame.flags.writeable = False  # as received from the stream
    return frame


def _normal_subtraction(image: np.ndarray, background: np.ndarray) -> np.ndarray:
    return np.where(image >= background, image - background, 0).astype(image.dtype)


def _zero_below(image: np.ndarray, level: int) -> np.ndarray:
    return np.where(image >= level, image, 0).astype(image.dtype)


def test_preprocess_of_a_read_only_frame_gives_the_reference_result_without_touching_it():
    from cam_server.processing.default import preprocess_frame

    background = np.random.default_rng(9).integers(0, 2000, (48, 64)).astype(np.uint16)
    x_axis, y_axis = np.arange(64, dtype=np.float32), np.arange(48, dtype=np.float32)
    cases = [({"image_background_enable": True, "image_threshold": 100.5},
              lambda i: _zero_below(_normal_subtraction(i, background), 101)),
             ({"image_background_enable": "signed"}, lambda i: i.astype(np.int32) - background),
             ({"image_threshold": 1500}, lambda i: _zero_below(i, 1500)),
             ({"image_background_enable": True, "image_region_of_interest": [5, 20, 3, 30], "image_threshold": 7},
              lambda i: _zero_below(_normal_subtraction(i, background)[3:33, 5:25], 7))]
    for params, reference in cases:
        for seed in range(3):
            image = _frame(seed)
            got = preprocess_frame(image, x_axis, y_axis, dict(params), background)[0]
            expected = reference(_frame(seed))
            np.testing.assert_array_equal(got, expected)
            assert got.dtype == expected.dtype
            np.testing.assert_array_equal(image, _frame(seed))
