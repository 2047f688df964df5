r"""Gaussian mixture models fitted by expectation-maximisation (Dempster, Laird & Rubin, 1977).

The model: $p(x) = \sum_k \pi_k\, \mathcal N(x \mid \mu_k, \Sigma_k)$. EM alternates

* **E-step**: responsibilities $r_{ik} = \pi_k \mathcal N(x_i \mid \mu_k, \Sigma_k) / p(x_i)$;
* **M-step**: $N_k = \sum_i r_{ik}$, $\pi_k = N_k / n$, $\mu_k = \frac{1}{N_k}\sum_i r_{ik} x_i$,
  $\Sigma_k = \frac{1}{N_k}\sum_i r_{ik}(x_i - \mu_k)(x_i - \mu_k)^\top + \epsilon I$,

and never decreases the log-likelihood. Densities are evaluated through the Cholesky factor of
each precision matrix, as scikit-learn does, so the iterations (and, from the same start, the
result) match it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fms_ml._validation import (
    check_array,
    check_random_state,
    not_fitted_error,
    warn_not_converged,
)
from fms_ml.base import BaseEstimator
from fms_ml.cluster import KMeans

__all__ = ["GaussianMixture"]

FloatArray = NDArray[np.float64]


def _logsumexp(a: FloatArray) -> FloatArray:
    m = a.max(1, keepdims=True)
    return np.asarray((m + np.log(np.exp(a - m).sum(1, keepdims=True)))[:, 0])


class GaussianMixture(BaseEstimator):
    """Gaussian mixture with `"full"` or `"diag"` covariances, fitted by EM.

    Args:
        n_components: number of Gaussians.
        covariance_type: `"full"` (one matrix each) or `"diag"` (one variance vector each).
        tol: stop when the mean log-likelihood improves by less than `tol`.
        reg_covar: $\\epsilon$ added to covariance diagonals.
        max_iter: EM iterations per initialisation.
        n_init: initialisations; the best lower bound wins.
        init_params: `"kmeans"` or `"random"` responsibilities to start from.
        weights_init: explicit starting weights `(K,)`.
        means_init: explicit starting means `(K, p)`.
        precisions_init: explicit starting precisions (`(K, p, p)` full, `(K, p)` diag).
        random_state: seed.

    Attributes:
        weights_: mixing proportions $\\pi_k$.
        means_: `(K, p)` component means.
        covariances_: `(K, p, p)` (full) or `(K, p)` (diag) covariances.
        precisions_: inverses of the covariances.
        precisions_cholesky_: Cholesky factors of the precisions.
        converged_: whether EM met `tol` for the best initialisation.
        n_iter_: EM iterations of the best initialisation.
        lower_bound_: mean log-likelihood at the end of the best initialisation.
    """

    _estimator_type = "density_estimator"

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: Literal["full", "diag"] = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: Literal["kmeans", "random"] = "kmeans",
        weights_init: ArrayLike | None = None,
        means_init: ArrayLike | None = None,
        precisions_init: ArrayLike | None = None,
        random_state: Any = None,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state

    # -- parameter estimation ---------------------------------------------------------------------
    def _m_step_params(self, X: FloatArray, resp: FloatArray) -> None:
        nk = resp.sum(0) + 10 * np.finfo(resp.dtype).eps
        means = resp.T @ X / nk[:, None]
        if self.covariance_type == "full":
            K, p = means.shape
            cov = np.empty((K, p, p))
            for k in range(K):
                diff = X - means[k]
                cov[k] = (resp[:, k] * diff.T) @ diff / nk[k]
                cov[k].flat[:: p + 1] += self.reg_covar
            chol = np.linalg.cholesky(cov)
            eye = np.eye(p)
            prec_chol = np.stack([np.linalg.solve(c, eye).T for c in chol])
        else:
            avg_x2 = resp.T @ (X * X) / nk[:, None]
            avg_xm = means * (resp.T @ X) / nk[:, None]
            cov = avg_x2 - 2 * avg_xm + means**2 + self.reg_covar
            prec_chol = 1.0 / np.sqrt(cov)
        self.weights_ = nk / len(X)
        self.means_ = means
        self.covariances_ = cov
        self.precisions_cholesky_ = prec_chol

    def _estimate_log_gaussian(self, X: FloatArray) -> FloatArray:
        n, p = X.shape
        if self.covariance_type == "full":
            log_det = np.log(np.diagonal(self.precisions_cholesky_, axis1=1, axis2=2)).sum(1)
            log_prob = np.empty((n, len(self.means_)))
            for k, (mu, pc) in enumerate(zip(self.means_, self.precisions_cholesky_, strict=True)):
                yk = X @ pc - mu @ pc
                log_prob[:, k] = (yk * yk).sum(1)
        else:
            pc = self.precisions_cholesky_
            log_det = np.log(pc).sum(1)
            prec = pc**2
            log_prob = (
                (self.means_**2 * prec).sum(1)[None]
                - 2.0 * (X @ (self.means_ * prec).T)
                + (X**2) @ prec.T
            )
        return np.asarray(-0.5 * (p * np.log(2 * np.pi) + log_prob) + log_det)

    def _e_step(self, X: FloatArray) -> tuple[float, FloatArray]:
        weighted = self._estimate_log_gaussian(X) + np.log(self.weights_)
        norm = _logsumexp(weighted)
        return float(norm.mean()), weighted - norm[:, None]

    def _initialize(self, X: FloatArray, rng: np.random.Generator) -> None:
        n, K = len(X), self.n_components
        if self.init_params == "kmeans":
            labels = KMeans(K, n_init=1, random_state=rng).fit(X).labels_
            resp = np.zeros((n, K))
            resp[np.arange(n), labels] = 1.0
        elif self.init_params == "random":
            resp = rng.uniform(size=(n, K))
            resp /= resp.sum(1, keepdims=True)
        else:
            raise ValueError(f"init_params must be 'kmeans' or 'random'; got {self.init_params!r}.")
        self._m_step_params(X, resp)
        p = X.shape[1]
        if self.weights_init is not None:
            self.weights_ = np.asarray(self.weights_init, dtype=float)
        if self.means_init is not None:
            self.means_ = check_array(self.means_init, "means_init")
            if self.means_.shape != (K, p):
                raise ValueError(f"means_init has shape {self.means_.shape}; expected ({K}, {p}).")
        if self.precisions_init is not None:
            prec = np.asarray(self.precisions_init, dtype=float)
            if self.covariance_type == "full":
                self.precisions_cholesky_ = np.linalg.cholesky(prec)
            else:
                self.precisions_cholesky_ = np.sqrt(prec)

    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> GaussianMixture:
        """Run EM from `n_init` starts; keep the highest lower bound."""
        self.fit_predict(X)
        return self

    def fit_predict(self, X: ArrayLike, y: ArrayLike | None = None) -> NDArray[np.intp]:
        """Fit, then return the most responsible component of each sample."""
        if self.covariance_type not in ("full", "diag"):
            raise ValueError(
                f"covariance_type must be 'full' or 'diag'; got {self.covariance_type!r}."
            )
        Xa = check_array(X, ensure_min_samples=2)
        if not 1 <= self.n_components <= len(Xa):
            raise ValueError(
                f"n_components={self.n_components} must lie in [1, n_samples={len(Xa)}]."
            )
        if self.reg_covar < 0:
            raise ValueError(f"reg_covar must be >= 0; got {self.reg_covar}.")
        self.n_features_in_ = Xa.shape[1]
        rng = check_random_state(self.random_state)
        best_lb, best = -np.inf, None
        for _ in range(max(1, self.n_init)):
            self._initialize(Xa, rng)
            lb, converged, it = -np.inf, False, 0
            for it in range(1, self.max_iter + 1):  # noqa: B007
                prev = lb
                lb, log_resp = self._e_step(Xa)
                self._m_step_params(Xa, np.exp(log_resp))
                self.weights_ /= self.weights_.sum()
                if abs(lb - prev) < self.tol:
                    converged = True
                    break
            if lb > best_lb or best is None:
                best_lb = lb
                best = (
                    self.weights_,
                    self.means_,
                    self.covariances_,
                    self.precisions_cholesky_,
                    it,
                    converged,
                )
        assert best is not None
        (
            self.weights_,
            self.means_,
            self.covariances_,
            self.precisions_cholesky_,
            self.n_iter_,
            self.converged_,
        ) = best
        if not self.converged_:
            warn_not_converged(self, self.max_iter, " (on the best of its initialisations)")
        self.lower_bound_ = best_lb
        if self.covariance_type == "full":
            self.precisions_ = np.einsum(
                "kij,klj->kil", self.precisions_cholesky_, self.precisions_cholesky_
            )
        else:
            self.precisions_ = self.precisions_cholesky_**2
        _, log_resp = self._e_step(Xa)
        return np.asarray(log_resp.argmax(1))

    def _check(self, X: ArrayLike) -> FloatArray:
        if not hasattr(self, "means_"):
            raise not_fitted_error(
                "This GaussianMixture instance is not fitted yet; call fit(X) first."
            )
        return self._validate_predict_input(X)

    def score_samples(self, X: ArrayLike) -> FloatArray:
        """Log density $\\log p(x)$ of each sample."""
        Xa = self._check(X)
        return _logsumexp(self._estimate_log_gaussian(Xa) + np.log(self.weights_))

    def score(self, X: ArrayLike, y: ArrayLike | None = None) -> float:
        """Mean log-likelihood."""
        return float(self.score_samples(X).mean())

    def predict_proba(self, X: ArrayLike) -> FloatArray:
        """Responsibilities `(n_samples, n_components)`."""
        Xa = self._check(X)
        return np.exp(self._e_step(Xa)[1])

    def predict(self, X: ArrayLike) -> NDArray[np.intp]:
        """Most responsible component."""
        return np.asarray(self.predict_proba(X).argmax(1))

    def _n_parameters(self) -> int:
        K, p = self.means_.shape
        cov = K * p * (p + 1) / 2 if self.covariance_type == "full" else K * p
        return int(cov + K * p + K - 1)

    def bic(self, X: ArrayLike) -> float:
        """Bayesian information criterion $-2\\log L + k \\log n$ (lower is better)."""
        Xa = check_array(X)
        return float(-2 * self.score(Xa) * len(Xa) + self._n_parameters() * np.log(len(Xa)))

    def aic(self, X: ArrayLike) -> float:
        """Akaike information criterion $-2\\log L + 2k$ (lower is better)."""
        Xa = check_array(X)
        return -2 * self.score(Xa) * len(Xa) + 2 * self._n_parameters()
