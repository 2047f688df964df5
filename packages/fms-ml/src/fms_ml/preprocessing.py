r"""Feature preprocessing: scaling, one-hot encoding, polynomial features.

All transformers learn their statistics in `fit` from training data only and apply them in
`transform`, so they can sit inside a [`Pipeline`][fms_ml.pipeline.Pipeline] without leaking
test information into cross-validation.
"""

from __future__ import annotations

import math
from itertools import chain, combinations, combinations_with_replacement
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fms_ml._validation import check_allocation, check_array, check_is_fitted
from fms_ml.base import BaseEstimator, LabelEncoder, TransformerMixin

__all__ = [
    "LabelEncoder",
    "MinMaxScaler",
    "OneHotEncoder",
    "PolynomialFeatures",
    "StandardScaler",
]

FloatArray = NDArray[np.float64]


def _handle_zeros(scale: FloatArray) -> FloatArray:
    """Constant features get scale 1 (left unscaled), as in scikit-learn."""
    eps = 10 * np.finfo(scale.dtype).eps
    return np.where(scale < eps, 1.0, scale)


class StandardScaler(TransformerMixin, BaseEstimator):
    r"""Standardise features: $z = (x - \mu) / \sigma$ with the population $\sigma$ (ddof 0).

    Args:
        with_mean: subtract the mean.
        with_std: divide by the standard deviation (constant features are left unscaled).

    Attributes:
        mean_: `(n_features,)` training means.
        scale_: `(n_features,)` training standard deviations (1 where constant).
        var_: `(n_features,)` training variances.
    """

    def __init__(self, *, with_mean: bool = True, with_std: bool = True) -> None:
        self.with_mean = with_mean
        self.with_std = with_std

    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> StandardScaler:
        """Learn per-feature mean and standard deviation."""
        Xa = check_array(X)
        self.n_features_in_ = Xa.shape[1]
        self.n_samples_seen_ = Xa.shape[0]
        self.mean_ = Xa.mean(axis=0)
        self.var_ = Xa.var(axis=0)
        self.scale_ = _handle_zeros(np.sqrt(self.var_)) if self.with_std else None
        return self

    def transform(self, X: ArrayLike) -> FloatArray:
        """Standardise `X` with the training statistics."""
        Xa = self._validate_predict_input(X).copy()
        if self.with_mean:
            Xa -= self.mean_
        if self.with_std and self.scale_ is not None:
            Xa /= self.scale_
        return Xa

    def inverse_transform(self, X: ArrayLike) -> FloatArray:
        """Undo [`transform`][fms_ml.preprocessing.StandardScaler.transform]."""
        Xa = self._validate_predict_input(X).copy()
        if self.with_std and self.scale_ is not None:
            Xa *= self.scale_
        if self.with_mean:
            Xa += self.mean_
        return Xa


class MinMaxScaler(TransformerMixin, BaseEstimator):
    r"""Rescale each feature linearly to `feature_range`: $x' = a + (x - \min)(b - a)/(\max - \min)$.

    Attributes:
        data_min_, data_max_: training minimum and maximum per feature.
        scale_, min_: `transform(X) = X * scale_ + min_`.
    """

    def __init__(self, feature_range: tuple[float, float] = (0, 1), *, clip: bool = False) -> None:
        self.feature_range = feature_range
        self.clip = clip

    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> MinMaxScaler:
        """Learn the per-feature minimum and maximum."""
        lo, hi = self.feature_range
        if lo >= hi:
            raise ValueError(
                f"feature_range must be (min, max) with min < max; got {self.feature_range}."
            )
        Xa = check_array(X)
        self.n_features_in_ = Xa.shape[1]
        self.data_min_ = Xa.min(axis=0)
        self.data_max_ = Xa.max(axis=0)
        self.data_range_ = self.data_max_ - self.data_min_
        self.scale_ = (hi - lo) / _handle_zeros(self.data_range_)
        self.min_ = lo - self.data_min_ * self.scale_
        return self

    def transform(self, X: ArrayLike) -> FloatArray:
        """Rescale `X` with the training range."""
        Xa = self._validate_predict_input(X) * self.scale_ + self.min_
        if self.clip:
            Xa = np.clip(Xa, *self.feature_range)
        return np.asarray(Xa)

    def inverse_transform(self, X: ArrayLike) -> FloatArray:
        """Undo [`transform`][fms_ml.preprocessing.MinMaxScaler.transform]."""
        return np.asarray((self._validate_predict_input(X) - self.min_) / self.scale_)


class OneHotEncoder(TransformerMixin, BaseEstimator):
    """Encode each categorical column as indicator columns (dense output).

    Categories are the sorted distinct values of each training column.

    Args:
        categories: `"auto"` or a list of arrays, one per column.
        drop: `None`, `"first"` (drop each column's first category) or `"if_binary"`.
        handle_unknown: `"error"` or `"ignore"` (an unseen category encodes as all zeros).

    Attributes:
        categories_: list of the categories of each column.
    """

    _tag_overrides: ClassVar[dict[str, bool]] = {
        "input_tags.string": True,
        "input_tags.categorical": True,
    }

    def __init__(
        self,
        *,
        categories: str | list[ArrayLike] = "auto",
        drop: Literal["first", "if_binary"] | None = None,
        handle_unknown: Literal["error", "ignore"] = "error",
    ) -> None:
        self.categories = categories
        self.drop = drop
        self.handle_unknown = handle_unknown

    def _check_X(self, X: ArrayLike) -> NDArray[Any]:
        Xa = check_array(X, "X", dtype=None, ensure_finite=False)
        if Xa.dtype.kind == "f" and not np.isfinite(Xa).all():
            raise ValueError("X contains NaN or inf; expected finite categories.")
        return Xa

    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> OneHotEncoder:
        """Learn the categories of each column."""
        if self.handle_unknown not in ("error", "ignore"):
            raise ValueError(
                f"handle_unknown must be 'error' or 'ignore'; got {self.handle_unknown!r}."
            )
        if self.drop not in (None, "first", "if_binary"):
            raise ValueError(f"drop must be None, 'first' or 'if_binary'; got {self.drop!r}.")
        Xa = self._check_X(X)
        self.n_features_in_ = Xa.shape[1]
        if isinstance(self.categories, str):
            if self.categories != "auto":
                raise ValueError(f"categories must be 'auto' or a list; got {self.categories!r}.")
            self.categories_ = [np.unique(Xa[:, j]) for j in range(Xa.shape[1])]
        else:
            if len(self.categories) != Xa.shape[1]:
                raise ValueError(
                    f"categories has {len(self.categories)} entries; X has {Xa.shape[1]} columns."
                )
            self.categories_ = [np.sort(np.asarray(c)) for c in self.categories]
            for j, cats in enumerate(self.categories_):
                unknown = np.setdiff1d(Xa[:, j], cats)
                if unknown.size:
                    raise ValueError(
                        f"column {j} has values {unknown[:5].tolist()} not in categories."
                    )
        if self.drop == "first":
            self.drop_idx_: list[int | None] = [0] * len(self.categories_)
        elif self.drop == "if_binary":
            self.drop_idx_ = [0 if len(c) == 2 else None for c in self.categories_]
        else:
            self.drop_idx_ = [None] * len(self.categories_)
        return self

    def transform(self, X: ArrayLike) -> FloatArray:
        """One-hot encode `X`: `(n_samples, sum of kept categories)`."""
        check_is_fitted(self, ["categories_"])
        Xa = self._check_X(X)
        if Xa.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {Xa.shape[1]} features, but OneHotEncoder was fitted with "
                f"{self.n_features_in_} features."
            )
        blocks = []
        for j, cats in enumerate(self.categories_):
            col = Xa[:, j]
            pos = np.clip(np.searchsorted(cats, col), 0, len(cats) - 1)
            known = cats[pos] == col
            if not known.all() and self.handle_unknown == "error":
                raise ValueError(
                    f"Found unknown categories {np.unique(col[~known])[:5].tolist()} in column {j} "
                    f"during transform; set handle_unknown='ignore' to encode them as zeros."
                )
            block = np.zeros((Xa.shape[0], len(cats)))
            rows = np.nonzero(known)[0]
            block[rows, pos[rows]] = 1.0
            drop = self.drop_idx_[j]
            if drop is not None:
                block = np.delete(block, drop, axis=1)
            blocks.append(block)
        return np.hstack(blocks)

    def get_feature_names_out(self, input_features: list[str] | None = None) -> NDArray[np.str_]:
        """Output column names `x{j}_{category}`."""
        check_is_fitted(self, ["categories_"])
        names = input_features or [f"x{j}" for j in range(self.n_features_in_)]
        out: list[str] = []
        for j, cats in enumerate(self.categories_):
            keep = [c for i, c in enumerate(cats) if i != self.drop_idx_[j]]
            out.extend(f"{names[j]}_{c}" for c in keep)
        return np.asarray(out)


class PolynomialFeatures(TransformerMixin, BaseEstimator):
    r"""All monomials of the features up to `degree`, in scikit-learn's column order.

    For features $(a, b)$ and degree 2: $1, a, b, a^2, ab, b^2$. With `interaction_only`, no
    feature appears twice in a term ($1, a, b, ab$).
    """

    def __init__(
        self, degree: int = 2, *, interaction_only: bool = False, include_bias: bool = True
    ) -> None:
        self.degree = degree
        self.interaction_only = interaction_only
        self.include_bias = include_bias

    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> PolynomialFeatures:
        """Enumerate the monomials for the number of columns of `X`."""
        if not isinstance(self.degree, int | np.integer) or self.degree < 0:
            raise ValueError(f"degree must be a non-negative int; got {self.degree!r}.")
        Xa = check_array(X)
        n = Xa.shape[1]
        self.n_features_in_ = n
        comb = combinations if self.interaction_only else combinations_with_replacement
        start = 0 if self.include_bias else 1
        # counted before they are enumerated: C(n, d) monomials of degree d with distinct
        # features, C(n + d - 1, d) with repeats; 1 000 features at degree 10 make about 3e23
        count = math.comb if self.interaction_only else lambda n, d: math.comb(n + d - 1, d)
        n_out = sum(count(n, d) for d in range(start, self.degree + 1))
        check_allocation(
            (n_out,),
            f"the table of the {n_out:.3g} output monomials",
            "lower degree, use interaction_only=True, or select features first",
            itemsize=48 + 8 * self.degree,  # one tuple of `degree` indices per monomial
            owner=self,
        )
        self.powers_combinations_ = list(
            chain.from_iterable(comb(range(n), d) for d in range(start, self.degree + 1))
        )
        self.n_output_features_ = len(self.powers_combinations_)
        return self

    @property
    def powers_(self) -> NDArray[np.int64]:
        """`(n_output_features, n_features)` exponent of each input in each output column."""
        check_is_fitted(self, ["powers_combinations_"])
        P = np.zeros((len(self.powers_combinations_), self.n_features_in_), dtype=np.int64)
        for i, c in enumerate(self.powers_combinations_):
            for j in c:
                P[i, j] += 1
        return P

    def transform(self, X: ArrayLike) -> FloatArray:
        """Compute the monomials of `X`."""
        Xa = self._validate_predict_input(X)
        check_allocation(
            (Xa.shape[0], self.n_output_features_),
            "the output",
            "transform fewer rows at a time, lower degree, or use interaction_only=True",
            owner=self,
        )
        out = np.empty((Xa.shape[0], self.n_output_features_))
        for i, c in enumerate(self.powers_combinations_):
            out[:, i] = np.prod(Xa[:, list(c)], axis=1) if c else 1.0
        return out
