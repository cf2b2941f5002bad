"""The fast Newton path of the gaussian fit against a tightly converged reference, and its fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares

from cam_server.processing import gauss_fit as gauss_fit_module
from cam_server.processing import gauss_numba
from cam_server.processing.gauss_fit import fit_many, gauss_fit, initial_guess
from cam_server.processing.gauss_lm import levenberg_marquardt
from cam_server.processing.gauss_newton import FAR, newton_fit, start_estimate
from cam_server.processing.simulation import SimulatedBeam
from cam_server.processing.statistics import profiles

pytestmark = pytest.mark.unit

needs_numba = pytest.mark.skipif(not gauss_numba.AVAILABLE, reason="numba not installed")


def _model(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    return p[0] + p[1] * np.exp(-((x - p[2]) ** 2) / (2 * p[3] ** 2))


def _reference(axis: np.ndarray, profile: np.ndarray, start) -> np.ndarray:
    """The least-squares minimum converged far beyond the fit's tolerance."""
    x = np.asarray(axis, dtype=np.float64)
    y = np.asarray(profile, dtype=np.float64)
    result = least_squares(lambda p: _model(p, x) - y, np.asarray(start, dtype=np.float64), method="lm",
                           xtol=1e-15, ftol=1e-15, gtol=1e-15, x_scale="jac")
    p = result.x.copy()
    p[3] = abs(p[3])
    return p


def _relative_error(fit, reference: np.ndarray) -> float:
    """Offset/amplitude relative to |offset|+|amplitude|, mean/sigma relative to sigma."""
    o, a, m, s = fit
    linear = abs(reference[0]) + abs(reference[1])
    return max(abs(o - reference[0]) / linear, abs(a - reference[1]) / linear, abs(m - reference[2]) / reference[3],
               abs(s - reference[3]) / reference[3])


@pytest.mark.parametrize("size", [(640, 480), (1280, 1024)])
def test_simulated_profiles_reach_the_least_squares_minimum(size):
    width, height = size
    beam = SimulatedBeam(width, height, seed=11)
    x_axis, y_axis = np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
    for _ in range(3):
        x_profile, y_profile = profiles(beam.next_frame())
        problems = [(x_axis, x_profile), (y_axis, y_profile)]
        for (axis, profile), (_, *fit) in zip(problems, fit_many(problems), strict=True):
            assert _relative_error(fit, _reference(axis, profile, fit)) < 1e-6


@pytest.mark.parametrize("axis", [np.linspace(50.0, -50.0, 301), np.linspace(-3e-3, 3e-3, 301).astype(np.float32)],
                         ids=["descending-float64", "calibrated-float32"])
def test_noisy_profile_on_other_axes(axis):
    rng = np.random.default_rng(3)
    truth = np.array([0.0, 5e4, float(axis[120]), abs(float(axis[1] - axis[0])) * 14.0])
    profile = np.rint(_model(truth, axis.astype(np.float64)) + rng.normal(0, 900, axis.size)).astype(np.int64)
    curve, *fit = gauss_fit(axis, profile)
    assert curve.dtype == axis.dtype and curve.shape == axis.shape
    assert _relative_error(fit, _reference(axis, profile, fit)) < 1e-6


def test_agrees_with_the_levenberg_marquardt_of_the_previous_version():
    """The old path (LM from the spec's guesses) stops at ftol 1.5e-8: same minimum to ~1e-5."""
    rng = np.random.default_rng(8)
    axis = np.arange(400, dtype=np.float32)
    for _ in range(5):
        truth = [rng.uniform(0, 1e5), rng.uniform(1e4, 1e6), rng.uniform(100, 300), rng.uniform(2, 40)]
        profile = (_model(truth, axis.astype(np.float64)) + rng.normal(0, 0.02 * truth[1], 400)).astype(np.int64)
        (old,) = levenberg_marquardt([(axis, profile)], np.array([initial_guess(axis, profile)]))
        _, *new = gauss_fit(axis, profile)
        reference = _reference(axis, profile, new)
        assert _relative_error(new, reference) < 1e-6
        assert _relative_error((old[0], old[1], old[2], abs(old[3])), reference) < 1e-4


def test_start_estimate_is_close_for_a_clean_gaussian():
    axis = np.arange(500, dtype=np.float64)
    profile = _model([1000.0, 2e5, 210.4, 6.5], axis)
    start = start_estimate(axis[None], profile[None])[0]
    np.testing.assert_allclose(start, [1000.0, 2e5, 210.4, 6.5], rtol=0.05)


def test_padded_rows_fit_like_single_rows():
    beam = SimulatedBeam(300, 200, seed=4)
    x_profile, y_profile = profiles(beam.next_frame())
    x_axis, y_axis = np.arange(300, dtype=np.float32), np.arange(200, dtype=np.float32)
    batch = fit_many([(x_axis, x_profile), (y_axis, y_profile), (y_axis[:60], y_profile[:60])])
    for result, (axis, profile) in zip(batch, [(x_axis, x_profile), (y_axis, y_profile),
                                               (y_axis[:60], y_profile[:60])], strict=True):
        single = gauss_fit(axis, profile)
        np.testing.assert_allclose(result[1:], single[1:], rtol=1e-9)
        np.testing.assert_array_equal(result[0], single[0])
        assert result[0].shape == axis.shape


def test_far_padding_adds_nothing():
    axis = np.arange(100, dtype=np.float64)
    profile = _model([10.0, 500.0, 40.0, 5.0], axis)
    start = np.array([[12.0, 480.0, 41.0, 5.5]])
    alone, failed = newton_fit(axis[None], profile[None], start)
    padded_x = np.concatenate([axis, np.full(50, FAR)])[None]
    padded_y = np.concatenate([profile, np.full(50, 7.0)])[None]
    padded, failed_padded = newton_fit(padded_x, padded_y, start)
    assert not failed[0] and not failed_padded[0]
    np.testing.assert_allclose(padded, alone, rtol=1e-12)
    np.testing.assert_allclose(alone[0], [10.0, 500.0, 40.0, 5.0], rtol=1e-9)


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=needs_numba)], ids=["numpy", "numba"])
def test_noise_only_profile_falls_back_to_levenberg_marquardt(compiled, monkeypatch):
    """Where Newton gives up (from both starts), the result is the LM from the spec's guesses.

    Exactly for the numpy path; the compiled LM takes the same steps with other rounding (sequential sums).
    """
    monkeypatch.setattr(gauss_fit_module, "COMPILED", compiled)
    axis = np.arange(70, dtype=np.float32)
    for seed in range(40):
        profile = np.random.default_rng(seed).integers(2000, 15000, 70)
        x, y = axis.astype(np.float64)[None], profile.astype(np.float64)[None]
        guess = np.array([initial_guess(axis, profile)])
        _, failed_start = newton_fit(x, y, start_estimate(x, y))
        _, failed_guess = newton_fit(x, y, guess)
        if failed_start[0] and failed_guess[0]:
            break
    else:
        pytest.fail("no noise profile made the Newton path give up")
    (expected,) = levenberg_marquardt([(axis, profile)], guess)
    _, *fit = gauss_fit(axis, profile)
    if expected is None:
        assert fit[:3] == list(guess[0, :3])
    elif compiled:
        np.testing.assert_allclose(fit, [expected[0], expected[1], expected[2], abs(expected[3])], rtol=1e-9)
    else:
        assert fit == [expected[0], expected[1], expected[2], abs(expected[3])]


def test_newton_reports_failure_for_degenerate_rows():
    axis = np.arange(20, dtype=np.float64)[None]
    flat = np.full((1, 20), 5.0)
    _, failed = newton_fit(axis, flat, np.array([[5.0, 0.0, 10.0, 2.0]]))  # zero amplitude: singular system
    assert failed[0]
    _, failed = newton_fit(axis, flat, np.array([[5.0, 1.0, 10.0, np.nan]]))
    assert failed[0]


def test_hints_change_the_start_not_the_minimum():
    beam = SimulatedBeam(1200, 300, seed=6)  # x rows > WINDOW_MIN_WIDTH: also the windowed path
    x_profile, y_profile = profiles(beam.next_frame())
    problems = [(np.arange(1200, dtype=np.float32), x_profile), (np.arange(300, dtype=np.float32), y_profile)]
    plain = fit_many(problems)
    hinted = fit_many(problems, hints=np.array([[plain[0][3] + 3.0, plain[0][4] * 1.3],
                                                [plain[1][3] - 1.0, plain[1][4] * 0.8]]))
    for a, b, (axis, profile) in zip(plain, hinted, problems, strict=True):
        assert _relative_error(b[1:], _reference(axis, profile, b[1:])) < 1e-6
        assert _relative_error(a[1:], np.array([b[1], b[2], b[3], b[4]])) < 1e-6
    with pytest.raises(ValueError, match="Invalid fit hints"):
        fit_many(problems, hints=np.zeros((3, 2)))
