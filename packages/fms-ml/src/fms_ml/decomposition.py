r"""Principal component analysis by the singular value decomposition.

Centre the data, $X_c = X - \bar x$, and decompose $X_c = U S V^\top$. The rows of $V^\top$ are
the principal axes (directions of maximal variance, orthonormal); the variance along axis $k$ is
$s_k^2 / (n - 1)$. Projecting on the first $q$ axes, $Z = X_c V_q$, is the best rank-$q$
approximation of $X_c$ in Frobenius norm (Eckart–Young). Whitening divides each projected column
by its standard deviation so the components have unit variance.

Signs follow scikit-learn's convention (the largest-magnitude entry of each axis is positive), so
components match it exactly, not only up to sign.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fms_ml._validation import check_array
from fms_ml.base import BaseEstimator, TransformerMixin

__all__ = ["PCA"]

FloatArray = NDArray[np.float64]


class PCA(TransformerMixin, BaseEstimator):
    """Principal component analysis (full SVD).

    Args:
        n_components: components to keep: `None` (all, $\\min(n, p)$), an int, or a float in
            $(0, 1)$ for the fewest components explaining that fraction of the variance.
        whiten: scale projections to unit variance.

    Attributes:
        components_: `(q, p)` principal axes, one per row.
        explained_variance_: variance along each axis, $s_k^2/(n-1)$.
        explained_variance_ratio_: fraction of the total variance along each axis.
        singular_values_: the kept singular values $s_k$.
        mean_: per-feature training mean.
        noise_variance_: mean variance of the discarded directions.
        n_components_: number of components kept, $q$.
    """

    def __init__(self, n_components: int | float | None = None, *, whiten: bool = False) -> None:
        self.n_components = n_components
        self.whiten = whiten

    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> PCA:
        """Compute the principal axes of `X`."""
        self._fit(X)
        return self

    def _fit(self, X: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
        Xa = check_array(X, ensure_min_samples=2)
        n, p = Xa.shape
        self.n_features_in_ = p
        self.n_samples_ = n
        self.mean_ = Xa.mean(0)
        U, S, Vt = np.linalg.svd(Xa - self.mean_, full_matrices=False)
        # sign convention (scikit-learn's svd_flip, u_based_decision=False)
        signs = np.sign(Vt[np.arange(len(Vt)), np.argmax(np.abs(Vt), axis=1)])
        signs[signs == 0] = 1.0
        U *= signs
        Vt *= signs[:, None]
        var = S**2 / (n - 1)
        total = var.sum()
        ratio = var / total if total > 0 else np.zeros_like(var)
        kmax = min(n, p)
        nc = self.n_components
        if nc is None:
            q = kmax
        elif isinstance(nc, float) and 0.0 < nc < 1.0:
            q = int(np.searchsorted(np.cumsum(ratio), nc, side="right") + 1)
            q = min(q, kmax)
        elif isinstance(nc, int | np.integer) and 0 < nc <= kmax:
            q = int(nc)
        else:
            raise ValueError(
                f"n_components={nc!r} must be None, an int in [1, {kmax}] or a float in (0, 1)."
            )
        self.n_components_ = q
        self.components_ = Vt[:q]
        self.explained_variance_ = var[:q]
        self.explained_variance_ratio_ = ratio[:q]
        self.singular_values_ = S[:q]
        self.noise_variance_ = float(var[q:].mean()) if q < kmax else 0.0
        return U[:, :q], S[:q], Vt[:q]

    def transform(self, X: ArrayLike) -> FloatArray:
        """Project onto the principal axes, `(n_samples, n_components_)`."""
        Xa = self._validate_predict_input(X)
        Z = (Xa - self.mean_) @ self.components_.T
        if self.whiten:
            Z /= np.sqrt(self.explained_variance_)
        return np.asarray(Z)

    def fit_transform(self, X: ArrayLike, y: ArrayLike | None = None) -> FloatArray:
        """Fit and project in one go ($U S$, no second product)."""
        U, S, _ = self._fit(X)
        Z = U * S
        if self.whiten:
            Z /= np.sqrt(self.explained_variance_)
        return Z

    def inverse_transform(self, Z: ArrayLike) -> FloatArray:
        """Map projections back to the input space (exact when all components are kept)."""
        Za = check_array(Z, "Z")
        if Za.shape[1] != self.n_components_:
            raise ValueError(
                f"Z has {Za.shape[1]} columns; expected n_components_={self.n_components_}."
            )
        if self.whiten:
            Za = Za * np.sqrt(self.explained_variance_)
        return np.asarray(Za @ self.components_ + self.mean_)

    def get_covariance(self) -> Any:
        """Model covariance $V^\\top \\operatorname{diag}(\\lambda - \\sigma^2) V + \\sigma^2 I$."""
        lam = self.explained_variance_ - self.noise_variance_
        cov = (self.components_.T * lam) @ self.components_
        cov.flat[:: self.n_features_in_ + 1] += self.noise_variance_
        return cov
