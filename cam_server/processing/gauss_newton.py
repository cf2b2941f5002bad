"""Fast path of the gaussian fit: a batched Newton solver started from a close estimate (spec 3.2, step 3).

Why: the robust Levenberg-Marquardt (:mod:`cam_server.processing.gauss_lm`) needs ~40 evaluations from the spec's
initial guesses, and for profiles of a few hundred points each evaluation costs numpy call overhead, not
arithmetic. Here the start comes from the half-maximum crossings of the (3-point smoothed) profile, a few % off the
minimum, and one iteration is ~25 numpy calls for all problems of the batch, so 3-5 iterations give the
least-squares minimum of the full profile to ~1e-8 relative.

Maths. Model ``f = o + a·E``, ``E = exp(−d²/2s²)``, ``d = x − μ``, residual ``r = y − f``. In the variables
(o, a, μ·a/s², s·a/s³) — a linear rescaling at the current point — the Jacobian columns are ``[1, E, E·d, E·d²]``.
Every sum an iteration needs (JᵀJ, Jᵀr, the second-order terms Σ r·∇²f = Σ r·E·dᵏ for k ≤ 4) is a linear
combination of the entries of one matrix product ``U·Vᵀ`` with ``U = [1, E, E·d, E·d², E·d³, E·d⁴]`` and
``V = [y, 1, E]`` (the residual never has to be formed: Σ Uᵢ·r = Σ Uᵢ·y − o·Σ Uᵢ − a·Σ Uᵢ·E), and the Newton system
is one constant matrix applied to those sums. A problem takes Gauss-Newton steps (robust far from the minimum)
until its relative step is below :data:`NEWTON_FROM`, then full Newton steps (quadratic convergence, also for noisy
large-residual profiles where Gauss-Newton is only linear); it has converged when a Newton step is below
:data:`NEWTON_STEP_TOL` (the error left after applying it is of the order of its square). Padded points sit at
x = :data:`FAR` where E is exactly 0, so they add nothing to any sum.

Rows longer than :data:`WINDOW_MIN_WIDTH` are cut to a window of ±WINDOW_MARGIN·WINDOW_SIGMAS·σ0 around the start
(Σ y and n taken from the whole row), checked at the end to hold ±WINDOW_SIGMAS·σ around the result.

Anything unusual — singular or non-finite system, still taking Gauss-Newton steps after :data:`HOPELESS_AFTER`
iterations (noise-only profiles), no convergence within :data:`MAX_ITERATIONS`, a final cost above the starting
cost, a too narrow window — marks the problem failed; the caller then retries from the spec's guesses and finally
falls back to the Levenberg-Marquardt from the spec's guesses, so the results never depend on this path being lucky.
"""

from __future__ import annotations

import numpy as np

try:  # the gufunc behind np.linalg.solve, without its ~5 µs Python wrapper (errstate, type checks)
    from numpy.linalg import _umath_linalg

    _solve = _umath_linalg.solve1
except (ImportError, AttributeError):  # pragma: no cover - other numpy versions
    _solve = np.linalg.solve

MAX_ITERATIONS = 8
NEWTON_STEP_TOL = 1e-4  # relative Newton step at which a problem has converged (error left ~ its square)
HOPELESS_AFTER = 4  # iterations after which a problem still taking Gauss-Newton steps is given up
NEWTON_FROM = 0.3  # a problem switches from Gauss-Newton to full Newton once its relative step is below this
WINDOW_SIGMAS = 8.0  # exp(−8²/2) ≈ 1.3e-14: beyond this the model is the offset to double precision
WINDOW_MARGIN = 2.0  # the window is cut around the start, whose σ may be off by this factor
WINDOW_MAX_FRACTION = 0.7  # no window unless it is at most this part of the row
WINDOW_MIN_WIDTH = 1000  # below this the numpy call overhead, not the row length, sets the cost
FAR = 1e150  # x of padded points: exp(−(FAR−μ)²/2s²) == 0 while (FAR−μ)·0 stays 0
HALF_MAX_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))  # σ = FWHM / 2.3548


def _system_matrix() -> np.ndarray:
    """Constant (32, 20) map from the sums vector to the Newton system (H' flat 4x4, then g').

    Sums vector: [0:18] U·Vᵀ (row i of U, column j of V at 3i + j); [18:24] R_i = Σ Uᵢ·r (Σr, Σ r·E, Σ r·E·dᵏ);
    [24:29] w/a · Σ r·E·dᵏ for k = 0..4; [29:32] s²·w/a · Σ r·E·dᵏ for k = 0..2 (w = 1 for a Newton step).
    """
    c = np.zeros((32, 20))
    for i in range(4):
        for j in range(4):
            if i == 0 or j == 0:
                c[3 * max(i, j) + 1, 4 * i + j] = 1.0  # Σ Uⱼ·1
            else:
                c[3 * (i + j - 1) + 2, 4 * i + j] = 1.0  # Σ E²·d^(i+j−2)
    # − (1/a)·Σ r·∇²f in the scaled variables: entries (a,μ)=S1, (a,s)=S2, (μ,μ)=S2−s²S0, (μ,s)=S3−2s²S1,
    # (s,s)=S4−3s²S2 with S_k = Σ r·E·dᵏ; terms (row of S_k or of s²·S_k in the sums vector, factor).
    second = {(1, 2): [(24 + 1, 1.0)], (1, 3): [(24 + 2, 1.0)], (2, 2): [(24 + 2, 1.0), (29 + 0, -1.0)],
              (2, 3): [(24 + 3, 1.0), (29 + 1, -2.0)], (3, 3): [(24 + 4, 1.0), (29 + 2, -3.0)]}
    for (i, j), terms in second.items():
        for row, factor in terms:
            for a, b in {(i, j), (j, i)}:
                c[row, 4 * a + b] -= factor
    for i in range(4):
        c[18 + i, 16 + i] = 1.0
    return c


_SYSTEM = _system_matrix()


def start_estimate(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(B, 4) starting points from the half-maximum crossings around the maximum of each row.

    Rows may be edge-padded to a common length (the padding never creates a crossing). Baseline = median of the row
    (robust, unlike the minimum), peak = maximum of the 3-point sums (far less noise-inflated than the raw
    maximum); the interpolated crossings of the half level nearest to the peak give the FWHM → σ (corrected for
    the smoothing) and their midpoint → μ.
    """
    batch, width = y.shape
    rows = np.arange(batch)
    base = np.partition(y, width // 2, axis=1)[:, width // 2]
    if width >= 5:
        smooth = y[:, :-2] + y[:, 1:-1]
        smooth += y[:, 2:]
        scale, widen = 3.0, 2.0 / 3.0
    else:
        smooth, scale, widen = y, 1.0, 0.0
    n = smooth.shape[1]
    peak = smooth.argmax(axis=1)
    top = smooth[rows, peak]
    level = 0.5 * (scale * base + top)
    columns = np.arange(n)
    below = smooth <= level[:, None]
    before = below & (columns < peak[:, None])
    left = n - 1 - before[:, ::-1].argmax(axis=1)  # last point at or below the level left of the peak
    left[~before[rows, left]] = 0  # none: the first point
    after = below & (columns > peak[:, None])
    right = after.argmax(axis=1)  # first one right of it
    right[~after[rows, right]] = n - 1  # none: the last point
    # Points around both crossings: [left, left+1, right-1, right] (padded points repeat the edge: harmless).
    index = np.empty((batch, 4), dtype=np.intp)
    index[:, 0] = left
    index[:, 1] = left + 1
    index[:, 2] = right - 1
    index[:, 3] = right
    index += (rows * n)[:, None]
    ys = np.take(smooth, index)
    index += (rows * (width - n) + (width - n) // 2)[:, None]  # same points in the unsmoothed x
    xc = np.take(x, index)
    with np.errstate(all="ignore"):
        fraction = (level[:, None] - ys[:, 0::2]) / (ys[:, 1::2] - ys[:, 0::2])
        fraction = np.fmin(np.fmax(fraction, 0.0), 1.0)  # NaN (flat) -> 0
        crossing = xc[:, 0::2] + fraction * (xc[:, 1::2] - xc[:, 0::2])
        step = np.abs(x[:, 1] - x[:, 0])
        fwhm = np.abs(crossing[:, 1] - crossing[:, 0])
        sigma = np.sqrt(np.maximum((fwhm * HALF_MAX_TO_SIGMA) ** 2 - widen * step * step, 0.25 * step * step))
    start = np.empty((batch, 4))
    start[:, 0] = base
    start[:, 1] = top / scale - base
    start[:, 2] = 0.5 * (crossing[:, 0] + crossing[:, 1])
    start[:, 3] = sigma
    return start


def newton_fit(x: np.ndarray, y: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares fit of each row of ``y`` (B, N) over ``x``; returns (params (B, 4), failed (B,) bool).

    Padded points must have x = :data:`FAR` (any finite y).
    """
    batch = len(y)
    p = start.astype(np.float64, copy=True)
    real = x < FAR
    y_squared = np.einsum("ij,ij->i", y, y * real)
    window_x, window_y, radius = _window(x, y, p)
    if radius is not None:  # Σ y and n of the whole rows
        constants = np.stack([np.einsum("ij,ij->i", y, real), real.sum(axis=1)], axis=1)
    x, y = window_x, window_y
    width = y.shape[1]
    buffer = np.empty((batch, 7, width))  # rows: y, 1, E, E·d, E·d², E·d³, E·d⁴
    buffer[:, 0] = y
    np.less(x, FAR, out=buffer[:, 1], casting="unsafe")
    e, e_d, e_d2, e_d3, e_d4 = (buffer[:, i] for i in range(2, 7))
    u = buffer[:, 1:7]
    v_t = buffer[:, 0:3].transpose(0, 2, 1)
    d = np.empty((batch, width))
    sums = np.empty((batch, 32))
    products = sums[:, :18].reshape(batch, 6, 3)
    residual_sums = sums[:, 18:24, None]
    coefficients = np.ones((batch, 3, 1))
    system = np.empty((batch, 20))
    hessian = system[:, :16].reshape(batch, 4, 4)
    gradient = system[:, 16:20]
    rescale = np.ones((batch, 4))
    weight = np.zeros(batch)  # 1.0 once a problem takes Newton steps
    inverse_a = np.empty(batch)
    first_cost = None
    relative = np.full(batch, np.inf)
    hopeless = np.zeros(batch, dtype=bool)
    with np.errstate(all="ignore"):
        # Scale of each parameter for the convergence test: |o|+|a| for the linear ones, |σ| for μ and σ.
        norm = np.empty((batch, 4))
        norm[:, :2] = 1.0 / (np.abs(p[:, 0:1]) + np.abs(p[:, 1:2]))
        norm[:, 2:] = 1.0 / np.abs(p[:, 3:4])
        for iteration in range(MAX_ITERATIONS):
            amplitude, mean, sigma = p[:, 1:2], p[:, 2:3], p[:, 3:4]
            s2 = sigma * sigma
            np.subtract(x, mean, out=d)
            np.multiply(d, d, out=e)
            e *= -0.5 / s2
            np.exp(e, out=e)
            np.multiply(e, d, out=e_d)
            np.multiply(e_d, d, out=e_d2)
            np.multiply(e_d2, d, out=e_d3)
            np.multiply(e_d3, d, out=e_d4)
            np.matmul(u, v_t, out=products)
            if radius is not None:  # Σ y and n of the whole row, not only of the window
                products[:, 0, 0:2] = constants
            np.negative(p[:, 0:2, None], out=coefficients[:, 1:3])
            np.matmul(products, coefficients, out=residual_sums)
            if first_cost is None:
                first_cost = _cost(y_squared, sums, coefficients)
            np.divide(weight, amplitude[:, 0], out=inverse_a)
            np.multiply(sums[:, 19:24], inverse_a[:, None], out=sums[:, 24:29])
            np.multiply(sums[:, 24:27], s2, out=sums[:, 29:32])
            np.matmul(sums, _SYSTEM, out=system)
            step = _solve(hessian, gradient)
            np.divide(s2, amplitude, out=rescale[:, 2:3])
            np.multiply(rescale[:, 2:3], sigma, out=rescale[:, 3:4])
            step *= rescale
            p += step
            np.abs(step, out=step)
            step *= norm
            relative = step.max(axis=1)
            if iteration < HOPELESS_AFTER:
                if weight.all() and np.fmax.reduce(relative) <= NEWTON_STEP_TOL:
                    break
            else:
                # Still far off after HOPELESS_AFTER iterations (noise-only profiles): give up on those rows
                # instead of making the whole batch run MAX_ITERATIONS.
                hopeless |= ~(relative < NEWTON_FROM)
                relevant = ~hopeless
                if weight[relevant].all() and np.fmax.reduce(relative[relevant], initial=0.0) <= NEWTON_STEP_TOL:
                    break
            np.less(relative, NEWTON_FROM, out=weight, casting="unsafe")
        last_cost = _cost(y_squared, sums, coefficients)
        failed = hopeless | ~(relative <= NEWTON_STEP_TOL) | ~np.isfinite(p).all(axis=1)
        if radius is not None:  # the window must hold every point where the final model is not the offset
            failed |= ~(WINDOW_SIGMAS * np.abs(p[:, 3]) + np.abs(p[:, 2] - start[:, 2]) <= radius)
        # The cost before the last (tiny) step must not be above the cost at the start.
        failed |= ~(last_cost <= first_cost * (1.0 + 1e-9) + 1e-13 * y_squared)
    return p, failed


def _window(x: np.ndarray, y: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Each row cut to the points within ``radius`` = WINDOW_MARGIN·WINDOW_SIGMAS·σ0 of μ0 (a common width).

    Why: beyond WINDOW_SIGMAS·σ the gaussian is below 1e-14 of its amplitude and every sum but Σ y and n (kept
    from the whole row) gets nothing from there, while the per-iteration work shrinks with the width. The rows
    must be monotonic (points inside contiguous); otherwise, or when the window would not be much shorter than the
    row, the rows are returned whole (radius None). The caller checks at the end that the window was wide enough.
    """
    batch, width = y.shape
    if width < WINDOW_MIN_WIDTH:
        return x, y, None
    with np.errstate(all="ignore"):
        radius = (WINDOW_MARGIN * WINDOW_SIGMAS) * np.abs(start[:, 3])
        inside = np.abs(x - start[:, 2:3]) <= radius[:, None]
    count = np.count_nonzero(inside, axis=1)
    span = int(count.max()) + 2
    if span > WINDOW_MAX_FRACTION * width or not count.all():
        return x, y, None
    first = inside.argmax(axis=1)
    last = width - 1 - inside[:, ::-1].argmax(axis=1)
    if (last - first + 1 != count).any():
        return x, y, None  # not contiguous: not a monotonic axis
    index = np.maximum(first - 1, 0)[:, None] + np.arange(span)
    beyond = index >= width
    np.minimum(index, width - 1, out=index)
    index += (np.arange(batch) * width)[:, None]
    window_x = np.take(x, index)
    window_x[beyond] = FAR
    return window_x, np.take(y, index), radius


def _cost(y_squared: np.ndarray, sums: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """Σ r² = Σ y² − o·(Σ y + Σ r) − a·(Σ y·E + Σ r·E) from the sums of the current iteration."""
    return y_squared + coefficients[:, 1, 0] * (sums[:, 0] + sums[:, 18]) + coefficients[:, 2, 0] * (
        sums[:, 3] + sums[:, 19])
