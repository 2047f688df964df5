r"""Naive Bayes: Bayes' rule with features assumed independent given the class.

$$\log p(c \mid x) = \log p(c) + \sum_j \log p(x_j \mid c) - \log p(x).$$

[`GaussianNB`][fms_ml.naive_bayes.GaussianNB] models $p(x_j \mid c)$ as a normal density;
[`MultinomialNB`][fms_ml.naive_bayes.MultinomialNB] models counts (e.g. word counts) with
Laplace/Lidstone-smoothed frequencies. Both are fitted in closed form from class statistics.

Both take `fit(X, y, sample_weight=s)`, as in scikit-learn: every class statistic becomes a
weighted one (class counts $\sum_{y_i = c} s_i$, weighted means and variances, weighted feature
counts $\sum_{y_i = c} s_i x_{ij}$), so a row of integer weight $k$ acts as $k$ copies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fms_ml._validation import check_sample_weight, check_X_y
from fms_ml.base import BaseEstimator, ClassifierMixin

__all__ = ["GaussianNB", "MultinomialNB"]

FloatArray = NDArray[np.float64]


class _BaseNB(ClassifierMixin, BaseEstimator, ABC):
    @abstractmethod
    def _joint_log_likelihood(self, X: FloatArray) -> FloatArray:
        """$\\log p(c) + \\log p(x \\mid c)$ for every sample and class, `(n_samples, n_classes)`."""

    def predict_log_proba(self, X: ArrayLike) -> FloatArray:
        """$\\log p(c \\mid x)$, normalised with log-sum-exp."""
        jll = self._joint_log_likelihood(self._validate_predict_input(X))
        m = jll.max(1, keepdims=True)
        return np.asarray(jll - (m + np.log(np.exp(jll - m).sum(1, keepdims=True))))

    def predict_proba(self, X: ArrayLike) -> FloatArray:
        """$p(c \\mid x)$, `(n_samples, n_classes)`."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """Maximum a posteriori class."""
        jll = self._joint_log_likelihood(self._validate_predict_input(X))
        return np.asarray(self.classes_[jll.argmax(1)])


class GaussianNB(_BaseNB):
    r"""Gaussian naive Bayes: $x_j \mid c \sim \mathcal N(\theta_{cj}, \sigma^2_{cj})$.

    Variances get `var_smoothing` $\times \max_j \operatorname{Var}(x_j)$ added for stability,
    as in scikit-learn. With `sample_weight` $s$ the class count is $N_c = \sum_{y_i = c} s_i$
    and $\theta_{cj}$, $\sigma^2_{cj}$ are the $s$-weighted mean and (biased) variance of the
    class's rows; $\operatorname{Var}(x_j)$ in the smoothing stays unweighted, as scikit-learn's.

    Attributes:
        classes_: the sorted class labels.
        class_prior_: $p(c)$.
        class_count_: training samples (summed weights) per class.
        theta_: `(K, p)` per-class means.
        var_: `(K, p)` per-class variances (smoothed).
        epsilon_: the variance added for stability.
    """

    def __init__(self, *, priors: ArrayLike | None = None, var_smoothing: float = 1e-9) -> None:
        self.priors = priors
        self.var_smoothing = var_smoothing

    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> GaussianNB:
        """Per-class (weighted) means and variances."""
        Xa, ya = check_X_y(X, y)
        codes = self._encode_labels(ya)
        self.n_features_in_ = Xa.shape[1]
        K = self.classes_.size
        self.epsilon_ = self.var_smoothing * float(np.var(Xa, axis=0).max())
        if sample_weight is None:
            self.class_count_ = np.bincount(codes, minlength=K).astype(np.float64)
            self.theta_ = np.array([Xa[codes == k].mean(0) for k in range(K)])
            self.var_ = np.array([Xa[codes == k].var(0) for k in range(K)]) + self.epsilon_
        else:
            sw = check_sample_weight(sample_weight, Xa.shape[0])
            self.class_count_ = np.bincount(codes, weights=sw, minlength=K).astype(np.float64)
            self.theta_ = np.zeros((K, Xa.shape[1]))
            self.var_ = np.zeros((K, Xa.shape[1]))
            for k in np.flatnonzero(self.class_count_ > 0):  # a weightless class keeps 0, 0
                rows, wk = Xa[codes == k], sw[codes == k]
                self.theta_[k] = np.average(rows, axis=0, weights=wk)
                self.var_[k] = np.average((rows - self.theta_[k]) ** 2, axis=0, weights=wk)
            self.var_ += self.epsilon_
        if self.priors is not None:
            pri = np.asarray(self.priors, dtype=float)
            if pri.shape != (K,) or not np.isclose(pri.sum(), 1.0) or (pri < 0).any():
                raise ValueError(
                    f"priors must be {K} non-negative numbers summing to 1; got {pri}."
                )
            self.class_prior_ = pri
        else:
            self.class_prior_ = self.class_count_ / self.class_count_.sum()
        return self

    def _joint_log_likelihood(self, X: FloatArray) -> FloatArray:
        n_ij = -0.5 * np.sum(np.log(2.0 * np.pi * self.var_), axis=1)
        # sum_j (x_j - theta_kj)^2 / var_kj, expanded into matrix products
        inv = 1.0 / self.var_
        quad = (X * X) @ inv.T - 2.0 * X @ (self.theta_ * inv).T + (self.theta_**2 * inv).sum(1)
        return np.asarray(np.log(self.class_prior_) + n_ij - 0.5 * quad)


class MultinomialNB(_BaseNB):
    r"""Multinomial naive Bayes for counts: $\hat\theta_{cj} = \frac{N_{cj} + \alpha}{N_c + \alpha p}$.

    Attributes:
        classes_: the sorted class labels.
        class_count_: training samples (summed weights) per class.
        feature_count_: `(K, p)` summed counts per class (each row times its weight).
        class_log_prior_: $\log p(c)$.
        feature_log_prob_: `(K, p)` $\log \hat\theta_{cj}$.
    """

    _tag_overrides: ClassVar[dict[str, bool]] = {
        "input_tags.positive_only": True,  # counts
        "classifier_tags.poor_score": True,  # as scikit-learn's MultinomialNB
    }

    def __init__(
        self, *, alpha: float = 1.0, fit_prior: bool = True, class_prior: ArrayLike | None = None
    ) -> None:
        self.alpha = alpha
        self.fit_prior = fit_prior
        self.class_prior = class_prior

    def fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> MultinomialNB:
        r"""Smoothed per-class feature frequencies; `sample_weight` $s$ scales row $i$'s counts by $s_i$."""
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0; got {self.alpha}.")
        Xa, ya = check_X_y(X, y)
        if (Xa < 0).any():
            raise ValueError(
                "Negative values in data passed to MultinomialNB (input X); it models "
                "non-negative counts."
            )
        codes = self._encode_labels(ya)
        self.n_features_in_ = Xa.shape[1]
        K = self.classes_.size
        Y = np.zeros((len(codes), K))
        Y[np.arange(len(codes)), codes] = 1.0
        if sample_weight is not None:
            Y *= check_sample_weight(sample_weight, len(codes))[:, None]
        self.class_count_ = Y.sum(0)
        self.feature_count_ = Y.T @ Xa
        alpha = max(float(self.alpha), 1e-10)
        smoothed = self.feature_count_ + alpha
        self.feature_log_prob_ = np.log(smoothed) - np.log(smoothed.sum(1, keepdims=True))
        if self.class_prior is not None:
            self.class_log_prior_ = np.log(np.asarray(self.class_prior, dtype=float))
        elif self.fit_prior:
            self.class_log_prior_ = np.log(self.class_count_) - np.log(self.class_count_.sum())
        else:
            self.class_log_prior_ = np.full(K, -np.log(K))
        return self

    def _joint_log_likelihood(self, X: FloatArray) -> FloatArray:
        return np.asarray(X @ self.feature_log_prob_.T + self.class_log_prior_)
