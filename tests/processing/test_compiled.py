"""The compiled (numba) kernels against the numpy path they replace, and the library without numba."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cam_server.processing import gauss_fit, gauss_numba, image_numba, statistics
from cam_server.processing import good_region as gr
from cam_server.processing import slices as sl
from cam_server.processing.default import process_image
from cam_server.processing.gauss_newton import _SYSTEM
from cam_server.processing.simulation import SimulatedBeam

pytestmark = [pytest.mark.unit, pytest.mark.skipif(not gauss_numba.AVAILABLE, reason="numba not installed")]
ROOT = Path(__file__).resolve().parents[2]


def _relative_error(fit, reference) -> float:
    o, a, m, s = fit
    linear = abs(reference[0]) + abs(reference[1])
    return max(abs(o - reference[0]) / linear, abs(a - reference[1]) / linear, abs(m - reference[2]) / reference[3],
               abs(s - reference[3]) / reference[3])


def _both(monkeypatch, func):
    monkeypatch.setattr(gauss_fit, "COMPILED", True)
    compiled = func()
    monkeypatch.setattr(gauss_fit, "COMPILED", False)
    return compiled, func()


@pytest.mark.parametrize("size", [(640, 480), (1280, 1024)])
def test_compiled_fit_matches_the_numpy_path_on_simulated_profiles(size, monkeypatch):
    width, height = size
    beam = SimulatedBeam(width, height, seed=5)
    x_axis, y_axis = np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
    for _ in range(3):
        image = beam.next_frame()
        x_profile, y_profile = statistics.profiles(image)
        region = gr.find_good_region(image, x_axis, y_axis, x_profile, y_profile)
        problems = [(x_axis, x_profile), (y_axis, y_profile), (region.x_axis, region.x_profile),
                    (region.y_axis, region.y_profile)]
        compiled, reference = _both(monkeypatch, lambda problems=problems: gauss_fit.fit_many(problems))
        for new, old in zip(compiled, reference, strict=True):
            assert new[0].dtype == old[0].dtype == np.float32 and new[0].shape == old[0].shape
            assert _relative_error(new[1:], old[1:]) < 1e-6
            np.testing.assert_allclose(new[0], old[0], rtol=1e-6, atol=1e-6 * (abs(old[1]) + abs(old[2])))
        region.x_fit, region.y_fit = reference[2], reference[3]
        new, old = _both(monkeypatch, lambda region=region: sl.slice_channels(region, 5, 2.0, "vertical"))
        assert new.keys() == old.keys()
        for key, value in old.items():
            if isinstance(value, float):
                assert new[key] == pytest.approx(value, rel=1e-5), key
            else:
                assert type(new[key]) is type(value), key


def test_compiled_fit_paths_and_degenerate_rows(monkeypatch):
    """Each fallback of the kernel, and rows it leaves to numpy (empty, NaN, too short), as the numpy path."""
    axis = np.arange(70, dtype=np.float64)
    clean = 100.0 + 5e4 * np.exp(-((axis - 30.2) ** 2) / (2 * 6.0**2))
    noise = np.random.default_rng(0).integers(2000, 15000, 70).astype(np.float64)
    with_nan = clean.copy()
    with_nan[5] = np.nan
    problems = [(axis, clean), (axis, noise), (axis, with_nan), (axis[:0], clean[:0]), (axis[:3], clean[:3]),
                (axis, np.full(70, 7.0))]
    compiled, reference = _both(monkeypatch, lambda: gauss_fit.fit_many(problems))
    for new, old in zip(compiled, reference, strict=True):
        np.testing.assert_allclose(new[1:], old[1:], rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(new[0], old[0], rtol=1e-6, atol=1e-6, equal_nan=True)
    x = np.stack([axis] * 2)
    y = np.stack([clean, noise])
    status = gauss_numba.fit_rows(x, y, np.array([70, 70]), np.zeros((2, 2)), False, _SYSTEM, np.empty((2, 4)),
                                  np.empty((2, 70)))
    assert status[0] == gauss_numba.NEWTON_FROM_START
    assert status[1] in (gauss_numba.LEVENBERG_MARQUARDT, gauss_numba.NOT_FITTED)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_fused_profiles_min_max_equal_numpy(dtype):
    image = SimulatedBeam(300, 200, dtype=dtype, seed=2).next_frame()
    for view in (image, image[17:150, 33:260], image[::2, ::3]):
        x_profile, y_profile, low, high = image_numba.profiles_min_max(view)
        np.testing.assert_array_equal(x_profile, view.sum(axis=0, dtype=np.int64))
        np.testing.assert_array_equal(y_profile, view.sum(axis=1, dtype=np.int64))
        assert x_profile.dtype == y_profile.dtype == np.int64
        assert (low, high) == (view.min(), view.max()) and type(low) is type(view.min())
    saturated = np.full((4, 5), np.iinfo(dtype).max, dtype=dtype)
    np.testing.assert_array_equal(image_numba.profiles_min_max(saturated)[0], np.full(5, 4 * int(saturated[0, 0])))


def test_process_image_same_channels_with_and_without_kernels(monkeypatch):
    image = SimulatedBeam(320, 240, seed=9).next_frame()
    axes = np.arange(320, dtype=np.float32), np.arange(240, dtype=np.float32)
    params = {"image_good_region": {}, "image_slices": {"number_of_slices": 3}}
    new = process_image(image, 1, (0, 0), *axes, params)
    monkeypatch.setattr(gauss_fit, "COMPILED", False)
    monkeypatch.setattr(statistics, "COMPILED", False)
    old = process_image(image, 1, (0, 0), *axes, params)
    assert list(new) == list(old)
    for key, value in old.items():
        assert type(new[key]) is type(value), key
        if isinstance(value, np.ndarray):
            np.testing.assert_allclose(new[key], value, rtol=1e-6, atol=1e-6 * float(np.abs(value).max() or 1))
        elif isinstance(value, float):
            assert new[key] == pytest.approx(value, rel=1e-5), key
        elif not isinstance(value, str):
            assert new[key] == value, key


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HOME": env.pop("HOME", str(Path.home())), **env})


def test_library_works_without_numba():
    code = ("import numpy as np; from cam_server.processing import gauss_fit, statistics as s;"
            "from cam_server.processing.default import process_image as p;"
            "assert not gauss_fit.COMPILED and not s.COMPILED;"
            "o = p(np.full((20, 30), 3, np.uint16), 1, (0, 0), np.arange(30.), np.arange(20.), {});"
            "print(o['min_value'], o['x_fit_offset'])")
    result = _run(code, CAM_SERVER_NO_NUMBA="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3", "60.0"]


def test_import_with_an_unwritable_cache_dir_does_not_crash(tmp_path):
    """NUMBA_CACHE_DIR below a regular file (unwritable even for root): numba falls back, the import works."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    code = "from cam_server.processing import gauss_fit; assert gauss_fit.COMPILED; print('ok')"
    result = _run(code, NUMBA_CACHE_DIR=str(blocker / "cache"), HOME=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
