r"""Linear models trained by stochastic gradient descent: `SGDClassifier` and `SGDRegressor`.

Both minimise a regularised empirical risk
$\frac1n \sum_i L(y_i, x_i^\top w + b) + \frac\alpha2\lVert w\rVert_2^2$ by steps on
(mini-batches of) samples, with scikit-learn's learning-rate schedules (`"optimal"`,
`"invscaling"`, `"constant"`) and its stopping rule (`tol`, `n_iter_no_change`). They are also
importable from [`fms_ml.linear_model`][fms_ml.linear_model], where scikit-learn users look for
them.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fms_ml._special import _log1pexp, _sigmoid
from fms_ml._validation import (
    check_random_state,
    check_sample_weight,
    check_X_y,
    compute_class_weight,
    warn_not_converged,
)
from fms_ml.base import BaseEstimator, ClassifierMixin, RegressorMixin, available_if

__all__ = ["SGDClassifier", "SGDRegressor"]

FloatArray = NDArray[np.float64]


# scikit-learn's bound on the loss derivative (`MAX_DLOSS` in its `_sgd_fast`)
_MAX_DLOSS = 1e12


def _sgd_loss_grad(loss: str, z: FloatArray, y: FloatArray, epsilon: float) -> FloatArray:
    r"""Derivative of the per-sample loss with respect to the score $z$, within $\pm 10^{12}$.

    The bound is scikit-learn's: a squared loss on unscaled features can make the iterates grow
    geometrically (each step overshoots when $\eta \lVert x\rVert^2 > 2$); clipping the
    derivative keeps that growth linear, so such a fit ends far off but finite, as scikit-learn's
    does, instead of overflowing to NaN.
    """
    return np.clip(_loss_grad(loss, z, y, epsilon), -_MAX_DLOSS, _MAX_DLOSS)


def _loss_grad(loss: str, z: FloatArray, y: FloatArray, epsilon: float) -> FloatArray:
    if loss == "hinge":  # y in {-1, 1}
        return np.where(y * z < 1.0, -y, 0.0)
    if loss == "log_loss":
        return -y * _sigmoid(-y * z)
    if loss == "modified_huber":
        m = y * z
        return np.where(m >= 1.0, 0.0, np.where(m >= -1.0, -2.0 * y * (1.0 - m), -4.0 * y))
    if loss == "squared_hinge":
        return np.where(y * z < 1.0, -2.0 * y * (1.0 - y * z), 0.0)
    if loss == "squared_error":
        return z - y
    if loss == "huber":
        r = z - y
        return np.clip(r, -epsilon, epsilon)
    if loss == "epsilon_insensitive":
        r = z - y
        return np.where(np.abs(r) > epsilon, np.sign(r), 0.0)
    raise ValueError(f"unknown loss {loss!r}")


def _sgd_loss(
    loss: str, z: FloatArray, y: FloatArray, epsilon: float, s: FloatArray | None = None
) -> FloatArray:
    """Per-column (weighted by `s`) sum of the per-sample loss, for the epoch stopping rule."""
    if loss == "hinge":
        out = np.maximum(0.0, 1.0 - y * z)
    elif loss == "log_loss":
        out = _log1pexp(-y * z)
    elif loss == "modified_huber":
        m = y * z
        out = np.where(m >= -1.0, np.maximum(0.0, 1.0 - m) ** 2, -4.0 * m)
    elif loss == "squared_hinge":
        out = np.maximum(0.0, 1.0 - y * z) ** 2
    else:
        r = z - y
        if loss == "squared_error":
            out = 0.5 * r * r
        elif loss == "huber":
            a = np.abs(r)
            out = np.where(a <= epsilon, 0.5 * r * r, epsilon * (a - 0.5 * epsilon))
        else:
            out = np.maximum(0.0, np.abs(r) - epsilon)
    if s is not None:
        out = out * s
    return np.asarray(out.sum(axis=0), dtype=np.float64)


def _sgd_epochs(
    est: Any,
    X: FloatArray,
    Y: FloatArray,
    rng: np.random.Generator,
    S: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray, int]:
    r"""Mini-batch SGD on $\frac1n\sum_i s_i L(y_i, x_i^\top w + b) + \frac{\alpha}{2}\lVert w\rVert^2$.

    `Y` is `(n, K)`: $K$ independent problems (one-vs-rest columns) trained side by side on the
    same batches, each stopping on its own. `S` (`(n, K)`, or None for ones) holds each sample's
    weight in each problem, sample weight times class weight: as in scikit-learn, it scales the
    sample's gradient term, while the schedule and the $\ell_2$ shrinkage still advance one step
    per row whatever its weight. The stopping rule watches the weighted epoch loss against
    `tol` times the total weight (scikit-learn watches the unweighted loss against `tol` times
    $n$; the two agree for unit weights), so a row of weight 0 has no influence at all.

    Learning rates as scikit-learn's: `"optimal"`
    $\eta_t = 1/(\alpha(t_0 + t))$ (Bottou's heuristic $t_0$), `"invscaling"`
    $\eta_t = \eta_0 / t^{\text{power\_t}}$, `"constant"` $\eta_0$. A problem stops when its
    epoch loss has not improved by `tol` for `n_iter_no_change` epochs.

    Returns:
        `(W, b, n_epochs)` with `W` of shape `(p, K)` and `b` of shape `(K,)`.
    """
    n, p = X.shape
    K = Y.shape[1]
    alpha = float(est.alpha)
    # "auto": about 32 steps an epoch (plain SGD below 64 samples), batches of at most 256 rows.
    # Every step costs a dozen numpy calls of fixed overhead, so the number of steps, not the
    # arithmetic, sets the fit time; 32 steps an epoch keeps held-out scores within the noise of
    # scikit-learn's per-sample SGD on the benchmark data (fewer steps start to cost accuracy).
    bs = int(np.clip(n // 32, 1, 256)) if est.batch_size == "auto" else int(est.batch_size)
    if est.learning_rate == "optimal":
        typw = math.sqrt(1.0 / math.sqrt(alpha))
        g0 = _sgd_loss_grad(est.loss, np.array([-typw]), np.array([1.0]), 0.1)
        eta0 = typw / max(1.0, float(np.abs(g0)[0]))
        t0 = 1.0 / (eta0 * alpha)
    t = 1.0
    best = np.full(K, np.inf)
    no_improve = np.zeros(K, dtype=np.int64)
    active = np.ones(K, dtype=bool)
    epoch = 0
    # The intercept rides along as one more weight on a constant feature: `X1 = [X, 1]` and
    # `theta = [w; b]`, so a step is `z = X1 theta` and `theta -= eta X1^T dz`, two matrix
    # products instead of separate weight and intercept updates. Only `theta[:p]` (the weights)
    # is shrunk by the L2 penalty.
    X1 = np.hstack([X, np.ones((n, 1))]) if est.fit_intercept else X
    theta = np.zeros((X1.shape[1], K))
    mass = np.full(K, float(n)) if S is None else S.sum(axis=0)
    for epoch in range(1, est.max_iter + 1):  # noqa: B007
        order = rng.permutation(n) if est.shuffle else np.arange(n)
        cols = np.nonzero(active)[0]
        th = theta[:, cols]
        # Shuffle once per epoch, so that each batch below is a cheap slice (a view), and keep
        # each batch's scores in `Z`: the epoch loss for the stopping rule is then one call after
        # the loop instead of one per step. Each step is a handful of numpy calls whose fixed
        # overhead, not arithmetic, is the cost at these batch sizes.
        Xs, Ys = X1[order], Y[order][:, cols]
        Ss = None if S is None else S[order][:, cols]
        Z = np.empty_like(Ys)
        for start in range(0, n, bs):
            Xb, yb = Xs[start : start + bs], Ys[start : start + bs]
            z = Xb @ th
            Z[start : start + bs] = z
            dz = _sgd_loss_grad(est.loss, z, yb, est.epsilon)
            if Ss is not None:
                dz *= Ss[start : start + bs]
            if est.learning_rate == "optimal":
                eta = 1.0 / (alpha * (t0 + t - 1))
            elif est.learning_rate == "invscaling":
                eta = est.eta0 / t**est.power_t
            else:
                eta = est.eta0
            # one step for the whole batch, sized as the `len(Xb)` per-sample steps it replaces
            m = len(Xb)
            th[:p] *= max(0.0, 1.0 - eta * alpha) ** m
            th -= Xb.T @ (eta * dz)
            t += m
        total = np.zeros(K)
        total[cols] = _sgd_loss(est.loss, Z, Ys, est.epsilon, Ss)
        theta[:, cols] = th
        if est.tol is not None:
            worse = total[cols] > best[cols] - est.tol * mass[cols]
            no_improve[cols] = np.where(worse, no_improve[cols] + 1, 0)
            best[cols] = np.minimum(best[cols], total[cols])
            active[cols[no_improve[cols] >= est.n_iter_no_change]] = False
            if not active.any():
                break
    b = theta[p].copy() if est.fit_intercept else np.zeros(K)
    return theta[:p], b, epoch


class _SGDBase(BaseEstimator):
    def _warn_if_not_converged(self) -> None:
        """With a stopping rule (`tol`), running every one of `max_iter` epochs means it never fired."""
        if self.tol is not None and self.n_iter_ == self.max_iter:  # type: ignore[attr-defined]
            warn_not_converged(self, self.max_iter)  # type: ignore[attr-defined]

    def _check_params(self, losses: tuple[str, ...]) -> None:
        if self.loss not in losses:  # type: ignore[attr-defined]
            raise ValueError(f"loss must be one of {losses}; got {self.loss!r}.")  # type: ignore[attr-defined]
        if self.learning_rate not in ("optimal", "invscaling", "constant"):  # type: ignore[attr-defined]
            raise ValueError(
                f"learning_rate must be 'optimal', 'invscaling' or 'constant'; got {self.learning_rate!r}."  # type: ignore[attr-defined]
            )
        if self.alpha <= 0 and self.learning_rate == "optimal":  # type: ignore[attr-defined]
            raise ValueError("alpha must be > 0 with learning_rate='optimal'.")
        if self.batch_size != "auto" and self.batch_size < 1:  # type: ignore[attr-defined]
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size}.")  # type: ignore[attr-defined]


class SGDClassifier(ClassifierMixin, _SGDBase):
    r"""Linear classifier trained by (mini-batch) stochastic gradient descent; one-vs-rest for $K > 2$.

    Minimises $\frac1n \sum_i L(y_i, x_i^\top w + b) + \frac\alpha2\lVert w\rVert_2^2$ with
    $y \in \{-1, +1\}$ and `loss` $\in$ {`"hinge"` (linear SVM), `"log_loss"` (logistic regression),
    `"modified_huber"`, `"squared_hinge"`}.

    Unlike scikit-learn (one sample per step), large problems step on mini-batches: the summed
    gradient of a batch is one vectorised numpy expression, and the step stands for the per-sample
    steps it replaces (the schedule's counter $t$ advances by the batch size). `batch_size="auto"`
    uses $\min(256, \max(1, \lfloor n/32\rfloor))$: about 32 steps an epoch, plain SGD below
    64 samples, batches of 256 from 8 192. The one-vs-rest problems of a multiclass fit are
    trained side by side on the same batches. Scores match scikit-learn's within
    the noise of the stochastic optimiser, not coefficient by coefficient.

    `class_weight` (`None`, `"balanced"` from the row counts, or a dict) and `sample_weight`
    scale each sample's gradient term by $s_i c_{y_i}$, scikit-learn's semantics: in the binary
    problem both classes take their weight, in one-vs-rest problem $k$ only its positives take
    $c_k$ (its negatives keep 1).

    Attributes:
        classes_: the sorted class labels.
        coef_: `(1, n_features)` binary, `(n_classes, n_features)` one-vs-rest.
        intercept_: `(1,)` or `(n_classes,)`.
        n_iter_: epochs run.
        t_: weight updates counted as scikit-learn does, `n_iter_ * n_samples + 1` (a mini-batch
            step counts as one update per row).
    """

    def __init__(
        self,
        loss: str = "hinge",
        *,
        alpha: float = 1e-4,
        fit_intercept: bool = True,
        max_iter: int = 1000,
        tol: float | None = 1e-3,
        shuffle: bool = True,
        epsilon: float = 0.1,
        random_state: Any = None,
        learning_rate: str = "optimal",
        eta0: float = 0.01,
        power_t: float = 0.5,
        n_iter_no_change: int = 5,
        batch_size: int | Literal["auto"] = "auto",
        class_weight: Any = None,
    ) -> None:
        self.loss = loss
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.shuffle = shuffle
        self.epsilon = epsilon
        self.random_state = random_state
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.n_iter_no_change = n_iter_no_change
        self.batch_size = batch_size
        self.class_weight = class_weight

    def fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> SGDClassifier:
        """Fit one binary SGD model per class (one for two classes), optionally weighted."""
        self._check_params(("hinge", "log_loss", "modified_huber", "squared_hinge"))
        Xa, ya = check_X_y(X, y)
        codes = self._encode_labels(ya)
        self.n_features_in_ = Xa.shape[1]
        rng = check_random_state(self.random_state)
        K = self.classes_.size
        targets = np.array([1]) if K == 2 else np.arange(K)
        Y = np.where(codes[:, None] == targets[None, :], 1.0, -1.0)  # one-vs-rest columns
        S = None
        if sample_weight is not None or self.class_weight is not None:
            sw = check_sample_weight(sample_weight, len(Xa))
            cw = compute_class_weight(self.class_weight, self.classes_, codes)  # row counts
            if K == 2:
                S = (sw * cw[codes])[:, None]
            else:  # problem k: c_k on its positives, 1 on the rest (scikit-learn's OvR)
                S = sw[:, None] * np.where(Y > 0, cw[None, :], 1.0)
            if not (S > 0).any():
                raise ValueError("class_weight times sample_weight is zero for every sample.")
        W, b, self.n_iter_ = _sgd_epochs(self, Xa, Y, rng, S)
        self.t_ = float(self.n_iter_ * len(Xa) + 1)  # the schedule's counter at the end
        self._warn_if_not_converged()
        self.coef_ = W.T.copy()
        self.intercept_ = b
        return self

    def decision_function(self, X: ArrayLike) -> FloatArray:
        """Signed distance-like scores: `(n_samples,)` binary, `(n_samples, K)` otherwise."""
        Xa = self._validate_predict_input(X)
        Z = Xa @ self.coef_.T + self.intercept_
        return np.asarray(Z[:, 0] if Z.shape[1] == 1 else Z)

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """Class with the largest score."""
        Z = self.decision_function(X)
        idx = (Z > 0).astype(np.intp) if Z.ndim == 1 else Z.argmax(axis=1)
        return np.asarray(self.classes_[idx])

    @available_if(
        lambda self: self.loss == "log_loss",
        "predict_proba needs loss='log_loss'; got loss={self.loss!r}.",
    )
    def predict_proba(self, X: ArrayLike) -> FloatArray:
        """Probabilities for `loss="log_loss"` (sigmoid; one-vs-rest normalised for $K > 2$).

        Only `loss="log_loss"` models probabilities; for other losses the method does not exist
        (`hasattr(est, "predict_proba")` is false), as in scikit-learn.
        """
        Z = self.decision_function(X)
        if Z.ndim == 1:
            p = _sigmoid(Z)
            return np.asarray(np.c_[1 - p, p])
        P = _sigmoid(Z)
        return np.asarray(P / P.sum(axis=1, keepdims=True))


class SGDRegressor(RegressorMixin, _SGDBase):
    r"""Linear regression by (mini-batch) SGD: $\frac1n\sum_i L(y_i, x_i^\top w + b) + \frac\alpha2\lVert w\rVert_2^2$.

    `loss` $\in$ {`"squared_error"`, `"huber"`, `"epsilon_insensitive"`}; the default schedule is
    scikit-learn's `"invscaling"` ($\eta_t = \eta_0 / t^{0.25}$). Mini-batches of `batch_size`
    as in [`SGDClassifier`][fms_ml.sgd.SGDClassifier]. Features should be standardised
    first.
    """

    def __init__(
        self,
        loss: str = "squared_error",
        *,
        alpha: float = 1e-4,
        fit_intercept: bool = True,
        max_iter: int = 1000,
        tol: float | None = 1e-3,
        shuffle: bool = True,
        epsilon: float = 0.1,
        random_state: Any = None,
        learning_rate: str = "invscaling",
        eta0: float = 0.01,
        power_t: float = 0.25,
        n_iter_no_change: int = 5,
        batch_size: int | Literal["auto"] = "auto",
    ) -> None:
        self.loss = loss
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.shuffle = shuffle
        self.epsilon = epsilon
        self.random_state = random_state
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.n_iter_no_change = n_iter_no_change
        self.batch_size = batch_size

    def fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> SGDRegressor:
        """Fit by SGD; `sample_weight` scales each sample's gradient term (scikit-learn's rule)."""
        self._check_params(("squared_error", "huber", "epsilon_insensitive"))
        Xa, ya = check_X_y(X, y, y_numeric=True)
        self.n_features_in_ = Xa.shape[1]
        S = None
        if sample_weight is not None:
            S = check_sample_weight(sample_weight, len(Xa))[:, None]
        W, b, self.n_iter_ = _sgd_epochs(
            self, Xa, ya.reshape(-1, 1), check_random_state(self.random_state), S
        )
        self.t_ = float(self.n_iter_ * len(Xa) + 1)  # the schedule's counter at the end
        self._warn_if_not_converged()
        self.coef_, self.intercept_ = W[:, 0].copy(), b
        return self

    def predict(self, X: ArrayLike) -> FloatArray:
        """$\\hat y = X w + b$."""
        Xa = self._validate_predict_input(X)
        return np.asarray(Xa @ self.coef_ + self.intercept_[0])
