"""Robust path of the gaussian fit: batched Levenberg-Marquardt from the spec's initial guesses (spec 3.2).

Used for the problems where the fast Newton path (:mod:`cam_server.processing.gauss_newton`) gives up. Marquardt's
algorithm (damping scaled by diag(JᵀJ), like MINPACK's lmder behind ``scipy.optimize.curve_fit``) with Nielsen's
damping update and scipy's ftol/xtol; all problems of a batch are padded to a common length and masked.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FTOL = 1.49012e-08  # scipy's leastsq default ftol / xtol
XTOL = 1.49012e-08
MAX_EVALUATIONS = 1000  # scipy's default maxfev for 4 parameters: 200·(4+1)


def levenberg_marquardt(problems: Sequence[tuple[np.ndarray, np.ndarray]], p0: np.ndarray
                         ) -> list[tuple[float, float, float, float] | None]:
    """Vectorised LM over B problems padded to a common length; None for a problem that failed."""
    batch = len(problems)
    length = max(len(p) for _, p in problems)
    x = np.zeros((batch, length))
    y = np.zeros((batch, length))
    mask = None
    for b, (axis, profile) in enumerate(problems):
        n = len(profile)
        x[b, :n] = axis
        y[b, :n] = profile
        if n != length:
            if mask is None:
                mask = np.ones((batch, length))
            mask[b, n:] = 0.0
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        # Non-finite data: fit only the clean rows (rare path, keep it simple by recursion on them).
        good = [b for b in range(batch) if np.isfinite(x[b]).all() and np.isfinite(y[b]).all()]
        out: list[tuple[float, float, float, float] | None] = [None] * batch
        if good:
            sub = levenberg_marquardt([problems[b] for b in good], p0[good])
            for j, b in enumerate(good):
                out[b] = sub[j]
        return out

    p = p0.astype(np.float64).copy()
    jac = np.empty((batch, 4, length))
    jac[:, 0, :] = 1.0 if mask is None else mask

    def evaluate(params: np.ndarray, jout: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Residuals (B, N) and cost (B,); fills rows 1..3 of jout with the Jacobian of the model."""
        offset = params[:, 0:1]
        amplitude = params[:, 1:2]
        mean = params[:, 2:3]
        inv_var = 1.0 / (params[:, 3:4] * params[:, 3:4])
        d = x - mean
        e = jout[:, 1, :]
        np.multiply(d, d, out=e)
        e *= -0.5 * inv_var
        np.exp(e, out=e)
        if mask is not None:
            e *= mask
        residual = y - offset
        residual -= amplitude * e
        if mask is not None:
            residual *= mask
        dm = jout[:, 2, :]
        np.multiply(e, amplitude * inv_var, out=dm)
        dm *= d
        ds = jout[:, 3, :]
        np.multiply(dm, d, out=ds)
        ds /= params[:, 3:4]
        cost = np.einsum("bn,bn->b", residual, residual)
        return residual, cost

    with np.errstate(all="ignore"):
        residual, cost = evaluate(p, jac)
        trial_jac = jac.copy()
        lam = np.full(batch, 1e-3)
        nu = np.full(batch, 2.0)
        scale = np.zeros((batch, 4))
        active = np.isfinite(cost)
        failed = ~active
        evaluations = 1
        while evaluations < MAX_EVALUATIONS:
            system = np.matmul(jac, jac.transpose(0, 2, 1))
            grad = np.matmul(jac, residual[:, :, None])
            flat = system.reshape(batch, 16)
            np.maximum(scale, flat[:, ::5], out=scale)
            scale[scale == 0.0] = 1.0
            damping = lam[:, None] * scale
            flat[:, ::5] += damping
            try:
                step = np.linalg.solve(system, grad)[:, :, 0]
            except np.linalg.LinAlgError:
                step = _solve_each(system, grad[:, :, 0], failed)
                active &= ~failed
            grad = grad[:, :, 0]
            trial = p + step
            trial_residual, trial_cost = evaluate(trial, trial_jac)
            evaluations += 1
            # Predicted reduction of the linearised cost: (A + λD)δ = g  =>  2δᵀg − δᵀAδ = δᵀg + λδᵀDδ.
            predicted = np.einsum("bi,bi->b", step, grad + damping * step)
            reduction = cost - trial_cost
            accept = active & (trial_cost < cost)
            small_step = np.max(np.abs(step) / (np.abs(p) + XTOL), axis=1) <= XTOL
            converged = (((np.abs(reduction) <= FTOL * cost) & (predicted <= FTOL * cost))
                         | small_step | (cost == 0.0) | (lam > 1e16))
            if accept.all():
                p, trial = trial, p
                residual, trial_residual = trial_residual, residual
                cost = trial_cost
                jac, trial_jac = trial_jac, jac
            elif accept.any():
                p[accept] = trial[accept]
                residual[accept] = trial_residual[accept]
                cost[accept] = trial_cost[accept]
                jac[accept] = trial_jac[accept]
            # Nielsen's damping update: shrink by how well the linear model predicted the gain, grow
            # geometrically on consecutive failures (far fewer evaluations than a fixed x10 / /10 rule).
            gain = reduction / np.where(predicted > 0, predicted, np.inf)
            shrink = np.maximum(1.0 / 3.0, 1.0 - (2.0 * gain - 1.0) ** 3)
            lam = np.where(accept, lam * shrink, lam * nu)
            nu = np.where(accept, 2.0, nu * 2.0)
            np.maximum(lam, 1e-12, out=lam)
            # Converged / stuck problems are frozen by zeroing their rows' future steps via a huge damping.
            active &= ~converged
            if not active.any():
                break
            lam[~active] = 1e30
        failed |= active  # evaluation budget exhausted -> no convergence
        failed |= ~np.isfinite(p).all(axis=1)
    return [None if failed[b] else (float(p[b, 0]), float(p[b, 1]), float(p[b, 2]), float(p[b, 3]))
            for b in range(batch)]


def _solve_each(system: np.ndarray, grad: np.ndarray, failed: np.ndarray) -> np.ndarray:
    """Per-problem fallback when the batched solve hits a singular system; marks those problems failed."""
    step = np.zeros_like(grad)
    for b in range(len(grad)):
        try:
            step[b] = np.linalg.solve(system[b], grad[b])
        except np.linalg.LinAlgError:
            failed[b] = True
    return step
