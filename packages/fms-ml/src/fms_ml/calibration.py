r"""Probability calibration: turn a classifier's scores into probabilities that can be trusted.

A classifier's scores rank well but often mean little as probabilities: an SVM's decision values
are not probabilities at all, and boosted trees or naive Bayes are over-confident. A model is
*calibrated* when, among the samples it gives probability $p$, a fraction $p$ are positive.
Calibration learns a monotone map $g$ from a score $f$ to $P(y = 1 \mid f)$ on data the
classifier did **not** train on (cross-validation), one map per class:

- **sigmoid** (Platt, 1999): $g(f) = 1 / (1 + e^{A f + B})$, two parameters fitted by maximum
  likelihood against Platt's smoothed targets $t_+ = (N_+ + 1)/(N_+ + 2)$ and
  $t_- = 1/(N_- + 2)$, which keep a separable problem from driving $A$ to infinity. Newton's
  method with backtracking (Lin, Lin & Weng, 2007) finds the optimum.
- **isotonic** (Zadrozny & Elkan, 2002): $g$ is the non-decreasing step function closest to the
  labels in weighted least squares, found by the pool-adjacent-violators algorithm, and
  interpolated linearly between its steps. More flexible, so it wants more data.

- **temperature** (Guo et al., 2017): one inverse temperature $\beta$ for all classes,
  $p = \mathrm{softmax}(\beta z)$ of the classifier's logits $z$ (its decision values, or the
  logarithms of its probabilities), fitted by maximum likelihood. It keeps the ranking of the
  classes and only sharpens ($\beta > 1$) or softens ($\beta < 1$) the distribution.

With $K > 2$ classes the sigmoid and isotonic maps calibrate each class one-vs-rest and the $K$
probabilities are renormalised to sum to one. [CalibratedClassifierCV][fms_ml.calibration.CalibratedClassifierCV]
follows scikit-learn's `CalibratedClassifierCV` (same folds, same targets, same normalisation).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fms_ml._special import _log1pexp, _softmax
from fms_ml._special import _sigmoid as _logistic  # 1 / (1 + e^{-z}), overflow-free
from fms_ml._validation import check_array, check_is_fitted, check_sample_weight, check_X_y
from fms_ml.base import BaseEstimator, ClassifierMixin, clone
from fms_ml.mixture import _logsumexp

__all__ = ["CalibratedClassifierCV", "isotonic_regression", "sigmoid_calibration"]

FloatArray = NDArray[np.float64]


def sigmoid_calibration(
    scores: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
) -> tuple[float, float]:
    r"""Platt's $A, B$: $P(y = 1 \mid f) = 1 / (1 + e^{A f + B})$ by weighted maximum likelihood.

    Minimises $\sum_i s_i\,[-t_i \log p_i - (1 - t_i) \log(1 - p_i)]$ with
    $p_i = 1/(1 + e^{u_i})$, $u_i = A f_i + B$ and Platt's targets $t_i$ (the priors $N_\pm$
    are the summed weights of each class). With $d_i = s_i p_i (1 - p_i)$ the Hessian is
    $\begin{pmatrix} \sum d_i f_i^2 & \sum d_i f_i \\ \sum d_i f_i & \sum d_i \end{pmatrix}$
    and the gradient $\big(\sum s_i (t_i - p_i) f_i, \sum s_i (t_i - p_i)\big)$; Newton steps with
    an Armijo backtracking line search, from $A = 0$, $B = \log\frac{N_- + 1}{N_+ + 1}$, until
    both gradient entries are below $10^{-5}$. Per sample the loss is
    $\log(1 + e^{u}) - (1 - t) u$ (since $-\log p = \log(1 + e^u)$ and
    $-\log(1 - p) = \log(1 + e^u) - u$), evaluated without overflow.

    Args:
        scores: `(n,)` classifier scores $f_i$.
        y: `(n,)` labels, positive where `y > 0`.
        sample_weight: `(n,)` non-negative weights $s_i$.
    """
    f = np.asarray(scores, dtype=np.float64).ravel()
    pos = np.asarray(y).ravel() > 0
    if f.shape != pos.shape:
        raise ValueError(f"scores {f.shape} and y {pos.shape} must have the same length.")
    s = check_sample_weight(sample_weight, len(f)) if sample_weight is not None else np.ones(len(f))
    n_pos, n_neg = float(s[pos].sum()), float(s[~pos].sum())
    t = np.where(pos, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def loss(A: float, B: float) -> float:
        u = f * A + B
        return float(s @ (_log1pexp(u) + (t - 1.0) * u))

    A, B = 0.0, math.log((n_neg + 1.0) / (n_pos + 1.0))
    fval = loss(A, B)
    for _ in range(100):
        p = _logistic(-(f * A + B))
        d2 = s * p * (1.0 - p)
        h11, h22, h21 = float(d2 @ (f * f)) + 1e-12, float(d2.sum()) + 1e-12, float(d2 @ f)
        d1 = s * (t - p)
        g1, g2 = float(d1 @ f), float(d1.sum())
        if abs(g1) < 1e-5 and abs(g2) < 1e-5:
            break
        det = h11 * h22 - h21 * h21
        dA, dB = -(h22 * g1 - h21 * g2) / det, -(-h21 * g1 + h11 * g2) / det
        gd = g1 * dA + g2 * dB
        step = 1.0
        while step >= 1e-10:
            new = loss(A + step * dA, B + step * dB)
            if new < fval + 1e-4 * step * gd:
                A, B, fval = A + step * dA, B + step * dB, new
                break
            step /= 2.0
        else:
            break  # no step decreases the loss: the current point is optimal to rounding
    return A, B


def isotonic_regression(y: ArrayLike, sample_weight: ArrayLike | None = None) -> FloatArray:
    r"""The non-decreasing sequence closest to `y` in weighted least squares (pool adjacent
    violators).

    $\min_z \sum_i w_i (y_i - z_i)^2$ subject to $z_1 \le \dots \le z_n$. Scan left to right
    keeping blocks of pooled values (each block's value is its weighted mean); whenever a new
    block's mean is below the previous block's, merge the two and check again. Every merge is
    forced by a violated constraint, and the weighted mean is the best constant for a block, so
    the result is optimal; the scan is $O(n)$ amortised.
    """
    ya = np.asarray(y, dtype=np.float64).ravel()
    w = (
        check_sample_weight(sample_weight, len(ya))
        if sample_weight is not None
        else np.ones(len(ya))
    )
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for yi, wi in zip(ya, w, strict=True):
        means.append(float(yi))
        weights.append(float(wi))
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            w2 = weights[-2] + weights[-1]
            m = (means[-2] * weights[-2] + means[-1] * weights[-1]) / w2 if w2 > 0 else means[-1]
            size = sizes[-2] + sizes[-1]
            del means[-1], weights[-1], sizes[-1]
            means[-1], weights[-1], sizes[-1] = m, w2, size
    return np.repeat(np.asarray(means), sizes)


class _Isotonic:
    """A fitted isotonic map: scikit-learn's `IsotonicRegression(out_of_bounds="clip")`.

    Rows of weight 0 are dropped, equal scores pooled (weighted mean label, summed weight), the
    pooled labels made non-decreasing, interior points of flat runs dropped, and new scores clipped
    to the fitted range and interpolated linearly between the remaining points.
    """

    def __init__(self, f: FloatArray, y: FloatArray, s: FloatArray) -> None:
        keep = s > 0
        f, y, s = f[keep], y[keep], s[keep]
        order = np.lexsort((y, f))
        f, y, s = f[order], y[order], s[order]
        # pool equal scores (within float64 resolution, as scikit-learn does)
        new_group = np.r_[True, np.diff(f) >= np.finfo(np.float64).resolution]
        start = np.nonzero(new_group)[0]
        ws = np.add.reduceat(s, start)
        fx = f[start]
        fy = np.add.reduceat(s * y, start) / ws
        z = isotonic_regression(fy, ws)
        self.lo, self.hi = float(fx[0]), float(fx[-1])
        mid = np.ones(len(z), dtype=bool)
        mid[1:-1] = (z[1:-1] != z[:-2]) | (z[1:-1] != z[2:])
        self.x, self.z = fx[mid], z[mid]

    def predict(self, f: FloatArray) -> FloatArray:
        if len(self.x) == 1:
            return np.full(len(f), self.z[0])
        return np.asarray(np.interp(np.clip(f, self.lo, self.hi), self.x, self.z))


class _Sigmoid:
    def __init__(self, f: FloatArray, y: FloatArray, s: FloatArray) -> None:
        self.A, self.B = sigmoid_calibration(f, y, s)

    def predict(self, f: FloatArray) -> FloatArray:
        return _logistic(-(self.A * f + self.B))


class _Temperature:
    r"""Temperature scaling: $p = \mathrm{softmax}(\beta z)$ with one fitted $\beta > 0$.

    The weighted negative log-likelihood $L(\beta) = \sum_i s_i [\log \sum_k e^{\beta z_{ik}}
    - \beta z_{i y_i}]$ is convex in $\beta$: $L'(\beta) = \sum_i s_i (\mathbb E_{p_i}[z_i] -
    z_{i y_i})$ and $L''(\beta) = \sum_i s_i \mathrm{Var}_{p_i}(z_i) \ge 0$. Newton's method
    from $\beta = 1$, each iterate clipped to $[e^{-10}, e^{10}]$ (the range scikit-learn
    searches) and each step halved while it would raise the loss, until
    $|L'| \le 10^{-10} \sum_i s_i$.
    """

    def __init__(self, z: FloatArray, codes: NDArray[np.intp], s: FloatArray) -> None:
        rows = np.arange(len(codes))
        zy = z[rows, codes]

        def loss(beta: float) -> float:
            return float(s @ (_logsumexp(beta * z) - beta * zy))

        lo, hi = math.exp(-10.0), math.exp(10.0)
        beta, fval = 1.0, loss(1.0)
        for _ in range(100):
            p = _softmax(beta * z)
            mean = (p * z).sum(axis=1)
            g = float(s @ (mean - zy))
            if abs(g) <= 1e-10 * s.sum():
                break
            h = float(s @ ((p * z * z).sum(axis=1) - mean**2))
            step = -g / h if h > 0 else -np.sign(g) * beta
            while True:
                new = min(max(beta + step, lo), hi)
                fnew = loss(new)
                if fnew <= fval or abs(step) < 1e-14:
                    break
                step /= 2.0
            if new == beta:
                break
            beta, fval = new, fnew
        self.beta = beta

    def predict(self, z: FloatArray) -> FloatArray:
        return _softmax(self.beta * z)


def _logits(scores: FloatArray, has_decision_function: bool) -> FloatArray:
    r"""A classifier's scores as `(n, K)` logits, as scikit-learn forms them for temperature
    scaling: a binary decision value $f$ as $(-f, f)$; probabilities (a binary positive-class
    column, or rows of $[0, 1]$ entries summing to one) as $\log(p + 10^{-12})$; other
    multiclass scores unchanged."""
    if scores.shape[1] == 1:
        if has_decision_function:
            return np.hstack([-scores, scores])
        scores = np.hstack([1.0 - scores, scores])
    if np.all((scores >= 0) & (scores <= 1)) and np.allclose(scores.sum(axis=1), 1.0):
        return np.asarray(np.log(scores + 1e-12))
    return scores


def _scores(estimator: Any, X: FloatArray) -> FloatArray:
    """`decision_function` if the estimator has one, else `predict_proba`; one column for the
    positive class of a binary problem, one per class otherwise."""
    if hasattr(estimator, "decision_function"):
        d = np.asarray(estimator.decision_function(X), dtype=np.float64)
        return d[:, None] if d.ndim == 1 else d
    p = np.asarray(estimator.predict_proba(X), dtype=np.float64)
    return p[:, 1:] if p.shape[1] == 2 else p


class CalibratedClassifierCV(ClassifierMixin, BaseEstimator):
    r"""A classifier whose probabilities are calibrated on cross-validated scores.

    For each split of `cv`, a clone of `estimator` is trained on the training part, and one map
    per class (binary: one, for `classes_[1]`) from its scores (`decision_function`, or else
    `predict_proba`) to a probability is fitted on the held-out part. Probabilities are the maps'
    outputs renormalised to sum to one (binary: $1 - p$ and $p$).

    Args:
        estimator: the classifier to calibrate (default: [LinearSVC][fms_ml.svm.LinearSVC]).
        method: `"sigmoid"` (Platt), `"isotonic"` or `"temperature"`; see the module docstring.
        cv: folds: an int (stratified, unshuffled), a splitter with `split`, or an iterable of
            `(train, test)` index arrays (default 5).
        ensemble: `True` (and `"auto"`): keep every fold's classifier and map and average their
            probabilities. `False`: fit the map once on the scores of all held-out parts
            (cross-validated predictions) and pair it with one classifier trained on all the
            data: smaller and faster to predict with.

    Attributes:
        classes_: the sorted class labels.
        calibrated_classifiers_: `(classifier, calibrator)` pairs (one with `ensemble=False`);
            the calibrator is `{class index: map}` for sigmoid and isotonic, one temperature map
            otherwise.
    """

    def __init__(
        self,
        estimator: Any = None,
        *,
        method: Literal["sigmoid", "isotonic", "temperature"] = "sigmoid",
        cv: Any = None,
        ensemble: bool | Literal["auto"] = "auto",
    ) -> None:
        self.estimator = estimator
        self.method = method
        self.cv = cv
        self.ensemble = ensemble

    def fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> CalibratedClassifierCV:
        """Train the classifiers and fit the calibration maps (weights, if given, go to both)."""
        from fms_ml.model_selection import check_cv
        from fms_ml.svm import LinearSVC

        if self.method not in ("sigmoid", "isotonic", "temperature"):
            raise ValueError(
                f"method must be 'sigmoid', 'isotonic' or 'temperature'; got {self.method!r}."
            )
        if self.ensemble not in (True, False, "auto"):
            raise ValueError(f"ensemble must be True, False or 'auto'; got {self.ensemble!r}.")
        Xa, ya = check_X_y(X, y)
        self._encode_labels(ya)
        self.n_features_in_ = Xa.shape[1]
        s = check_sample_weight(sample_weight, len(ya)) if sample_weight is not None else None
        base = LinearSVC() if self.estimator is None else self.estimator
        splits = list(check_cv(self.cv, ya, classifier=True).split(Xa, ya))

        def train(rows: NDArray[np.intp]) -> Any:
            est = clone(base)
            if s is None:
                return est.fit(Xa[rows], ya[rows])
            return est.fit(Xa[rows], ya[rows], sample_weight=s[rows])

        self.calibrated_classifiers_: list[tuple[Any, Any]] = []
        if self.ensemble is False:
            scores: FloatArray | None = None
            for tr, te in splits:
                sc = _scores(train(tr), Xa[te])
                if scores is None:
                    scores = np.zeros((len(ya), sc.shape[1]))
                scores[te] = sc
            assert scores is not None
            est = train(np.arange(len(ya)))
            self.calibrated_classifiers_.append((est, self._fit_maps(est, scores, ya, s)))
        else:
            for tr, te in splits:
                est = train(tr)
                maps = self._fit_maps(
                    est, _scores(est, Xa[te]), ya[te], None if s is None else s[te]
                )
                self.calibrated_classifiers_.append((est, maps))
        return self

    def _fit_maps(self, est: Any, scores: FloatArray, y: NDArray[Any], s: FloatArray | None) -> Any:
        """One map per class the classifier knows (binary: the positive class), keyed by the
        class's index in `classes_`; or one temperature map."""
        w = np.ones(len(y)) if s is None else s
        if self.method == "temperature":
            z = _logits(scores, hasattr(est, "decision_function"))
            return _Temperature(z, np.searchsorted(self.classes_, y), w)
        make = _Sigmoid if self.method == "sigmoid" else _Isotonic
        K = self.classes_.size
        idx = np.searchsorted(self.classes_, est.classes_)
        targets = [int(idx[1])] if K == 2 else [int(i) for i in idx]
        return {
            k: make(scores[:, j], (y == self.classes_[k]).astype(np.float64), w)
            for j, k in enumerate(targets)
        }

    def predict_proba(self, X: ArrayLike) -> FloatArray:
        """Calibrated probabilities `(n_samples, K)`, averaged over the folds' pairs."""
        check_is_fitted(self, ["calibrated_classifiers_"])
        Xa = check_array(X, "X")
        K = self.classes_.size
        total = np.zeros((len(Xa), K))
        for est, calibrator in self.calibrated_classifiers_:
            proba = self._calibrated(est, calibrator, _scores(est, Xa))
            proba[(proba > 1.0) & (proba <= 1.0 + 1e-5)] = 1.0
            total += proba
        return total / len(self.calibrated_classifiers_)

    def _calibrated(self, est: Any, calibrator: Any, sc: FloatArray) -> FloatArray:
        """One pair's probabilities from its classifier's scores `sc`."""
        if isinstance(calibrator, _Temperature):
            return calibrator.predict(_logits(sc, hasattr(est, "decision_function")))
        K = self.classes_.size
        proba = np.zeros((len(sc), K))
        for j, (k, m) in enumerate(calibrator.items()):
            proba[:, k] = m.predict(sc[:, j])
        if K == 2:
            proba[:, 0] = 1.0 - proba[:, 1]
            return proba
        den = proba.sum(axis=1, keepdims=True)
        return np.asarray(np.divide(proba, den, out=np.full_like(proba, 1.0 / K), where=den != 0))

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """The class of highest calibrated probability."""
        proba = self.predict_proba(X)  # checks that the model is fitted
        return np.asarray(self.classes_[proba.argmax(axis=1)])
