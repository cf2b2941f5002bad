from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import curve_fit

from cam_server.processing.gauss_fit import fit_many, gauss_fit, initial_guess
from cam_server.processing.statistics import center_of_mass_and_rms, fwhm, min_max, profiles
from tests.processing.conftest import gaussian_image

pytestmark = pytest.mark.unit


def test_profiles_are_exact_int64_column_and_row_sums(spot):
    x_profile, y_profile = profiles(spot)
    assert x_profile.dtype == np.int64 and y_profile.dtype == np.int64
    np.testing.assert_array_equal(x_profile, spot.astype(np.int64).sum(axis=0))
    np.testing.assert_array_equal(y_profile, spot.astype(np.int64).sum(axis=1))


def test_profiles_do_not_overflow_for_saturated_uint16():
    image = np.full((3000, 10), 65535, dtype=np.uint16)
    x_profile, y_profile = profiles(image)
    assert x_profile[0] == 3000 * 65535
    assert y_profile[0] == 10 * 65535


def test_profiles_of_float_images_are_float64():
    x_profile, _ = profiles(np.ones((4, 3), dtype=np.float32))
    assert x_profile.dtype == np.float64


def test_min_max_keeps_dtype_and_ignores_nan():
    low, high = min_max(np.array([[3, 9], [1, 4]], dtype=np.uint16))
    assert (low, high) == (1, 9) and low.dtype == np.uint16
    low, high = min_max(np.array([[np.nan, 2.0], [5.0, 1.0]]))
    assert (low, high) == (1.0, 5.0)


def test_center_of_mass_and_rms_of_a_gaussian():
    axis = np.arange(400, dtype=np.float32)
    profile = np.rint(1e6 * np.exp(-((axis - 201.5) ** 2) / (2 * 15.0**2))).astype(np.int64)
    com, rms = center_of_mass_and_rms(axis, profile)
    assert com == pytest.approx(201.5, abs=1e-6)
    assert rms == pytest.approx(15.0, rel=1e-4)


def test_center_of_mass_of_zero_profile_is_nan():
    with np.errstate(all="raise"):
        com, rms = center_of_mass_and_rms(np.arange(5.0), np.zeros(5, dtype=np.int64))
    assert np.isnan(com) and np.isnan(rms)


def test_fwhm_sample_based():
    axis = np.arange(9, dtype=np.float32)
    profile = np.array([0, 1, 2, 6, 10, 7, 5, 1, 0])
    # max 10 at 4, half 5: left first <= 5 going down is index 2, right is index 6
    value = fwhm(axis, profile)
    assert value == pytest.approx(4.0) and value.dtype == np.float32


def test_fwhm_index_zero_is_never_checked_on_the_left():
    axis = np.array([100.0, 1.0, 2.0, 3.0], dtype=np.float32)
    profile = np.array([0, 9, 10, 0])  # the only low value on the left is at index 0
    assert fwhm(axis, profile) == pytest.approx(abs(axis[0] - axis[3]))  # default left = 0 anyway
    profile = np.array([0, 10, 9, 0])  # m = 1: scan m-1..1 is empty -> left default 0
    assert fwhm(axis, profile) == pytest.approx(abs(axis[0] - axis[3]))


def test_fwhm_of_empty_profile_is_zero():
    assert fwhm(np.array([], dtype=np.float32), np.array([], dtype=np.int64)) == 0.0


def test_gauss_fit_recovers_known_parameters():
    axis = np.arange(300, dtype=np.float32)
    profile = (500 + 20000 * np.exp(-((axis - 140.25) ** 2) / (2 * 9.5**2))).astype(np.int64)
    curve, offset, amplitude, mean, std = gauss_fit(axis, profile)
    assert mean == pytest.approx(140.25, abs=0.01)
    assert std == pytest.approx(9.5, rel=1e-3)
    assert offset == pytest.approx(500, abs=1)
    assert amplitude == pytest.approx(20000, rel=1e-3)
    assert curve.dtype == np.float32 and curve.shape == (300,)


def test_gauss_fit_matches_scipy_curve_fit_on_noisy_data():
    rng = np.random.default_rng(5)
    axis = np.arange(250, dtype=np.float32)
    profile = (1000 + 3e4 * np.exp(-((axis - 100) ** 2) / (2 * 20.0**2)) + rng.normal(0, 800, 250)).astype(np.int64)

    def model(x, o, a, m, s):
        return o + a * np.exp(-((x - m) ** 2) / (2 * s * s))

    reference = curve_fit(model, axis.astype(np.float64), profile.astype(np.float64),
                          p0=initial_guess(axis, profile))[0]
    _, offset, amplitude, mean, std = gauss_fit(axis, profile)
    np.testing.assert_allclose([offset, amplitude, mean, std], [reference[0], reference[1], reference[2],
                                                                abs(reference[3])], rtol=1e-5)


def test_gauss_fit_of_descending_axis_reports_positive_sigma():
    axis = np.linspace(100, -100, 201).astype(np.float32)
    profile = (3e4 * np.exp(-((axis - 10) ** 2) / (2 * 7.0**2))).astype(np.int64)
    _, _, _, mean, std = gauss_fit(axis, profile)
    assert mean == pytest.approx(10, abs=0.01) and std == pytest.approx(7.0, rel=1e-3)


def test_gauss_fit_failure_returns_initial_guesses():
    axis = np.arange(10, dtype=np.float32)
    _, offset, amplitude, mean, std = gauss_fit(axis, np.zeros(10, dtype=np.int64))
    assert (offset, amplitude, mean) == (0.0, 0.0, 0.0) and np.isnan(std)
    profile = np.array([1, 5, 2], dtype=np.int64)  # fewer points than parameters
    _, offset, amplitude, mean, std = gauss_fit(axis[:3], profile)
    assert (offset, amplitude, mean) == (1.0, 4.0, 1.0)


def test_gauss_fit_rejects_mismatched_axis():
    with pytest.raises(ValueError, match="Invalid axis passed"):
        gauss_fit(np.arange(5.0), np.arange(6))


def test_fit_many_matches_single_fits_with_different_lengths():
    image = gaussian_image()
    x_profile, y_profile = profiles(image)
    x_axis, y_axis = np.arange(200, dtype=np.float32), np.arange(150, dtype=np.float32)
    batch = fit_many([(x_axis, x_profile), (y_axis, y_profile)])
    for (axis, profile), result in zip([(x_axis, x_profile), (y_axis, y_profile)], batch, strict=True):
        np.testing.assert_allclose(result[1:], gauss_fit(axis, profile)[1:], rtol=1e-7)
    assert batch[0][3] == pytest.approx(90.3, abs=0.01) and batch[1][4] == pytest.approx(6.0, rel=1e-3)
