"""Least-squares fit of ``offset + amplitude·exp(-(x-mean)²/(2σ²))`` to profiles, in batches (spec 3.2).

Why not ``scipy.optimize.curve_fit``: its per-call overhead (~200 µs) dominates the per-frame budget, and a frame
needs 2 to 4 fits (x, y, good region) plus one per slice. All profiles of a call are padded to a common length
(edge values repeated, so min/max/argmax/trapezoid are unchanged) and solved together:

1. the spec's initial guesses for every row (vectorised, identical to :func:`initial_guess`);
2. the fast path (:mod:`cam_server.processing.gauss_newton`): Newton from a half-maximum estimate, 3-6 iterations
   to the least-squares minimum of the full profile (~1e-9 relative);
3. the rows it gives up on go to the robust Levenberg-Marquardt from the spec's guesses
   (:mod:`cam_server.processing.gauss_lm`), the algorithm of the original;
4. on any failure (non-finite input, fewer than 4 points, zero amplitude or width, singular system, no
   convergence) the spec's initial guesses are returned.

With numba installed, steps 1-4 run per row in compiled code (:mod:`cam_server.processing.gauss_numba`, same
maths and decisions, < 1e-6 relative from this numpy path, which stays the fallback; switch: ``COMPILED``).

Profiles are fitted in float64 (the original converted them to float32 — precision loss above ~1.7e7).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cam_server.processing import gauss_numba
from cam_server.processing.gauss_lm import FTOL, MAX_EVALUATIONS, XTOL, levenberg_marquardt
from cam_server.processing.gauss_newton import _SYSTEM, FAR, newton_fit, start_estimate

__all__ = ["FTOL", "XTOL", "MAX_EVALUATIONS", "GaussResult", "initial_guess", "gaussian", "fit_many", "gauss_fit",
           "fit_channels"]

_SQRT_2PI = float(np.sqrt(2.0 * np.pi))
_MIN_POINTS = 4  # fewer points than parameters: no fit

# The compiled fit (gauss_numba) when numba is importable, else the numpy path below; a switch for tests.
COMPILED = gauss_numba.AVAILABLE
if COMPILED:  # compile now: a preloading fork server then does it once for all its children
    gauss_numba.warm_up()

GaussResult = tuple[np.ndarray, float, float, float, float]


def fit_channels(prefix: str, fit: GaussResult) -> dict[str, object]:
    """The five ``<prefix>_fit_*`` output channels of one fit, in output order (spec 3.2)."""
    curve, offset, amplitude, mean, std = fit
    return {f"{prefix}_fit_gauss_function": curve, f"{prefix}_fit_offset": offset,
            f"{prefix}_fit_amplitude": amplitude, f"{prefix}_fit_standard_deviation": std,
            f"{prefix}_fit_mean": mean}


def initial_guess(axis: np.ndarray, profile: np.ndarray) -> tuple[float, float, float, float]:
    """Spec 3.2 step 2: (offset0, amplitude0, center0, sigma0); NaNs for an empty profile."""
    if len(profile) == 0:
        return (np.nan, np.nan, np.nan, np.nan)
    p = np.asarray(profile, dtype=np.float64)
    offset = float(p.min())
    amplitude = float(p.max()) - offset
    center = float(axis[int(np.argmax(p))])
    integral = float(np.trapezoid(p - offset, np.asarray(axis, dtype=np.float64))) if len(p) > 1 else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = float(np.float64(integral) / (amplitude * _SQRT_2PI))
    return (offset, amplitude, center, sigma)


def gaussian(axis: np.ndarray, offset: float, amplitude: float, mean: float, sigma: float) -> np.ndarray:
    """The model evaluated on ``axis`` in float64."""
    x = np.asarray(axis, dtype=np.float64)
    with np.errstate(all="ignore"):
        return offset + amplitude * np.exp(-((x - mean) ** 2) / (2.0 * sigma * sigma))


def fit_many(problems: Sequence[tuple[np.ndarray, np.ndarray]], *, hints: np.ndarray | None = None
             ) -> list[GaussResult]:
    """Fit each (axis, profile) pair; returns (curve, offset, amplitude, mean, abs(sigma)) per pair.

    ``hints`` (B, 2): an expected (mean, sigma) per problem (e.g. the good-region fit for its slices), used
    instead of the half-maximum estimate to start the fast path; it changes the speed, not the minimum found.
    Raises ValueError when an axis and its profile differ in length (spec: "Invalid axis passed").
    """
    for axis, profile in problems:
        if len(axis) != len(profile):
            raise ValueError(f"Invalid axis passed: axis length {len(axis)} != profile length {len(profile)}")
    if not problems:
        return []
    if hints is not None:
        hints = np.asarray(hints, dtype=np.float64)
        if hints.shape != (len(problems), 2):
            raise ValueError(f"Invalid fit hints: expected shape ({len(problems)}, 2) (mean, sigma per problem), "
                             f"got {hints.shape}")
    lengths = np.array([len(profile) for _, profile in problems], dtype=np.intp)
    width = max(int(lengths.max()), 1)
    x = np.empty((len(problems), width))
    y = np.empty((len(problems), width))
    for row, (axis, profile) in enumerate(problems):
        n = len(profile)
        if n == 0:
            x[row] = np.nan
            y[row] = np.nan
            continue
        x[row, :n] = axis
        y[row, :n] = profile
        if n < width:  # edge padding keeps min, max, first argmax and the trapezoid integral
            x[row, n:] = x[row, n - 1]
            y[row, n:] = y[row, n - 1]
    return _fit_packed(x, y, lengths, problems, hints)


def gauss_fit(axis: np.ndarray, profile: np.ndarray) -> GaussResult:
    """Fit one profile: (curve, offset, amplitude, mean, std)."""
    return fit_many([(axis, profile)])[0]


def _initial_guesses(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spec guesses of every padded row as (B, 4)."""
    batch = len(y)
    low = y.min(axis=1)
    peak = y.argmax(axis=1)
    high = y[np.arange(batch), peak]
    guesses = np.empty((batch, 4))
    guesses[:, 0] = low
    guesses[:, 1] = high - low
    guesses[:, 2] = x[np.arange(batch), peak]
    with np.errstate(all="ignore"):
        shifted = y - low[:, None]
        integral = (np.diff(x, axis=1) * (shifted[:, 1:] + shifted[:, :-1]) / 2.0).sum(axis=1)
        guesses[:, 3] = integral / (guesses[:, 1] * _SQRT_2PI)
    return guesses


def _fit_packed(x: np.ndarray, y: np.ndarray, lengths: np.ndarray,
                problems: Sequence[tuple[np.ndarray, np.ndarray]], hints: np.ndarray | None = None
                ) -> list[GaussResult]:
    """Steps 1-4 of the module docstring on the padded rows of ``problems`` (compiled or numpy)."""
    if COMPILED:
        params = np.empty((len(y), 4))
        curves = np.zeros_like(y)  # the padding is cut off, but must not hold garbage for astype
        status = gauss_numba.fit_rows(x, y, lengths, np.zeros((len(y), 2)) if hints is None else hints,
                                      hints is not None, _SYSTEM, params, curves)
        if (status == gauss_numba.NON_FINITE).any():  # not fitted: numpy's guesses (NaN semantics) and curves
            rows = np.flatnonzero(status == gauss_numba.NON_FINITE)
            params[rows] = _initial_guesses(x[rows], y[rows])
            curves[rows] = _curves(x[rows], params[rows])
    else:
        params = _fit_numpy(x, y, lengths, problems, hints)
        curves = _curves(x, params)
    return _results(problems, lengths, params, curves)


def _curves(x: np.ndarray, params: np.ndarray) -> np.ndarray:
    """The fitted model on every padded row."""
    with np.errstate(all="ignore"):
        offset, amplitude, mean, sigma = (params[:, i:i + 1] for i in range(4))
        return offset + amplitude * np.exp(-((x - mean) ** 2) / (2.0 * sigma * sigma))


def _fit_numpy(x: np.ndarray, y: np.ndarray, lengths: np.ndarray,
               problems: Sequence[tuple[np.ndarray, np.ndarray]], hints: np.ndarray | None) -> np.ndarray:
    """Steps 1-4 in batched numpy: (B, 4) parameters."""
    guesses = _initial_guesses(x, y)
    params = guesses.copy()
    fittable = (lengths >= _MIN_POINTS) & np.isfinite(guesses).all(axis=1) & (guesses[:, 1] != 0) & (
        guesses[:, 3] != 0)
    if fittable.any():
        rows = np.flatnonzero(fittable)
        every = len(rows) == len(lengths)
        fx, fy, flen = (x, y, lengths) if every else (x[rows], y[rows], lengths[rows])
        if hints is None:
            start = start_estimate(fx, fy)
        else:  # spec guesses for offset and amplitude, the hinted centre and width
            start = guesses[rows]
            start[:, 2:4] = hints[rows]
        if (flen != fx.shape[1]).any():  # padded points far away, where the model is exactly the offset
            fx = np.where(np.arange(fx.shape[1]) < flen[:, None], fx, FAR)
        fitted, failed = newton_fit(fx, fy, start)
        if failed.any():  # second chance from the spec's guesses (noise-dominated profiles fool the estimate)
            again = np.flatnonzero(failed)
            fitted[again], failed[again] = newton_fit(fx[again], fy[again], guesses[rows[again]])
        good = ~failed
        params[rows[good]] = fitted[good]
        retry = rows[failed]
        if retry.size:
            chosen = [problems[i] for i in retry]
            for i, result in zip(retry, levenberg_marquardt(chosen, guesses[retry]), strict=True):
                if result is not None:
                    params[i] = result
    return params


def _results(problems: Sequence[tuple[np.ndarray, np.ndarray]], lengths: np.ndarray, params: np.ndarray,
             curves: np.ndarray) -> list[GaussResult]:
    """One (curve, offset, amplitude, mean, abs(sigma)) per problem."""
    # The curve follows the axis dtype (float32 axes -> float32 curve), as in the original.
    dtypes = {axis.dtype for axis, _ in problems}
    common = dtypes.pop() if len(dtypes) == 1 else None
    if common is not None and common.kind == "f" and common != np.float64:
        curves = curves.astype(common)
    results: list[GaussResult] = []
    for (axis, _), curve, n, (o, a, m, s) in zip(problems, curves, lengths.tolist(), params.tolist(), strict=True):
        curve = curve[:n]
        if common is None and axis.dtype.kind == "f" and axis.dtype != np.float64:
            curve = curve.astype(axis.dtype)
        results.append((curve, o, a, m, abs(s)))
    return results
