r"""Convex minimisation in numpy: L-BFGS and damped Newton (Armijo backtracking), and FISTA.

L-BFGS and Newton serve the linear models whose objectives are smooth
([`LogisticRegression`][fms_ml.linear_model.LogisticRegression] with an $\ell_2$ penalty,
[`LinearSVC`][fms_ml.svm.LinearSVC]); FISTA serves composite objectives, smooth plus an
$\ell_1$ term ([`LogisticRegression`][fms_ml.linear_model.LogisticRegression] with
`penalty="l1"` or `"elasticnet"`).
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


def fista(
    fun: FunGrad,
    prox: Callable[[FloatArray, float], FloatArray],
    x0: FloatArray,
    *,
    lipschitz: float,
    tol: float = 1e-6,
    max_iter: int = 10_000,
) -> tuple[FloatArray, int, bool]:
    r"""Minimise $F(x) = f(x) + g(x)$ by FISTA (Beck and Teboulle, 2009) with adaptive restart.

    $f$ is smooth (`fun` returns its value and gradient), $g$ is convex with a cheap proximal
    map, `prox(v, t)` $= \arg\min_x g(x) + \frac{1}{2t}\lVert x - v\rVert^2$ (soft-thresholding
    for an $\ell_1$ term). One step from the extrapolated point $y_k$:

    $$x_{k+1} = \operatorname{prox}_{g/L}\big(y_k - \nabla f(y_k) / L\big),\qquad
    \theta_{k+1} = \tfrac{1 + \sqrt{1 + 4\theta_k^2}}{2},\qquad
    y_{k+1} = x_{k+1} + \tfrac{\theta_k - 1}{\theta_{k+1}}(x_{k+1} - x_k).$$

    The step $1/L$ is found by backtracking: $L$ doubles until the quadratic upper bound
    $f(x_{k+1}) \le f(y_k) + \nabla f(y_k)^\top d + \frac L2\lVert d\rVert^2$,
    $d = x_{k+1} - y_k$, holds, and every step first tries $0.8 L$, so $L$ follows the local
    curvature down from the global bound `lipschitz`. The momentum restarts ($\theta = 1$) when
    it points uphill, $(y_k - x_{k+1})^\top(x_{k+1} - x_k) > 0$ (O'Donoghue and Candès, 2015),
    which gives linear convergence on (locally) strongly convex problems.

    Returns:
        `(x, n_iter, converged)`; converged means the gradient mapping
        $\max_i |L\,(y_k - x_{k+1})_i| \le$ `tol` (it is $\nabla f$ where $g$ is smooth, and 0
        exactly at a minimiser).
    """
    x = x0.copy()
    y = x0.copy()
    theta = 1.0
    L = float(lipschitz)
    for it in range(1, max_iter + 1):
        fy, gy = fun(y)
        L *= 0.8
        while True:
            x_new = prox(y - gy / L, 1.0 / L)
            d = x_new - y
            f_new, _ = fun(x_new)
            if f_new <= fy + float(gy @ d) + 0.5 * L * float(d @ d) + 1e-15 * abs(fy):
                break
            L *= 2.0
        if np.max(np.abs(d)) * L <= tol:
            return x_new, it, True
        if float((y - x_new) @ (x_new - x)) > 0.0:  # momentum points uphill: restart
            theta = 1.0
            y = x_new.copy()
        else:
            theta_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * theta * theta))
            y = x_new + ((theta - 1.0) / theta_new) * (x_new - x)
            theta = theta_new
        x = x_new
    return x, max_iter, False
