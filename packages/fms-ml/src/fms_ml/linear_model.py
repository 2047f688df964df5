r"""Linear models: least squares, ridge, lasso/elastic net, logistic regression (and SGD's, re-exported).

All of them predict with $\hat y = X w + b$ (or a link of it) and differ in the risk they minimise:

| model | objective |
|---|---|
| [`LinearRegression`][fms_ml.linear_model.LinearRegression] | $\lVert y - Xw - b\rVert_2^2$ |
| [`Ridge`][fms_ml.linear_model.Ridge] | $\lVert y - Xw - b\rVert_2^2 + \alpha \lVert w\rVert_2^2$ |
| [`ElasticNet`][fms_ml.linear_model.ElasticNet] | $\frac{1}{2n}\lVert y - Xw - b\rVert_2^2 + \alpha\rho \lVert w\rVert_1 + \frac{\alpha(1-\rho)}{2}\lVert w\rVert_2^2$ |
| [`Lasso`][fms_ml.linear_model.Lasso] | elastic net with $\rho = 1$ |
| [`LogisticRegression`][fms_ml.linear_model.LogisticRegression] | $\sum_i -\log p(y_i \mid x_i) + \frac{1}{2C}\lVert W\rVert_2^2$ (or $\frac1C\lVert W\rVert_1$, or the elastic net of both) |

The scalings are scikit-learn's, so the same `alpha` or `C` gives the same coefficients. The
intercept $b$ is never penalised: with a squared loss it is removed by centring $X$ and $y$, and
recovered as $b = \bar y - \bar x^\top w$.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fms_ml._optim import fista, lbfgs, newton
from fms_ml._special import _log1pexp, _sigmoid, _softmax
from fms_ml._validation import (
    check_allocation,
    check_sample_weight,
    check_X_y,
    compute_class_weight,
    warn_not_converged,
)
from fms_ml.base import BaseEstimator, ClassifierMixin, RegressorMixin
from fms_ml.sgd import SGDClassifier, SGDRegressor  # re-exported: where scikit-learn has them

__all__ = [
    "ElasticNet",
    "Lasso",
    "LinearRegression",
    "LogisticRegression",
    "Ridge",
    "SGDClassifier",
    "SGDRegressor",
    "enet_path",
]

FloatArray = NDArray[np.float64]


def _center(
    X: FloatArray, y: FloatArray, fit_intercept: bool
) -> tuple[FloatArray, FloatArray, FloatArray, Any]:
    """Centre `X` and `y` when fitting an intercept; return offsets for `b = y_off - x_off @ w`."""
    if not fit_intercept:
        return X, y, np.zeros(X.shape[1]), np.zeros(y.shape[1:]) if y.ndim > 1 else 0.0
    x_off, y_off = X.mean(axis=0), y.mean(axis=0)
    return X - x_off, y - y_off, x_off, y_off


def _gram(Xc: FloatArray, yc: FloatArray, owner: Any) -> tuple[FloatArray, FloatArray, float]:
    r"""$(X^\top X, X^\top y, y^\top y)$ for coordinate descent, refused first if $X^\top X$ will not fit."""
    p = Xc.shape[1]
    check_allocation((p, p), "the Gram matrix X^T X", "select fewer features first", owner=owner)
    return Xc.T @ Xc, Xc.T @ yc, float(yc @ yc)


def _center_weighted(
    X: FloatArray, y: FloatArray, fit_intercept: bool, sample_weight: ArrayLike | None
) -> tuple[FloatArray, FloatArray, FloatArray, Any]:
    r"""Weighted least squares reduced to the unweighted kind (scikit-learn's `_rescale_data`).

    $\sum_i s_i (y_i - x_i^\top w - b)^2$ is minimised over $b$ by
    $b = \bar y_s - \bar x_s^\top w$ with the weighted means $\bar x_s = \sum_i s_i x_i / \sum_i s_i$;
    what is left, $\sum_i s_i (\tilde y_i - \tilde x_i^\top w)^2$ on the centred data, is the plain
    squared error of the rows scaled by $\sqrt{s_i}$. A row of weight $k$ then acts as $k$
    copies, and a row of weight 0 as no row. Without weights this is `_center`.
    """
    if sample_weight is None:
        return _center(X, y, fit_intercept)
    sw = check_sample_weight(sample_weight, X.shape[0])
    X, y, x_off, y_off = _center(X, y, False)  # zero offsets
    if fit_intercept:
        x_off = np.average(X, axis=0, weights=sw)
        y_off = np.average(y, axis=0, weights=sw)
        X, y = X - x_off, y - y_off
    root = np.sqrt(sw)
    return X * root[:, None], y * (root[:, None] if y.ndim > 1 else root), x_off, y_off


class _LinearRegressorBase(RegressorMixin, BaseEstimator):
    coef_: FloatArray
    intercept_: Any

    def predict(self, X: ArrayLike) -> FloatArray:
        """$\\hat y = X w + b$, shape `(n_samples,)` (or `(n_samples, n_targets)`)."""
        Xa = self._validate_predict_input(X)
        return np.asarray(Xa @ self.coef_.T + self.intercept_)

    def _set_intercept(self, x_off: FloatArray, y_off: Any) -> None:
        self.intercept_ = y_off - x_off @ self.coef_.T
        if np.ndim(self.intercept_) == 0:
            self.intercept_ = float(self.intercept_)


class LinearRegression(_LinearRegressorBase):
    r"""Ordinary least squares, $\min_w \lVert y - Xw - b\rVert_2^2$, solved by `numpy.linalg.lstsq`.

    `lstsq` uses the SVD of the centred $X$, so rank-deficient designs get the minimum-norm
    solution, as scikit-learn's (which also calls LAPACK's `gelsd`).

    Attributes:
        coef_: `(n_features,)` or `(n_targets, n_features)` weights.
        intercept_: the intercept(s).
        rank_: rank of the centred design; singular_: its singular values.
    """

    _tag_overrides: ClassVar[dict[str, bool]] = {"target_tags.multi_output": True}  # 2-d y

    def __init__(self, *, fit_intercept: bool = True) -> None:
        self.fit_intercept = fit_intercept

    def fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> LinearRegression:
        r"""Fit by least squares; with `sample_weight` $s$, minimise $\sum_i s_i (y_i - x_i^\top w - b)^2$.

        Rank and singular values are then those of the centred design scaled by $\sqrt{s_i}$.
        """
        Xa, ya = check_X_y(X, y, y_numeric=True, multi_output=True)
        self.n_features_in_ = Xa.shape[1]
        Xc, yc, x_off, y_off = _center_weighted(Xa, ya, self.fit_intercept, sample_weight)
        coef, _, self.rank_, self.singular_ = np.linalg.lstsq(Xc, yc, rcond=None)
        self.coef_ = np.asarray(coef.T, dtype=np.float64)
        self._set_intercept(x_off, y_off)
        return self


class Ridge(_LinearRegressorBase):
    r"""Least squares with an $\ell_2$ penalty: $\min_w \lVert y - Xw - b\rVert_2^2 + \alpha\lVert w\rVert_2^2$.

    Closed form on centred data: $w = (X^\top X + \alpha I)^{-1} X^\top y$ (solver `"cholesky"`,
    or its dual $w = X^\top (X X^\top + \alpha I)^{-1} y$ when $p > n$), or through the SVD
    $X = U S V^\top$, $w = V \operatorname{diag}\!\big(\tfrac{s}{s^2 + \alpha}\big) U^\top y$ (solver
    `"svd"`, robust to near-singular designs). As a prior: the MAP estimate under
    $w \sim \mathcal N(0, \tfrac{\sigma^2}{\alpha} I)$.

    Attributes:
        coef_: `(n_features,)` or `(n_targets, n_features)` weights.
        intercept_: the intercept (an array for several targets).
        solver_: the solver that produced `coef_` (`"cholesky"`, or `"svd"` when asked for or
            when the normal equations are singular).
        n_iter_: `None`: both solvers are direct (scikit-learn's value for its direct solvers).
    """

    _tag_overrides: ClassVar[dict[str, bool]] = {"target_tags.multi_output": True}  # 2-d y

    def __init__(
        self,
        alpha: float = 1.0,
        *,
        fit_intercept: bool = True,
        solver: Literal["auto", "cholesky", "svd"] = "auto",
    ) -> None:
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.solver = solver

    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> Ridge:
        r"""Fit in closed form; with `sample_weight` $s$ the loss is $\sum_i s_i (y_i - x_i^\top w - b)^2$.

        The penalty $\alpha\lVert w\rVert_2^2$ is not scaled by the weights (scikit-learn's
        convention), so integer weights equal repeated rows.
        """
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0; got {self.alpha}.")
        if self.solver not in ("auto", "cholesky", "svd"):
            raise ValueError(f"solver must be 'auto', 'cholesky' or 'svd'; got {self.solver!r}.")
        Xa, ya = check_X_y(X, y, y_numeric=True, multi_output=True)
        self.n_features_in_ = Xa.shape[1]
        Xc, yc, x_off, y_off = _center_weighted(Xa, ya, self.fit_intercept, sample_weight)
        n, p = Xc.shape
        a = float(self.alpha)
        coef: NDArray[Any] | None = None
        self.solver_ = "cholesky"
        if self.solver in ("auto", "cholesky"):
            m = min(n, p)  # the primal p x p system, or the dual n x n one when p > n
            check_allocation((m, m), "the normal equations", 'use solver="svd"', owner=self)
            try:
                if p <= n:
                    coef = np.linalg.solve(Xc.T @ Xc + a * np.eye(p), Xc.T @ yc)
                else:
                    coef = Xc.T @ np.linalg.solve(Xc @ Xc.T + a * np.eye(n), yc)
            except np.linalg.LinAlgError:
                coef = None  # singular (alpha = 0 on a rank-deficient design): fall back to SVD
        if coef is None:
            self.solver_ = "svd"
            U, s, Vt = np.linalg.svd(Xc, full_matrices=False)
            with np.errstate(divide="ignore", invalid="ignore"):
                d = np.where(s > 1e-15 * s.max(), s / (s**2 + a), 0.0)
            coef = Vt.T @ (d[:, None] * (U.T @ yc.reshape(n, -1)))
            coef = coef.reshape((p, *yc.shape[1:]))
        self.coef_ = coef.T
        self.n_iter_ = None  # a direct solver: no iterations (scikit-learn's value for it)
        self._set_intercept(x_off, y_off)
        return self


def _enet_cd(
    G: FloatArray,
    Xty: FloatArray,
    yty: float,
    l1: float,
    l2: float,
    w: FloatArray,
    max_iter: int,
    tol: float,
) -> tuple[FloatArray, float, int]:
    r"""Cyclic coordinate descent on the Gram matrix (scikit-learn's `enet_coordinate_descent_gram`).

    Minimises $\tfrac12 w^\top G w - w^\top X^\top y + l_1 \lVert w\rVert_1 + \tfrac{l_2}{2}\lVert w\rVert_2^2$
    (the elastic-net objective times $n$). Each coordinate has the closed-form update

    $$w_j \leftarrow \frac{S\big(X_j^\top r + G_{jj} w_j,\ l_1\big)}{G_{jj} + l_2},\qquad S(z, t) = \operatorname{sign}(z)\max(|z| - t, 0),$$

    where $X^\top r = X^\top y - G w$ is kept up to date in $O(p)$ per coordinate. Stops when the
    duality gap is below `tol` (checked when the largest update is small, as scikit-learn does).
    """
    p = G.shape[0]
    diag = np.diag(G).copy()
    Xtr = Xty - G @ w  # X^T r
    gap = math.inf
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        w_max = d_w_max = 0.0
        for j in range(p):
            gjj = diag[j]
            if gjj == 0.0:
                continue
            wj = w[j]
            z = Xtr[j] + gjj * wj
            new = math.copysign(max(abs(z) - l1, 0.0), z) / (gjj + l2)
            if new != wj:
                Xtr -= (new - wj) * G[:, j]
                w[j] = new
            d_w_max = max(d_w_max, abs(new - wj))
            w_max = max(w_max, abs(new))
        if w_max == 0.0 or d_w_max / w_max <= tol or n_iter == max_iter:
            gap = _enet_gap(w, Xtr, Xty, yty, l1, l2)
            if gap <= tol * yty:
                break
    return w, gap, n_iter


def _enet_gap(
    w: FloatArray, Xtr: FloatArray, Xty: FloatArray, yty: float, l1: float, l2: float
) -> float:
    """Duality gap of the (n-scaled) elastic-net problem, from Gram-form quantities."""
    # ||r||^2 = y'y - 2 w'X'y + w'Gw, and w'Gw = w'(X'y - X'r)
    r_norm2 = yty - 2.0 * (w @ Xty) + w @ (Xty - Xtr)
    r_y = yty - w @ Xty
    XtA = Xtr - l2 * w
    dual_norm = np.max(np.abs(XtA)) if XtA.size else 0.0
    if dual_norm > l1:
        const = l1 / dual_norm
        gap = 0.5 * (r_norm2 + r_norm2 * const**2)
    else:
        const = 1.0
        gap = r_norm2
    gap += l1 * np.abs(w).sum() - const * r_y + 0.5 * l2 * (1.0 + const**2) * (w @ w)
    return float(gap)


class ElasticNet(_LinearRegressorBase):
    r"""Linear regression with combined $\ell_1$ and $\ell_2$ penalties, by coordinate descent.

    $$\min_w \frac{1}{2n}\lVert y - Xw - b\rVert_2^2 + \alpha\rho\lVert w\rVert_1 + \frac{\alpha(1-\rho)}{2}\lVert w\rVert_2^2,$$

    with $\rho$ = `l1_ratio` (scikit-learn's scaling). The $\ell_1$ term is a Laplace prior: it
    sets coefficients exactly to zero. Solved by cyclic coordinate descent on the Gram matrix
    $X^\top X$ (one pass is $O(p^2)$ whatever $n$), stopped on the duality gap
    $\le$ `tol` $\cdot\, y^\top y$ as in scikit-learn. With `sample_weight` $s$ the data term
    is the weighted mean $\frac{1}{2\sum_i s_i}\sum_i s_i (y_i - x_i^\top w - b)^2$ (scikit-learn
    rescales the weights to sum to $n$, which is the same thing), so `alpha` keeps its meaning
    whatever the weights' scale.

    Attributes:
        coef_: `(n_features,)` weights.
        intercept_: the unpenalised intercept.
        n_iter_: coordinate-descent sweeps.
        dual_gap_: duality gap at the end (divided by $n$, as scikit-learn reports it).
    """

    def __init__(
        self,
        alpha: float = 1.0,
        *,
        l1_ratio: float = 0.5,
        fit_intercept: bool = True,
        max_iter: int = 1000,
        tol: float = 1e-4,
        warm_start: bool = False,
    ) -> None:
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.warm_start = warm_start

    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> ElasticNet:
        r"""Fit by coordinate descent.

        `sample_weight` $s$ is first rescaled to $s_i n / \sum_j s_j$ (scikit-learn's convention,
        so the stopping rule sees the same $y^\top y$); the weighted problem is then the
        unweighted one on rows centred on the weighted means and scaled by $\sqrt{s_i}$.
        """
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0; got {self.alpha}.")
        if not 0.0 <= self.l1_ratio <= 1.0:
            raise ValueError(f"l1_ratio must lie in [0, 1]; got {self.l1_ratio}.")
        Xa, ya = check_X_y(X, y, y_numeric=True)
        self.n_features_in_ = Xa.shape[1]
        n = Xa.shape[0]
        sw = None
        if sample_weight is not None:
            sw = check_sample_weight(sample_weight, n)
            sw = sw * (n / sw.sum())
        Xc, yc, x_off, y_off = _center_weighted(Xa, ya, self.fit_intercept, sw)
        p = Xc.shape[1]
        w0 = (
            self.coef_.copy()
            if self.warm_start and getattr(self, "coef_", np.empty(0)).shape == (p,)
            else np.zeros(p)
        )
        G, Xty, yty = _gram(Xc, yc, self)
        l1 = self.alpha * self.l1_ratio * n
        l2 = self.alpha * (1.0 - self.l1_ratio) * n
        self.coef_, self.dual_gap_, self.n_iter_ = _enet_cd(
            G, Xty, yty, l1, l2, w0, self.max_iter, self.tol
        )
        if self.dual_gap_ > self.tol * yty:  # the sweeps ran out before the gap closed
            warn_not_converged(self, self.max_iter, f" (duality gap {self.dual_gap_ / n:.3g})")
        self.dual_gap_ /= n
        self._set_intercept(x_off, y_off)
        return self


class Lasso(ElasticNet):
    r"""$\ell_1$-penalised least squares: $\min_w \frac{1}{2n}\lVert y - Xw - b\rVert_2^2 + \alpha\lVert w\rVert_1$.

    [`ElasticNet`][fms_ml.linear_model.ElasticNet] with `l1_ratio=1`.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        *,
        fit_intercept: bool = True,
        max_iter: int = 1000,
        tol: float = 1e-4,
        warm_start: bool = False,
    ) -> None:
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.warm_start = warm_start

    @property
    def l1_ratio(self) -> float:  # type: ignore[override]
        """Always 1: pure $\\ell_1$ penalty."""
        return 1.0


def enet_path(
    X: ArrayLike,
    y: ArrayLike,
    *,
    l1_ratio: float = 1.0,
    alphas: ArrayLike | None = None,
    n_alphas: int = 100,
    eps: float = 1e-3,
    fit_intercept: bool = True,
    tol: float = 1e-4,
    max_iter: int = 1000,
) -> tuple[FloatArray, FloatArray]:
    r"""Elastic-net (lasso with `l1_ratio=1`) coefficients along a decreasing grid of `alpha`.

    The default grid is log-spaced from $\alpha_\max = \max_j |X_j^\top y| / (n\rho)$ (the smallest
    $\alpha$ with $w = 0$) down to `eps` $\cdot\,\alpha_\max$; each fit starts from the previous
    solution (warm start), which makes the whole path cost a few single fits.

    Returns:
        `(alphas, coefs)` with `coefs` of shape `(n_features, n_alphas)`.
    """
    Xa, ya = check_X_y(X, y, y_numeric=True)
    Xc, yc, _, _ = _center(Xa, ya, fit_intercept)
    n, p = Xc.shape
    G, Xty, yty = _gram(Xc, yc, None)
    if alphas is None:
        a_max = np.max(np.abs(Xty)) / (n * max(l1_ratio, 1e-3))
        grid = np.geomspace(a_max, a_max * eps, n_alphas)
    else:
        grid = np.sort(np.asarray(alphas, dtype=float))[::-1]
    coefs = np.empty((p, grid.size))
    w = np.zeros(p)
    for k, a in enumerate(grid):
        w, _, _ = _enet_cd(G, Xty, yty, a * l1_ratio * n, a * (1 - l1_ratio) * n, w, max_iter, tol)
        coefs[:, k] = w
    return grid, coefs


# ------------------------------------------------------------------------------------------------
# Logistic regression
# ------------------------------------------------------------------------------------------------
class LogisticRegression(ClassifierMixin, BaseEstimator):
    r"""Logistic regression, binary or multinomial, with an $\ell_2$, $\ell_1$ or elastic-net penalty, or none.

    Binary ($y \in \{0, 1\}$, $z = x^\top w + b$, $p = \sigma(z)$):

    $$\min_{w,b}\ \sum_i \big[\log(1 + e^{z_i}) - y_i z_i\big] + \frac{1}{2C}\lVert w\rVert_2^2,$$

    gradient $X^\top(p - y) + w/C$, Hessian $X^\top \operatorname{diag}(p(1-p)) X + I/C$.

    Multinomial ($K > 2$ classes, one weight vector per class, softmax link):

    $$\min_{W,b}\ \sum_i \Big[\log \sum_k e^{z_{ik}} - z_{i y_i}\Big] + \frac{1}{2C}\lVert W\rVert_F^2,$$

    gradient $(P - Y)^\top X + W/C$. This is scikit-learn's objective (its `C` means the same),
    so coefficients agree once both solvers converge. `fit(X, y, sample_weight=s)` multiplies the
    $i$-th loss term by $s_i$ (gradient $X^\top \operatorname{diag}(s)(p - y) + w/C$).

    **Sparse penalties.** `penalty="l1"` replaces $\frac{1}{2C}\lVert W\rVert_2^2$ by
    $\frac1C\lVert W\rVert_1$, and `penalty="elasticnet"` by
    $\frac1C\big(\rho\lVert W\rVert_1 + \frac{1-\rho}{2}\lVert W\rVert_F^2\big)$ with
    $\rho$ = `l1_ratio` (scikit-learn's objective for `solver="saga"`; the norms are entrywise,
    the intercepts are not penalised). The $\ell_1$ term is not differentiable at 0, which is
    what sets coefficients exactly to zero, so these are solved by proximal gradient
    (`solver="fista"`, by `fms_ml._optim.fista`): a gradient step on the smooth part
    $f$ (the mean log loss plus the $\ell_2$ term), then the proximal map of the $\ell_1$ term,
    soft-thresholding every coefficient,

    $$w_j \leftarrow \operatorname{sign}(v_j)\max\big(|v_j| - t\lambda_1, 0\big),\qquad
    v = w - t\nabla f(w),$$

    with $\lambda_1 = \rho / (C \sum_i s_i)$ and the step $t$ from backtracking (starting at
    $1/L$, $L = \frac{c}{\sum_i s_i}\sum_i s_i(\lVert x_i\rVert^2 + 1) + \lambda_2$, an upper
    bound on the curvature of $f$ with $c = 1/4$ for two classes and $1/2$ for the softmax).

    Args:
        penalty: `"l2"`, `"l1"`, `"elasticnet"` or `None` (no penalty; same as `C=inf`).
        C: inverse regularisation strength.
        fit_intercept: learn $b$ (never penalised).
        solver: `"lbfgs"` (default) or `"newton"` (exact Hessian; binary problems only) for the
            smooth penalties; `"fista"` (proximal gradient, any penalty) is needed for `"l1"`
            and `"elasticnet"`.
        tol: stop when the largest gradient entry of the mean loss is below `tol` (for
            `"fista"`, of the gradient mapping, which is the gradient where the objective is
            smooth and 0 at the minimum).
        max_iter: iteration cap.
        l1_ratio: $\rho \in [0, 1]$, the $\ell_1$ share of the elastic-net penalty (only used,
            and then required, with `penalty="elasticnet"`).
        class_weight: `None`, `"balanced"` or a dict `{label: weight}`; multiplies each
            sample's weight by its class's weight. `"balanced"` gives class $k$ the weight
            $\sum_i s_i / (K \sum_{i: y_i = k} s_i)$ (with sample weights $s$, all ones by
            default), so every class carries the same total weight, as scikit-learn 1.9 does.

    Attributes:
        classes_: the sorted class labels.
        coef_: `(1, p)` for two classes, `(K, p)` otherwise.
        intercept_: `(1,)` or `(K,)`.
        n_iter_: solver iterations.
    """

    def __init__(
        self,
        penalty: Literal["l2", "l1", "elasticnet"] | None = "l2",
        *,
        C: float = 1.0,
        fit_intercept: bool = True,
        solver: Literal["lbfgs", "newton", "fista"] = "lbfgs",
        tol: float = 1e-4,
        max_iter: int = 100,
        class_weight: Literal["balanced"] | dict[Any, float] | None = None,
        l1_ratio: float | None = None,
    ) -> None:
        self.penalty = penalty
        self.C = C
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.class_weight = class_weight
        self.l1_ratio = l1_ratio

    def fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> LogisticRegression:
        r"""Fit by L-BFGS (or Newton).

        With `sample_weight` $s$ each log-loss term is multiplied by $s_i$ (the penalty is not), so
        a row of integer weight $k$ acts as $k$ copies and a row of weight 0 as none. The solver
        works on the objective divided by $\sum_i s_i$ (the weighted mean loss), as scikit-learn's.
        """
        if self.penalty not in ("l2", "l1", "elasticnet", None):
            raise ValueError(
                f"penalty must be 'l2', 'l1', 'elasticnet' or None; got {self.penalty!r}."
            )
        if self.C <= 0:
            raise ValueError(f"C must be positive; got {self.C}.")
        if self.solver not in ("lbfgs", "newton", "fista"):
            raise ValueError(f"solver must be 'lbfgs', 'newton' or 'fista'; got {self.solver!r}.")
        if self.penalty in ("l1", "elasticnet") and self.solver != "fista":
            raise ValueError(
                f"penalty={self.penalty!r} is not differentiable at 0; it needs solver='fista' "
                f"(got solver={self.solver!r}, which handles 'l2' and None only)."
            )
        rho = {"l1": 1.0, "l2": 0.0, None: 0.0}.get(self.penalty, self.l1_ratio)
        if rho is None or not 0.0 <= rho <= 1.0:
            raise ValueError(
                f"penalty='elasticnet' needs l1_ratio in [0, 1]; got l1_ratio={self.l1_ratio!r}."
            )
        Xa, ya = check_X_y(X, y)
        codes = self._encode_labels(ya)
        self.n_features_in_ = Xa.shape[1]
        n, p = Xa.shape
        sw = check_sample_weight(sample_weight, n)
        if self.class_weight is not None:
            sw = sw * compute_class_weight(self.class_weight, self.classes_, codes, sw)[codes]
            if not (sw > 0).any():
                raise ValueError("class_weight times sample_weight is zero for every sample.")
        sw_sum = float(sw.sum())  # n when unweighted: the mean loss, as before
        K = self.classes_.size
        inv_c = 0.0 if self.penalty is None or math.isinf(self.C) else 1.0 / self.C
        lam, lam1 = inv_c * (1.0 - rho), inv_c * rho  # l2 and l1 strengths (times the sum)
        n_coef = p if K == 2 else K * p  # the penalised entries lead theta, intercepts follow

        def soft_threshold(v: FloatArray, t: float) -> FloatArray:
            out = v.copy()
            w = v[:n_coef]
            out[:n_coef] = np.sign(w) * np.maximum(np.abs(w) - t * lam1 / sw_sum, 0.0)
            return out

        def run_fista(
            f: Callable[[FloatArray], tuple[float, FloatArray]], theta0: FloatArray, c: float
        ) -> tuple[FloatArray, int, bool]:
            """FISTA from `theta0`, starting its step at $1/L$ for the curvature factor `c`."""
            lipschitz = c * float(sw @ ((Xa * Xa).sum(1) + float(fi))) / sw_sum + lam / sw_sum
            return fista(
                f, soft_threshold, theta0, lipschitz=lipschitz, tol=self.tol, max_iter=self.max_iter
            )

        fi = self.fit_intercept
        if K == 2:
            yb = codes.astype(np.float64)

            def fun(theta: FloatArray) -> tuple[float, FloatArray]:
                w, b = theta[:p], theta[p] if fi else 0.0
                z = Xa @ w + b
                loss = float(np.sum(sw * (_log1pexp(z) - yb * z))) + 0.5 * lam * float(w @ w)
                r = sw * (_sigmoid(z) - yb)
                g = np.empty_like(theta)
                g[:p] = Xa.T @ r + lam * w
                if fi:
                    g[p] = r.sum()
                return loss / sw_sum, g / sw_sum

            def hess(theta: FloatArray) -> FloatArray:
                z = Xa @ theta[:p] + (theta[p] if fi else 0.0)
                s = _sigmoid(z)
                d = sw * s * (1 - s)
                Xb = np.c_[Xa, np.ones(n)] if fi else Xa
                H = (Xb.T * d) @ Xb
                H[np.arange(p), np.arange(p)] += lam
                return np.asarray(H / sw_sum)

            theta0 = np.zeros(p + int(fi))
            if self.solver == "fista":
                theta, self.n_iter_, converged = run_fista(fun, theta0, 0.25)
            elif self.solver == "newton":
                theta, self.n_iter_, converged = newton(
                    fun, hess, theta0, tol=self.tol, max_iter=self.max_iter
                )
            else:
                theta, self.n_iter_, converged = lbfgs(
                    fun, theta0, tol=self.tol, max_iter=self.max_iter
                )
            if not converged:
                warn_not_converged(self, self.max_iter)
            self.coef_ = theta[:p].reshape(1, p)
            self.intercept_ = np.array([theta[p] if fi else 0.0])
            return self

        if self.solver == "newton":
            raise ValueError("solver='newton' supports binary problems only; use 'lbfgs'.")
        Y = np.zeros((n, K))
        Y[np.arange(n), codes] = 1.0

        def fun_multi(theta: FloatArray) -> tuple[float, FloatArray]:
            W = theta[: K * p].reshape(K, p)
            b = theta[K * p :] if fi else np.zeros(K)
            Z = Xa @ W.T + b
            zmax = Z.max(axis=1, keepdims=True)
            lse = np.log(np.exp(Z - zmax).sum(axis=1)) + zmax[:, 0]
            loss = float(np.sum(sw * (lse - Z[np.arange(n), codes])))
            loss += 0.5 * lam * float(np.sum(W * W))
            R = sw[:, None] * (np.exp(Z - lse[:, None]) - Y)
            gW = R.T @ Xa + lam * W
            g = np.concatenate([gW.ravel(), R.sum(axis=0)]) if fi else gW.ravel()
            return loss / sw_sum, g / sw_sum

        theta0 = np.zeros(K * p + (K if fi else 0))
        if self.solver == "fista":
            theta, self.n_iter_, converged = run_fista(fun_multi, theta0, 0.5)
        else:
            theta, self.n_iter_, converged = lbfgs(
                fun_multi, theta0, tol=self.tol, max_iter=self.max_iter
            )
        if not converged:
            warn_not_converged(self, self.max_iter)
        self.coef_ = theta[: K * p].reshape(K, p)
        self.intercept_ = theta[K * p :] if fi else np.zeros(K)
        return self

    def decision_function(self, X: ArrayLike) -> FloatArray:
        """Scores $Xw + b$: `(n_samples,)` for binary, `(n_samples, n_classes)` otherwise."""
        Xa = self._validate_predict_input(X)
        Z = Xa @ self.coef_.T + self.intercept_
        return np.asarray(Z[:, 0] if Z.shape[1] == 1 else Z)

    def predict_proba(self, X: ArrayLike) -> FloatArray:
        """Class probabilities `(n_samples, n_classes)`, columns in `classes_` order."""
        Z = self.decision_function(X)
        if Z.ndim == 1:
            p1 = _sigmoid(Z)
            return np.asarray(np.c_[1 - p1, p1])
        return _softmax(Z)

    def predict_log_proba(self, X: ArrayLike) -> FloatArray:
        """Log of [`predict_proba`][fms_ml.linear_model.LogisticRegression.predict_proba]."""
        return np.log(self.predict_proba(X))

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """Most probable class."""
        Z = self.decision_function(X)
        idx = (Z > 0).astype(np.intp) if Z.ndim == 1 else Z.argmax(axis=1)
        return np.asarray(self.classes_[idx])
