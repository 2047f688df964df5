r"""Smooth convex minimisation in numpy: L-BFGS and damped Newton, both with Armijo backtracking.

Used by the linear models whose objectives are smooth ([`LogisticRegression`][fms_ml.linear_model.LogisticRegression],
[`LinearSVC`][fms_ml.svm.LinearSVC]).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
FunGrad = Callable[[FloatArray], tuple[float, FloatArray]]


def lbfgs(
    fun: FunGrad, x0: FloatArray, *, tol: float = 1e-6, max_iter: int = 1000, m: int = 10
) -> tuple[FloatArray, int, bool]:
    r"""Minimise `fun` (returning value and gradient) by limited-memory BFGS (Nocedal, 1980).

    The two-loop recursion applies the inverse-Hessian approximation built from the last `m`
    pairs $s_k = x_{k+1} - x_k$, $y_k = g_{k+1} - g_k$ to the gradient; the step length is found by
    backtracking until the Armijo condition $f(x + t d) \le f(x) + c_1 t\, g^\top d$ holds.

    Returns:
        `(x, n_iter, converged)`; converged means $\max_i |g_i| \le$ `tol`.
    """
    x = x0.copy()
    f, g = fun(x)
    mem: deque[tuple[FloatArray, FloatArray, float]] = deque(maxlen=m)
    for it in range(1, max_iter + 1):
        if np.max(np.abs(g)) <= tol:
            return x, it - 1, True
        q = g.copy()
        alphas = []
        for s, y, rho in reversed(mem):
            a = rho * (s @ q)
            alphas.append(a)
            q -= a * y
        if mem:
            s, y, _ = mem[-1]
            q *= (s @ y) / (y @ y)
        else:
            q /= max(1.0, float(np.linalg.norm(g)))
        for (s, y, rho), a in zip(mem, reversed(alphas), strict=True):
            b = rho * (y @ q)
            q += (a - b) * s
        d = -q
        gd = g @ d
        if gd >= 0:  # not a descent direction: restart from steepest descent
            mem.clear()
            d, gd = -g, -(g @ g)
        t = 1.0
        for _ in range(60):
            x_new = x + t * d
            f_new, g_new = fun(x_new)
            if f_new <= f + 1e-4 * t * gd:
                break
            t *= 0.5
        else:
            return x, it, False
        s, y = x_new - x, g_new - g
        sy = float(s @ y)
        if sy > 1e-12 * np.sqrt((s @ s) * (y @ y)):
            mem.append((s, y, 1.0 / sy))
        if abs(f - f_new) <= 1e-15 * max(1.0, abs(f)) and np.max(np.abs(g_new)) <= 10 * tol:
            return x_new, it, True
        x, f, g = x_new, f_new, g_new
    return x, max_iter, bool(np.max(np.abs(g)) <= tol)


def newton(
    fun: FunGrad,
    hess: Callable[[FloatArray], FloatArray],
    x0: FloatArray,
    *,
    tol: float = 1e-8,
    max_iter: int = 100,
) -> tuple[FloatArray, int, bool]:
    r"""Damped Newton: solve $H d = -g$ (Cholesky), backtrack on Armijo. Quadratic convergence.

    `hess(x)` must return a symmetric positive-definite matrix.
    """
    x = x0.copy()
    f, g = fun(x)
    for it in range(1, max_iter + 1):
        if np.max(np.abs(g)) <= tol:
            return x, it - 1, True
        H = hess(x)
        try:
            L = np.linalg.cholesky(H)
            d = -np.linalg.solve(L.T, np.linalg.solve(L, g))
        except np.linalg.LinAlgError:
            d = -np.linalg.lstsq(H, g, rcond=None)[0]
        gd = g @ d
        t = 1.0
        for _ in range(60):
            f_new, g_new = fun(x + t * d)
            if f_new <= f + 1e-4 * t * gd:
                break
            t *= 0.5
        else:
            return x, it, bool(np.max(np.abs(g)) <= 10 * tol)
        x = x + t * d
        f, g = f_new, g_new
    return x, max_iter, bool(np.max(np.abs(g)) <= tol)
