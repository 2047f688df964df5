r"""Model selection: data splits, cross-validation, grid search, learning curves.

Cross-validation estimates the risk $\mathbb E[\ell(f_{D}(x), y)]$ of the procedure "fit on a
training set $D$" by averaging the held-out score over $k$ disjoint folds. The $k$ estimates share
training data, so they are correlated: compare models with
[`corrected_resampled_ttest`][fms_ml.experiment.corrected_resampled_ttest], not a naive t-test.
Unshuffled [`KFold`][fms_ml.model_selection.KFold] and
[`StratifiedKFold`][fms_ml.model_selection.StratifiedKFold] produce exactly scikit-learn's folds.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fms_ml import metrics
from fms_ml._validation import check_consistent_length, check_random_state
from fms_ml.base import clone

__all__ = [
    "GridSearchCV",
    "KFold",
    "ParameterGrid",
    "StratifiedKFold",
    "check_cv",
    "cross_val_score",
    "cross_validate",
    "get_scorer",
    "learning_curve",
    "train_test_split",
]

IntArray = NDArray[np.intp]
Scorer = Callable[[Any, Any, Any], float]


# ------------------------------------------------------------------------------------------------
# Splits
# ------------------------------------------------------------------------------------------------
def _n_test_train(
    n: int, test_size: float | int | None, train_size: float | int | None
) -> tuple[int, int]:
    if test_size is None and train_size is None:
        test_size = 0.25

    def to_count(size: float | int, name: str, ceil: bool) -> int:
        if isinstance(size, int | np.integer):
            if not 0 < size < n:
                raise ValueError(f"{name}={size} must lie in (0, {n}) for {n} samples.")
            return int(size)
        if not 0.0 < float(size) < 1.0:
            raise ValueError(f"{name}={size} as a fraction must lie in (0, 1).")
        return int(np.ceil(size * n)) if ceil else int(np.floor(size * n))

    n_test = to_count(test_size, "test_size", True) if test_size is not None else None
    n_train = to_count(train_size, "train_size", False) if train_size is not None else None
    if n_test is None:
        n_test = n - int(n_train or 0)
    if n_train is None:
        n_train = n - n_test
    if n_train + n_test > n or n_train == 0 or n_test == 0:
        raise ValueError(
            f"train_size={n_train} and test_size={n_test} do not fit {n} samples (need both >= 1)."
        )
    return n_test, n_train


def train_test_split(
    *arrays: Any,
    test_size: float | int | None = None,
    train_size: float | int | None = None,
    random_state: int | np.random.Generator | None = None,
    shuffle: bool = True,
    stratify: ArrayLike | None = None,
) -> list[Any]:
    """Split arrays into random train and test subsets (default 75% / 25%).

    Returns:
        `[a_train, a_test, b_train, b_test, ...]`, in the order of `arrays`.
    """
    if not arrays:
        raise ValueError("train_test_split needs at least one array.")
    arrs = [np.asarray(a) for a in arrays]
    check_consistent_length(**{f"arrays[{i}]": a for i, a in enumerate(arrs)})
    n = len(arrs[0])
    n_test, n_train = _n_test_train(n, test_size, train_size)
    if not shuffle:
        if stratify is not None:
            raise ValueError("stratify needs shuffle=True.")
        train, test = np.arange(n_train), np.arange(n_train, n_train + n_test)
    elif stratify is not None:
        rng = check_random_state(random_state)
        classes, codes = np.unique(np.asarray(stratify), return_inverse=True)
        counts = np.bincount(codes)
        if counts.min() < 2:
            raise ValueError(
                f"stratify: the least populated class has {counts.min()} member; need >= 2."
            )
        test_per = np.floor(counts * n_test / n).astype(int)
        rem = n_test - test_per.sum()
        frac = counts * n_test / n - test_per
        for i in np.argsort(-frac, kind="stable")[:rem]:
            test_per[i] += 1
        test_l, train_l = [], []
        for k in range(classes.size):
            idx = rng.permutation(np.nonzero(codes == k)[0])
            test_l.append(idx[: test_per[k]])
            train_l.append(idx[test_per[k] :])
        test = rng.permutation(np.concatenate(test_l))
        train = rng.permutation(np.concatenate(train_l))[:n_train]
    else:
        perm = check_random_state(random_state).permutation(n)
        test, train = perm[:n_test], perm[n_test : n_test + n_train]
    out: list[Any] = []
    for a in arrs:
        out += [a[train], a[test]]
    return out


class KFold:
    """K consecutive folds (shuffled first if `shuffle`); each is the test set once.

    The first `n_samples % n_splits` folds get one extra sample, as in scikit-learn.
    """

    def __init__(
        self, n_splits: int = 5, *, shuffle: bool = False, random_state: int | None = None
    ) -> None:
        if not isinstance(n_splits, int | np.integer) or n_splits < 2:
            raise ValueError(f"n_splits must be an int >= 2; got {n_splits!r}.")
        self.n_splits = int(n_splits)
        self.shuffle = shuffle
        self.random_state = random_state

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """Number of folds."""
        return int(self.n_splits)

    def _test_folds(self, n: int, y: Any) -> Iterator[IntArray]:
        idx = np.arange(n)
        if self.shuffle:
            idx = check_random_state(self.random_state).permutation(n)
        sizes = np.full(self.n_splits, n // self.n_splits)
        sizes[: n % self.n_splits] += 1
        start = 0
        for s in sizes:
            yield idx[start : start + s]
            start += s

    def split(
        self, X: ArrayLike, y: ArrayLike | None = None, groups: Any = None
    ) -> Iterator[tuple[IntArray, IntArray]]:
        """Yield `(train_indices, test_indices)` for each fold."""
        n = len(X)  # type: ignore[arg-type]
        if self.n_splits > n:
            raise ValueError(f"n_splits={self.n_splits} is greater than the number of samples {n}.")
        for test in self._test_folds(n, y):
            mask = np.ones(n, dtype=bool)
            mask[test] = False
            yield np.nonzero(mask)[0], np.sort(test)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_splits={self.n_splits}, shuffle={self.shuffle}, random_state={self.random_state})"


class StratifiedKFold(KFold):
    """K folds that preserve each class's proportion (scikit-learn's allocation, exactly).

    Classes are ordered by first appearance; samples sorted by class are dealt round-robin to
    folds to fix how many of each class each fold gets, then each class's samples fill its folds
    in order (shuffled within class if `shuffle`).
    """

    def _test_folds(self, n: int, y: Any) -> Iterator[IntArray]:
        if y is None:
            raise ValueError("StratifiedKFold.split needs y (the class labels).")
        ya = np.asarray(y)
        _, first_idx, inverse = np.unique(ya, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        _, class_perm = np.unique(first_idx, return_inverse=True)
        y_enc = class_perm[inverse]
        n_classes = first_idx.size
        counts = np.bincount(y_enc)
        if np.all(self.n_splits > counts):
            raise ValueError(
                f"n_splits={self.n_splits} cannot be greater than the number of members in each "
                f"class (counts {counts.tolist()})."
            )
        y_order = np.sort(y_enc)
        allocation = np.asarray(
            [
                np.bincount(y_order[i :: self.n_splits], minlength=n_classes)
                for i in range(self.n_splits)
            ]
        )
        rng = check_random_state(self.random_state) if self.shuffle else None
        test_folds = np.empty(n, dtype=np.intp)
        for k in range(n_classes):
            folds_k = np.arange(self.n_splits).repeat(allocation[:, k])
            if rng is not None:
                folds_k = rng.permutation(folds_k)
            test_folds[y_enc == k] = folds_k
        for i in range(self.n_splits):
            yield np.nonzero(test_folds == i)[0]

    def split(
        self, X: ArrayLike, y: ArrayLike | None = None, groups: Any = None
    ) -> Iterator[tuple[IntArray, IntArray]]:
        """Yield `(train_indices, test_indices)` for each stratified fold."""
        if y is None:
            raise ValueError("StratifiedKFold.split needs y (the class labels).")
        check_consistent_length(X=X, y=y)
        return super().split(X, y, groups)


def check_cv(cv: Any = 5, y: ArrayLike | None = None, *, classifier: bool = False) -> Any:
    """Turn `cv` (an int, a splitter, or an iterable of splits) into a splitter.

    An int gives [`StratifiedKFold`][fms_ml.model_selection.StratifiedKFold] for classifiers with
    discrete `y`, [`KFold`][fms_ml.model_selection.KFold] otherwise.
    """
    if cv is None:
        cv = 5
    if isinstance(cv, numbers.Integral):
        if classifier and y is not None and np.asarray(y).dtype.kind not in "fc":
            return StratifiedKFold(int(cv))
        if classifier and y is not None and np.all(np.mod(np.asarray(y, dtype=float), 1) == 0):
            return StratifiedKFold(int(cv))
        return KFold(int(cv))
    if hasattr(cv, "split"):
        return cv
    return _Fixed(list(cv))


class _Fixed:
    def __init__(self, splits: list[tuple[Any, Any]]) -> None:
        self.splits = splits

    def split(self, X: Any, y: Any = None, groups: Any = None) -> Iterator[tuple[Any, Any]]:
        yield from self.splits

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        return len(self.splits)


# ------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------
def _pred_scorer(fn: Callable[..., float], sign: float = 1.0, **kw: Any) -> Scorer:
    def scorer(est: Any, X: Any, y: Any) -> float:
        return sign * float(fn(y, est.predict(X), **kw))

    return scorer


def _proba_scorer(fn: Callable[..., float], sign: float = 1.0) -> Scorer:
    def scorer(est: Any, X: Any, y: Any) -> float:
        p = est.predict_proba(X)
        return sign * float(
            fn(y, p[:, 1] if fn is metrics.roc_auc_score and p.shape[1] == 2 else p)
        )

    return scorer


_SCORERS: dict[str, Scorer] = {
    "accuracy": _pred_scorer(metrics.accuracy_score),
    "f1": _pred_scorer(metrics.f1_score),
    "f1_macro": _pred_scorer(metrics.f1_score, average="macro"),
    "f1_micro": _pred_scorer(metrics.f1_score, average="micro"),
    "f1_weighted": _pred_scorer(metrics.f1_score, average="weighted"),
    "precision": _pred_scorer(metrics.precision_score),
    "recall": _pred_scorer(metrics.recall_score),
    "r2": _pred_scorer(metrics.r2_score),
    "neg_mean_squared_error": _pred_scorer(metrics.mean_squared_error, -1.0),
    "neg_mean_absolute_error": _pred_scorer(metrics.mean_absolute_error, -1.0),
    "neg_log_loss": _proba_scorer(metrics.log_loss, -1.0),
    "roc_auc": _proba_scorer(metrics.roc_auc_score),
}


def get_scorer(scoring: str | Scorer | None) -> Scorer:
    """A scorer `f(estimator, X, y) -> float` (greater is better) from a name or a callable.

    `None` uses the estimator's own `score` method.
    """
    if scoring is None:
        return lambda est, X, y: float(est.score(X, y))
    if callable(scoring):
        return scoring
    if scoring not in _SCORERS:
        raise ValueError(f"scoring={scoring!r} is not known; expected one of {sorted(_SCORERS)}.")
    return _SCORERS[scoring]


def _index(a: Any, idx: IntArray) -> Any:
    return np.asarray(a)[idx] if a is not None else None


def cross_validate(
    estimator: Any,
    X: ArrayLike,
    y: ArrayLike | None = None,
    *,
    scoring: str | Scorer | None = None,
    cv: Any = 5,
    return_train_score: bool = False,
) -> dict[str, NDArray[np.float64]]:
    """Fit a clone of `estimator` on each training fold and score it on the test fold.

    Returns:
        `{"test_score": (k,)}` (and `"train_score"` if asked).
    """
    Xa = np.asarray(X)
    splitter = check_cv(
        cv, y, classifier=getattr(estimator, "_estimator_type", None) == "classifier"
    )
    scorer = get_scorer(scoring)
    test, train = [], []
    for tr, te in splitter.split(Xa, y):
        est = clone(estimator).fit(Xa[tr], _index(y, tr))
        test.append(scorer(est, Xa[te], _index(y, te)))
        if return_train_score:
            train.append(scorer(est, Xa[tr], _index(y, tr)))
    out = {"test_score": np.asarray(test)}
    if return_train_score:
        out["train_score"] = np.asarray(train)
    return out


def cross_val_score(
    estimator: Any,
    X: ArrayLike,
    y: ArrayLike | None = None,
    *,
    scoring: str | Scorer | None = None,
    cv: Any = 5,
) -> NDArray[np.float64]:
    """Held-out score of `estimator` on each of the `cv` folds, shape `(k,)`."""
    return cross_validate(estimator, X, y, scoring=scoring, cv=cv)["test_score"]


# ------------------------------------------------------------------------------------------------
# Grid search
# ------------------------------------------------------------------------------------------------
class ParameterGrid:
    """Every combination of a dict (or list of dicts) of parameter lists, keys sorted."""

    def __init__(
        self, param_grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]]
    ) -> None:
        grids = [param_grid] if isinstance(param_grid, Mapping) else list(param_grid)
        for g in grids:
            for k, v in g.items():
                if isinstance(v, str) or not isinstance(v, Sequence | np.ndarray) or len(v) == 0:
                    raise ValueError(
                        f"param_grid[{k!r}] must be a non-empty list of values; got {v!r}."
                    )
        self.grids = grids

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for g in self.grids:
            keys = sorted(g)
            for values in itertools.product(*(g[k] for k in keys)):
                yield dict(zip(keys, values, strict=True))

    def __len__(self) -> int:
        return sum(int(np.prod([len(v) for v in g.values()])) for g in self.grids)


class GridSearchCV:
    """Exhaustive search over a parameter grid by cross-validated score; refits the best.

    Attributes:
        cv_results_: dict with `params`, `mean_test_score`, `std_test_score`,
            `rank_test_score` and `split{i}_test_score`.
        best_params_, best_score_, best_index_: the winner (ties go to the first).
        best_estimator_: the winner refitted on all data (if `refit`).
    """

    def __init__(
        self,
        estimator: Any,
        param_grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]],
        *,
        scoring: str | Scorer | None = None,
        cv: Any = 5,
        refit: bool = True,
    ) -> None:
        self.estimator = estimator
        self.param_grid = param_grid
        self.scoring = scoring
        self.cv = cv
        self.refit = refit

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyper-parameters (the base estimator's as `estimator__param` with `deep`)."""
        out = {k: getattr(self, k) for k in ("estimator", "param_grid", "scoring", "cv", "refit")}
        if deep and hasattr(self.estimator, "get_params"):
            out.update((f"estimator__{k}", v) for k, v in self.estimator.get_params().items())
        return out

    def set_params(self, **params: Any) -> GridSearchCV:
        """Set hyper-parameters."""
        for k, v in params.items():
            if k.startswith("estimator__"):
                self.estimator.set_params(**{k[len("estimator__") :]: v})
            elif k in ("estimator", "param_grid", "scoring", "cv", "refit"):
                setattr(self, k, v)
            else:
                raise ValueError(f"Invalid parameter {k!r} for GridSearchCV.")
        return self

    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> GridSearchCV:
        """Cross-validate every candidate and refit the best on all of `(X, y)`."""
        Xa = np.asarray(X)
        candidates = list(ParameterGrid(self.param_grid))
        splitter = check_cv(
            self.cv, y, classifier=getattr(self.estimator, "_estimator_type", None) == "classifier"
        )
        splits = list(splitter.split(Xa, y))
        scorer = get_scorer(self.scoring)
        scores = np.empty((len(candidates), len(splits)))
        for i, params in enumerate(candidates):
            for j, (tr, te) in enumerate(splits):
                est = clone(self.estimator).set_params(**params).fit(Xa[tr], _index(y, tr))
                scores[i, j] = scorer(est, Xa[te], _index(y, te))
        mean = scores.mean(axis=1)
        order = np.argsort(-mean, kind="stable")
        rank = np.empty(len(candidates), dtype=np.int64)
        rank[order] = np.arange(1, len(candidates) + 1)
        self.cv_results_: dict[str, Any] = {
            "params": candidates,
            "mean_test_score": mean,
            "std_test_score": scores.std(axis=1),
            "rank_test_score": rank,
            **{f"split{j}_test_score": scores[:, j] for j in range(len(splits))},
        }
        self.best_index_ = int(np.argmax(mean))
        self.best_params_ = candidates[self.best_index_]
        self.best_score_ = float(mean[self.best_index_])
        self.n_splits_ = len(splits)
        if self.refit:
            self.best_estimator_ = clone(self.estimator).set_params(**self.best_params_).fit(Xa, y)
        return self

    def _best(self) -> Any:
        if not hasattr(self, "best_estimator_"):
            from fms_ml._validation import not_fitted_error

            raise not_fitted_error("GridSearchCV is not fitted (or refit=False); call fit first.")
        return self.best_estimator_

    def predict(self, X: ArrayLike) -> Any:
        """Predict with the refitted best estimator."""
        return self._best().predict(X)

    def predict_proba(self, X: ArrayLike) -> Any:
        """Class probabilities from the refitted best estimator."""
        return self._best().predict_proba(X)

    def score(self, X: ArrayLike, y: ArrayLike) -> float:
        """Score of the refitted best estimator with the search's scoring."""
        return get_scorer(self.scoring)(self._best(), X, y)


# ------------------------------------------------------------------------------------------------
# Learning curve
# ------------------------------------------------------------------------------------------------
def learning_curve(
    estimator: Any,
    X: ArrayLike,
    y: ArrayLike,
    *,
    train_sizes: ArrayLike = (0.1, 0.325, 0.55, 0.775, 1.0),
    cv: Any = 5,
    scoring: str | Scorer | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Training and cross-validated scores as the training set grows.

    For each fold, the estimator is fitted on the first `m` samples of the training fold for each
    size `m` and scored on that subset and on the test fold.

    Returns:
        `(train_sizes_abs, train_scores, test_scores)`, scores of shape `(n_sizes, n_folds)`.
    """
    Xa, ya = np.asarray(X), np.asarray(y)
    splitter = check_cv(
        cv, ya, classifier=getattr(estimator, "_estimator_type", None) == "classifier"
    )
    splits = list(splitter.split(Xa, ya))
    n_max = min(len(tr) for tr, _ in splits)
    ts = np.asarray(train_sizes, dtype=float)
    if ts.size == 0 or ts.min() <= 0:
        raise ValueError(f"train_sizes must be positive; got {ts.tolist()}.")
    if ts.max() <= 1.0:
        sizes = np.maximum(1, (ts * n_max).astype(np.int64))
    else:
        sizes = ts.astype(np.int64)
        if sizes.max() > n_max:
            raise ValueError(
                f"train_sizes up to {sizes.max()} exceed the training fold size {n_max}."
            )
    sizes = np.unique(sizes)
    scorer = get_scorer(scoring)
    train_scores = np.empty((sizes.size, len(splits)))
    test_scores = np.empty_like(train_scores)
    for j, (tr, te) in enumerate(splits):
        for i, m in enumerate(sizes):
            sub = tr[:m]
            est = clone(estimator).fit(Xa[sub], ya[sub])
            train_scores[i, j] = scorer(est, Xa[sub], ya[sub])
            test_scores[i, j] = scorer(est, Xa[te], ya[te])
    return sizes, train_scores, test_scores
