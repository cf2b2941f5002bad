"""Fast path of the gaussian fit: a batched Newton solver started from a close estimate (spec 3.2, step 3).

Why: the robust Levenberg-Marquardt (:mod:`cam_server.processing.gauss_lm`) needs ~40 evaluations from the spec's
initial guesses, and numpy's per-call overhead, not arithmetic, is what each evaluation costs for profiles of a few
hundred points. Here the start comes from the half-maximum crossings of the profile (a few % off the minimum), and
each iteration computes every sum it needs with one matrix product, so 3-5 iterations give the least-squares minimum
of the full profile to ~1e-9 relative.

Maths. Model ``f = o + a·E``, ``E = exp(−d²/2s²)``, ``d = x − μ``. With the scaled variables μ' = μ·a/s²,
s' = s·a/s³ (at the current point) the Jacobian columns are ``[1, E, E·d, E·d²]``, so J'ᵀJ', J'ᵀr, the second-order
terms Σ r·∇²f (sums ``Σ r·E·dᵏ``, k = 0..4) and the cost Σ r² are all entries of ``U·Vᵀ`` with
``U = [E·d, E·d², E·d³, E·d⁴, 1, E, r]`` and ``V = [1, E, r]``. The first iterations are Gauss-Newton (robust far
away), then full Newton (quadratic convergence also for noisy, large-residual profiles, where Gauss-Newton is only
linear). A problem stops when its Newton step is below :data:`NEWTON_STEP_TOL` (so the error after that step is of
order its square) or its Gauss-Newton step below :data:`GN_STEP_TOL`. Any sign of trouble (cost increase, singular
system, non-finite values, no convergence within :data:`MAX_ITERATIONS`) marks the problem failed: the caller then
falls back to the Levenberg-Marquardt from the spec's guesses, so results never depend on this path being lucky.
"""

from __future__ import annotations

import numpy as np

try:  # the gufunc behind np.linalg.solve, without its ~5 µs Python wrapper (errstate, type checks)
    from numpy.linalg import _umath_linalg

    _solve = _umath_linalg.solve1
except (ImportError, AttributeError):  # pragma: no cover - other numpy versions
    _solve = np.linalg.solve

MAX_ITERATIONS = 12
NEWTON_STEP_TOL = 1e-5  # relative Newton step: the remaining error is of order its square
GN_STEP_TOL = 1e-10  # relative Gauss-Newton step (linear convergence)
NEWTON_FROM = 0.3  # switch a problem to full Newton once its relative step is below this
COST_RISE_TOL = 1e-9  # relative cost increase that counts as divergence (rounding of the sums is far below)
HALF_MAX_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))  # σ = FWHM / 2.3548

# Flat index (row·3 + column) into U·Vᵀ (7x3) of each sum; 21 is an extra zero slot.
_ZERO = 21
_SUM_E_D = [0, 3, 6, 9]  # Σ E·dᵏ, k = 1..4
_SUM_E2_D = [1, 4, 7, 10]  # Σ E²·dᵏ, k = 1..4
_SUM_R_E_D = [2, 5, 8, 11]  # Σ r·E·dᵏ, k = 1..4
_ONE, _SUM_R, _SUM_E, _SUM_E2, _SUM_R_E, _COST = 12, 14, 15, 16, 17, 20
_M_INDEX = np.array([[_ONE, _SUM_E, _SUM_E_D[0], _SUM_E_D[1]],
                     [_SUM_E, _SUM_E2, _SUM_E2_D[0], _SUM_E2_D[1]],
                     [_SUM_E_D[0], _SUM_E2_D[0], _SUM_E2_D[1], _SUM_E2_D[2]],
                     [_SUM_E_D[1], _SUM_E2_D[1], _SUM_E2_D[2], _SUM_E2_D[3]]])
_G_INDEX = np.array([_SUM_R, _SUM_R_E, _SUM_R_E_D[0], _SUM_R_E_D[1]])
# a·(second-order term) = TA − s²·TB (in the scaled variables), see the module docstring.
_S1, _S2, _S3, _S4 = _SUM_R_E_D
_TA_INDEX = np.array([[_ZERO] * 4, [_ZERO, _ZERO, _S1, _S2], [_ZERO, _S1, _S2, _S3], [_ZERO, _S2, _S3, _S4]])
_TB_INDEX = np.array([[_ZERO] * 4, [_ZERO] * 4, [_ZERO, _ZERO, _SUM_R_E, _S1], [_ZERO, _ZERO, _S1, _S2]])
_TB_FACTOR = np.array([[0.0] * 4, [0.0] * 4, [0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 2.0, 3.0]])


def start_estimate(x: np.ndarray, y: np.ndarray, lengths: np.ndarray, peak: np.ndarray,
                   maximum: np.ndarray) -> np.ndarray:
    """(B, 4) starting points from the half-maximum crossings around the first maximum of each row.

    Baseline = median of the row (robust to noise, unlike the minimum), level = halfway to the maximum; the
    crossings nearest to the peak on both sides (linearly interpolated) give the FWHM → σ and their midpoint → μ.
    Rows are edge-padded to a common length (``lengths`` holds the real ones).
    """
    batch, width = y.shape
    rows = np.arange(batch)
    base = np.partition(y, width // 2, axis=1)[:, width // 2]
    level = 0.5 * (base + maximum)
    columns = np.arange(width)
    below = y <= level[:, None]
    left = np.where(below & (columns < peak[:, None]), columns, -1).max(axis=1)
    right = np.where(below & (columns > peak[:, None]), columns, width).min(axis=1)
    last = lengths - 1
    right = np.minimum(right, last)
    left_in = np.maximum(left, 0)
    left_next = np.minimum(left_in + 1, last)
    right_prev = np.maximum(right - 1, 0)
    with np.errstate(all="ignore"):
        # Interpolated crossing points (fall back to the sample when the two samples are equal).
        f_left = (level - y[rows, left_in]) / (y[rows, left_next] - y[rows, left_in])
        f_right = (y[rows, right_prev] - level) / (y[rows, right_prev] - y[rows, right])
        f_left = np.where(np.isfinite(f_left), np.clip(f_left, 0.0, 1.0), 0.0)
        f_right = np.where(np.isfinite(f_right), np.clip(f_right, 0.0, 1.0), 1.0)
        x_left = x[rows, left_in] + f_left * (x[rows, left_next] - x[rows, left_in])
        x_right = x[rows, right_prev] + f_right * (x[rows, right] - x[rows, right_prev])
    start = np.empty((batch, 4))
    start[:, 0] = base
    start[:, 1] = maximum - base
    start[:, 2] = 0.5 * (x_left + x_right)
    start[:, 3] = np.abs(x_right - x_left) * HALF_MAX_TO_SIGMA
    return start


def newton_fit(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None, start: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares fit of each row of ``y`` (B, N) over ``x``; returns (params (B, 4), failed (B,) bool).

    ``mask`` (B, N) of 1.0/0.0 marks the real points of padded rows (None when all rows are full).
    """
    batch, width = x.shape
    p = start.astype(np.float64, copy=True)
    u = np.empty((batch, 7, width))
    e_d, e_d2, e_d3, e_d4 = u[:, 0], u[:, 1], u[:, 2], u[:, 3]
    u[:, 4] = 1.0 if mask is None else mask
    e, r = u[:, 5], u[:, 6]
    v_t = u[:, 4:7].transpose(0, 2, 1)
    d = np.empty((batch, width))
    sums = np.zeros((batch, 22))
    active = np.ones(batch, dtype=bool)
    failed = np.zeros(batch, dtype=bool)
    newton = np.zeros((batch, 1, 1))
    previous_cost = np.full(batch, np.inf)
    denominator = np.empty((batch, 4))
    with np.errstate(all="ignore"):
        for _ in range(MAX_ITERATIONS):
            offset, amplitude, mean, sigma = p[:, 0:1], p[:, 1:2], p[:, 2:3], p[:, 3:4]
            s2 = sigma * sigma
            np.subtract(x, mean, out=d)
            np.multiply(d, d, out=e)
            e *= -0.5 / s2
            np.exp(e, out=e)
            if mask is not None:
                e *= mask
            np.multiply(e, d, out=e_d)
            np.multiply(e_d, d, out=e_d2)
            np.multiply(e_d2, d, out=e_d3)
            np.multiply(e_d3, d, out=e_d4)
            np.multiply(e, amplitude, out=r)
            np.subtract(y, r, out=r)
            r -= offset
            if mask is not None:
                r *= mask
            sums[:, :21] = np.matmul(u, v_t).reshape(batch, 21)
            cost = sums[:, _COST]
            failed |= active & ~(cost <= previous_cost * (1.0 + COST_RISE_TOL))
            previous_cost = cost
            second = (sums[:, _TA_INDEX] - s2[:, :, None] * _TB_FACTOR * sums[:, _TB_INDEX]) / amplitude[:, :, None]
            hessian = sums[:, _M_INDEX] - newton * second
            step = _solve(hessian, sums[:, _G_INDEX])
            scale = s2[:, 0] / amplitude[:, 0]
            step[:, 2] *= scale
            step[:, 3] *= scale * sigma[:, 0]
            np.abs(p, out=denominator)
            denominator[:, 0] += denominator[:, 1]
            denominator[:, 1] = denominator[:, 0]
            denominator[:, 2] = denominator[:, 3]
            relative = (np.abs(step) / denominator).max(axis=1)
            used_newton = newton[:, 0, 0] > 0
            done = np.where(used_newton, relative <= NEWTON_STEP_TOL, relative <= GN_STEP_TOL)
            failed |= active & ~np.isfinite(relative)
            active &= ~failed
            step[~active] = 0.0
            p += step
            active &= ~done
            if not active.any():
                break
            newton[relative < NEWTON_FROM] = 1.0
        failed |= active | ~np.isfinite(p).all(axis=1)
    return p, failed
