r"""Ensembles of trees: random forests (bagging) and gradient boosting.

**Random forest** (Breiman, 2001): average $B$ trees, each grown on a bootstrap sample with a
random subset of `max_features` features tried at every node. Averaging leaves the bias of a deep
tree nearly unchanged and divides the variance of its uncorrelated part by $B$; the feature draws
decorrelate the trees.

**Gradient boosting** (Friedman, 2001): an additive model $F_M(x) = F_0 + \nu\sum_m h_m(x)$ built
stage-wise; each small tree $h_m$ is fitted to the negative gradient of the loss at the current
$F_{m-1}$ (the residual $y - F$ for squared error, $y - p$ for log loss), and for log loss every
leaf value is then replaced by one Newton step $\sum r / \sum p(1-p)$ (times $(K-1)/K$ for $K$
classes), as in scikit-learn. With `sample_weight` $s$ every step is weighted as in scikit-learn:
$F_0$ is the weighted mean (or the logit / log of the weighted class priors), each tree is grown
on the weighted residuals, and the Newton leaf values become $\sum s r / \sum s\, p(1-p)$.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fms_ml._validation import (
    check_random_state,
    check_sample_weight,
    check_X_y,
    compute_class_weight,
)
from fms_ml.base import BaseEstimator, ClassifierMixin, RegressorMixin
from fms_ml.tree import (
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    Tree,
    _grow,
    _grow_many,
    _resolve_max_features,
    leaf_values,
)

__all__ = [
    "GradientBoostingClassifier",
    "GradientBoostingRegressor",
    "RandomForestClassifier",
    "RandomForestRegressor",
]

FloatArray = NDArray[np.float64]


class _BaseForest(BaseEstimator):
    estimators_: list[Any]

    def _check(self) -> None:
        if not isinstance(self.n_estimators, int | np.integer) or self.n_estimators < 1:  # type: ignore[attr-defined]
            raise ValueError(f"n_estimators must be a positive int; got {self.n_estimators!r}.")  # type: ignore[attr-defined]

    def _grow_all(
        self,
        X: FloatArray,
        Y: FloatArray,
        kind: str,
        tree_cls: type,
        sample_weight: FloatArray | None = None,
        subsample_codes: NDArray[np.intp] | None = None,
    ) -> None:
        r"""Grow the trees; `sample_weight` (with class weights folded in) weighs the rows.

        With bootstrap, as scikit-learn 1.9 does, the weights set the probability of drawing
        each row, $\pi_i = s_i / \sum_j s_j$, and each tree is weighted by its draw counts;
        without, each tree is grown on all rows weighted by $s$. `subsample_codes` (the class
        codes, for `class_weight="balanced_subsample"`) re-balances every bootstrap sample: row
        $i$'s count is multiplied by $m / (K_b\, m_{y_i})$, with $m_k$ the draws of class $k$,
        $m$ all draws and $K_b$ the classes drawn.
        """
        self._check()
        n, p = X.shape
        self.n_features_in_ = p
        rng = check_random_state(self.random_state)  # type: ignore[attr-defined]
        # None means every feature, as in scikit-learn; the defaults ("sqrt", 1.0) are in __init__
        mf = _resolve_max_features(self.max_features, p, None)  # type: ignore[attr-defined]
        self.estimators_ = []
        imps = []
        roots: list[NDArray[np.intp]] = []
        weights: list[FloatArray] | None = [] if self.bootstrap else None  # type: ignore[attr-defined]
        if weights is None and sample_weight is not None:
            weights = []  # no bootstrap: every tree on the rows of positive weight
        draw_p = None if sample_weight is None else sample_weight / sample_weight.sum()
        for _ in range(self.n_estimators):  # type: ignore[attr-defined]
            if not self.bootstrap:  # type: ignore[attr-defined]
                if weights is None or sample_weight is None:
                    roots.append(np.arange(n))
                    continue
                rows = np.nonzero(sample_weight > 0)[0]
                roots.append(rows)
                weights.append(sample_weight[rows])
                continue
            assert weights is not None
            # a bootstrap sample as row counts: each drawn row once, weighted by its draws
            # (the tree then works on ~63% of n distinct rows instead of n copied ones)
            drawn = rng.integers(0, n, n) if draw_p is None else rng.choice(n, n, p=draw_p)
            counts = np.bincount(drawn, minlength=n).astype(np.float64)
            if subsample_codes is not None:
                per_class = np.bincount(subsample_codes, weights=counts)
                present = per_class > 0
                with np.errstate(divide="ignore"):
                    cw = np.where(present, n / (present.sum() * per_class), 0.0)
                counts *= cw[subsample_codes]
            rows = np.nonzero(counts)[0]
            roots.append(rows)
            weights.append(counts[rows])
        # grow the trees in batches sharing the level arrays (~128k values a batch: cache-sized)
        per_batch = max(1, (1 << 17) // max(1, n * p))
        grown: list[tuple[Tree, FloatArray]] = []
        for s in range(0, len(roots), per_batch):
            grown += _grow_many(
                X,
                Y,
                kind,
                roots[s : s + per_batch],
                None if weights is None else weights[s : s + per_batch],
                max_depth=self.max_depth,  # type: ignore[attr-defined]
                min_samples_split=self.min_samples_split,  # type: ignore[attr-defined]
                min_samples_leaf=self.min_samples_leaf,  # type: ignore[attr-defined]
                min_impurity_decrease=self.min_impurity_decrease,  # type: ignore[attr-defined]
                max_features=mf,
                rng=rng,
            )
        for tree, imp in grown:
            est = tree_cls(
                criterion=self.criterion,  # type: ignore[attr-defined]
                max_depth=self.max_depth,  # type: ignore[attr-defined]
                min_samples_split=self.min_samples_split,  # type: ignore[attr-defined]
                min_samples_leaf=self.min_samples_leaf,  # type: ignore[attr-defined]
                max_features=mf,
            )
            est.tree_, est.n_features_in_ = tree, p
            est.feature_importances_ = imp / imp.sum() if imp.sum() > 0 else imp
            if hasattr(self, "classes_"):
                est.classes_, est.n_classes_ = self.classes_, len(self.classes_)
            self.estimators_.append(est)
            imps.append(est.feature_importances_)
        mean_imp = np.mean(imps, axis=0)
        self.feature_importances_ = mean_imp / mean_imp.sum() if mean_imp.sum() > 0 else mean_imp


class RandomForestClassifier(ClassifierMixin, _BaseForest):
    """A forest of CART classifiers on bootstrap samples; predicts the mean class probability.

    Args:
        n_estimators: number of trees.
        criterion: `"gini"` or `"entropy"`.
        max_depth: depth limit of each tree.
        min_samples_split: smallest node that may be split.
        min_samples_leaf: smallest allowed child.
        min_impurity_decrease: smallest weighted impurity decrease for a split.
        max_features: features tried per node (default `"sqrt"`; `None`: all of them).
        bootstrap: resample the training set for each tree.
        random_state: seed for the bootstrap and feature draws.
        class_weight: `None`, `"balanced"`, `"balanced_subsample"` or a dict `{label: weight}`.
            `"balanced"` computes $n / (K n_k)$ once on the whole training set ($n_k$ the
            summed sample weight of class $k$); `"balanced_subsample"` recomputes it on every
            bootstrap sample (it is `"balanced"` without bootstrap). The class weights
            multiply `sample_weight`; see `fit` for how the product enters the trees.
    """

    def __init__(
        self,
        n_estimators: int = 100,
        *,
        criterion: Literal["gini", "entropy"] = "gini",
        max_depth: int | None = None,
        min_samples_split: int = 2,
        min_samples_leaf: int = 1,
        min_impurity_decrease: float = 0.0,
        max_features: int | float | str | None = "sqrt",
        bootstrap: bool = True,
        random_state: Any = None,
        class_weight: Literal["balanced", "balanced_subsample"] | dict[Any, float] | None = None,
    ) -> None:
        self.n_estimators = n_estimators
        self.criterion = criterion
        self.max_depth = max_depth
        self.min_samples_split = min_samples_split
        self.min_samples_leaf = min_samples_leaf
        self.min_impurity_decrease = min_impurity_decrease
        self.max_features = max_features
        self.bootstrap = bootstrap
        self.random_state = random_state
        self.class_weight = class_weight

    def fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> RandomForestClassifier:
        r"""Grow `n_estimators` trees.

        With `sample_weight` $s$ (times the class weights), as in scikit-learn 1.9: a bootstrap
        draws row $i$ with probability $s_i / \sum_j s_j$ and weights each tree by the draw
        counts; without bootstrap every tree is grown on the rows weighted by $s$.
        """
        if self.criterion not in ("gini", "entropy"):
            raise ValueError(f"criterion must be 'gini' or 'entropy'; got {self.criterion!r}.")
        Xa, ya = check_X_y(X, y)
        sw = None if sample_weight is None else check_sample_weight(sample_weight, len(Xa))
        codes = self._encode_labels(ya)
        self.n_classes_ = self.classes_.size
        cw, sub = self.class_weight, None
        if cw == "balanced_subsample":
            if self.bootstrap:
                cw, sub = None, codes  # computed on every bootstrap sample
            else:
                cw = "balanced"
        if cw is not None:
            expanded = compute_class_weight(cw, self.classes_, codes, sw)[codes]
            sw = expanded if sw is None else sw * expanded
            if not (sw > 0).any():
                raise ValueError("class_weight times sample_weight is zero for every sample.")
        Y = np.zeros((len(codes), self.n_classes_))
        Y[np.arange(len(codes)), codes] = 1.0
        self._grow_all(Xa, Y, self.criterion, DecisionTreeClassifier, sw, sub)
        return self

    def predict_proba(self, X: ArrayLike) -> FloatArray:
        """Mean over trees of the leaf class frequencies."""
        Xa = self._validate_predict_input(X)
        trees = [est.tree_ for est in self.estimators_]
        return np.asarray(leaf_values(trees, Xa, normalise=True).mean(axis=1))

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """Class with the largest mean probability."""
        proba = self.predict_proba(X)
        return np.asarray(self.classes_[proba.argmax(1)])


class RandomForestRegressor(RegressorMixin, _BaseForest):
    """A forest of CART regressors on bootstrap samples; predicts the mean of the trees.

    Same arguments as [`RandomForestClassifier`][fms_ml.ensemble.RandomForestClassifier];
    `max_features` defaults to 1.0 (all features), as in scikit-learn.
    """

    def __init__(
        self,
        n_estimators: int = 100,
        *,
        criterion: Literal["squared_error"] = "squared_error",
        max_depth: int | None = None,
        min_samples_split: int = 2,
        min_samples_leaf: int = 1,
        min_impurity_decrease: float = 0.0,
        max_features: int | float | str | None = 1.0,
        bootstrap: bool = True,
        random_state: Any = None,
    ) -> None:
        self.n_estimators = n_estimators
        self.criterion = criterion
        self.max_depth = max_depth
        self.min_samples_split = min_samples_split
        self.min_samples_leaf = min_samples_leaf
        self.min_impurity_decrease = min_impurity_decrease
        self.max_features = max_features
        self.bootstrap = bootstrap
        self.random_state = random_state

    def fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> RandomForestRegressor:
        """Grow `n_estimators` trees (`sample_weight` as in `RandomForestClassifier.fit`)."""
        if self.criterion != "squared_error":
            raise ValueError(f"criterion must be 'squared_error'; got {self.criterion!r}.")
        Xa, ya = check_X_y(X, y, y_numeric=True)
        sw = None if sample_weight is None else check_sample_weight(sample_weight, len(Xa))
        self._grow_all(Xa, ya.reshape(-1, 1), "squared_error", DecisionTreeRegressor, sw)
        return self

    def predict(self, X: ArrayLike) -> FloatArray:
        """Mean prediction of the trees."""
        Xa = self._validate_predict_input(X)
        trees = [est.tree_ for est in self.estimators_]
        return np.asarray(leaf_values(trees, Xa)[:, :, 0].mean(axis=1))


# ------------------------------------------------------------------------------------------------
# Gradient boosting
# ------------------------------------------------------------------------------------------------
class _BaseGB(BaseEstimator):
    estimators_: list[list[Tree]]

    def _check(self) -> None:
        if not isinstance(self.n_estimators, int | np.integer) or self.n_estimators < 1:  # type: ignore[attr-defined]
            raise ValueError(f"n_estimators must be a positive int; got {self.n_estimators!r}.")  # type: ignore[attr-defined]
        if self.learning_rate <= 0:  # type: ignore[attr-defined]
            raise ValueError(f"learning_rate must be > 0; got {self.learning_rate}.")  # type: ignore[attr-defined]
        if not 0.0 < self.subsample <= 1.0:  # type: ignore[attr-defined]
            raise ValueError(f"subsample must lie in (0, 1]; got {self.subsample}.")  # type: ignore[attr-defined]

    def _stage_tree(
        self,
        X: FloatArray,
        r: FloatArray,
        rng: np.random.Generator,
        mf: int,
        sample_weight: FloatArray | None = None,
    ) -> tuple[Tree, FloatArray, NDArray[np.bool_]]:
        n = len(X)
        mask = np.ones(n, dtype=bool)
        if self.subsample < 1.0:  # type: ignore[attr-defined]
            mask[:] = False
            mask[rng.choice(n, max(1, int(self.subsample * n)), replace=False)] = True  # type: ignore[attr-defined]
        tree, imp = _grow(
            X[mask],
            r[mask].reshape(-1, 1),
            "squared_error",
            None if sample_weight is None else sample_weight[mask],
            max_depth=self.max_depth,  # type: ignore[attr-defined]
            min_samples_split=self.min_samples_split,  # type: ignore[attr-defined]
            min_samples_leaf=self.min_samples_leaf,  # type: ignore[attr-defined]
            min_impurity_decrease=self.min_impurity_decrease,  # type: ignore[attr-defined]
            max_features=mf,
            rng=rng,
        )
        return tree, imp, mask

    def _finish_importances(self, imps: list[FloatArray]) -> None:
        per = [i / i.sum() if i.sum() > 0 else i for i in imps]
        m = np.mean(per, axis=0)
        self.feature_importances_ = m / m.sum() if m.sum() > 0 else m


class GradientBoostingRegressor(RegressorMixin, _BaseGB):
    r"""Gradient boosting with the squared error: each tree fits the residuals $y - F_{m-1}(x)$.

    $F_0 = \bar y$; $F_m = F_{m-1} + \nu\, h_m$ with $\nu$ = `learning_rate`. With
    `sample_weight` $s$: $F_0 = \sum_i s_i y_i / \sum_i s_i$, and each tree minimises the
    $s$-weighted squared error (its leaves hold weighted means of the residuals).
    """

    def __init__(
        self,
        *,
        loss: Literal["squared_error"] = "squared_error",
        learning_rate: float = 0.1,
        n_estimators: int = 100,
        subsample: float = 1.0,
        max_depth: int | None = 3,
        min_samples_split: int = 2,
        min_samples_leaf: int = 1,
        min_impurity_decrease: float = 0.0,
        max_features: int | float | str | None = None,
        random_state: Any = None,
    ) -> None:
        self.loss = loss
        self.learning_rate = learning_rate
        self.n_estimators = n_estimators
        self.subsample = subsample
        self.max_depth = max_depth
        self.min_samples_split = min_samples_split
        self.min_samples_leaf = min_samples_leaf
        self.min_impurity_decrease = min_impurity_decrease
        self.max_features = max_features
        self.random_state = random_state

    def fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> GradientBoostingRegressor:
        """Fit `n_estimators` stages (`train_score_` is the weighted MSE with `sample_weight`)."""
        self._check()
        if self.loss != "squared_error":
            raise ValueError(f"loss must be 'squared_error'; got {self.loss!r}.")
        Xa, ya = check_X_y(X, y, y_numeric=True)
        self.n_features_in_ = Xa.shape[1]
        rng = check_random_state(self.random_state)
        mf = _resolve_max_features(self.max_features, Xa.shape[1], None)
        sw = None if sample_weight is None else check_sample_weight(sample_weight, len(ya))
        self.init_ = float(ya.mean()) if sw is None else float(np.average(ya, weights=sw))
        F = np.full(len(ya), self.init_)
        self.estimators_, imps = [], []
        self.train_score_ = np.empty(self.n_estimators)
        for m in range(self.n_estimators):
            tree, imp, _ = self._stage_tree(Xa, ya - F, rng, mf, sw)
            F += self.learning_rate * tree.value[tree.apply(Xa), 0]
            self.estimators_.append([tree])
            imps.append(imp)
            self.train_score_[m] = float(np.average((ya - F) ** 2, weights=sw))
        self._finish_importances(imps)
        return self

    def staged_predict(self, X: ArrayLike) -> Any:
        """Yield the prediction after each stage."""
        Xa = self._validate_predict_input(X)
        F = np.full(len(Xa), self.init_)
        for (tree,) in self.estimators_:
            F = F + self.learning_rate * tree.value[tree.apply(Xa), 0]
            yield F

    def predict(self, X: ArrayLike) -> FloatArray:
        """$F_M(x)$."""
        Xa = self._validate_predict_input(X)
        V = leaf_values([tree for (tree,) in self.estimators_], Xa)[:, :, 0]
        return np.asarray(self.init_ + self.learning_rate * V.sum(axis=1))


class GradientBoostingClassifier(ClassifierMixin, _BaseGB):
    r"""Gradient boosting with the log loss (binomial, or multinomial with one tree per class).

    Binary: $F_0 = \log\frac{p}{1-p}$ of the class prior, each tree fits $y - \sigma(F)$ and its
    leaves take the Newton value $\sum r / \sum p(1-p)$. Multiclass: $K$ raw scores, softmax link,
    one tree per class per stage. With `sample_weight` $s$ the class prior is the weighted one
    ($\sum_{y_i = k} s_i / \sum_i s_i$), the trees are grown on the $s$-weighted residuals and the
    leaf values are $\sum s r / \sum s\, p(1-p)$ over the leaf, as in scikit-learn.
    """

    def __init__(
        self,
        *,
        loss: Literal["log_loss"] = "log_loss",
        learning_rate: float = 0.1,
        n_estimators: int = 100,
        subsample: float = 1.0,
        max_depth: int | None = 3,
        min_samples_split: int = 2,
        min_samples_leaf: int = 1,
        min_impurity_decrease: float = 0.0,
        max_features: int | float | str | None = None,
        random_state: Any = None,
    ) -> None:
        self.loss = loss
        self.learning_rate = learning_rate
        self.n_estimators = n_estimators
        self.subsample = subsample
        self.max_depth = max_depth
        self.min_samples_split = min_samples_split
        self.min_samples_leaf = min_samples_leaf
        self.min_impurity_decrease = min_impurity_decrease
        self.max_features = max_features
        self.random_state = random_state

    def fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> GradientBoostingClassifier:
        """Fit `n_estimators` stages."""
        self._check()
        if self.loss != "log_loss":
            raise ValueError(f"loss must be 'log_loss'; got {self.loss!r}.")
        Xa, ya = check_X_y(X, y)
        codes = self._encode_labels(ya)
        self.n_features_in_ = Xa.shape[1]
        n, K = len(codes), self.classes_.size
        rng = check_random_state(self.random_state)
        mf = _resolve_max_features(self.max_features, Xa.shape[1], None)
        sw = None if sample_weight is None else check_sample_weight(sample_weight, n)
        total = n if sw is None else float(sw.sum())
        prior = np.clip(
            np.bincount(codes, weights=sw, minlength=K) / total,
            np.finfo(float).eps,
            1 - np.finfo(float).eps,
        )
        if K == 2:
            self.init_ = np.array([np.log(prior[1] / prior[0])])
            Y = codes[:, None].astype(np.float64)
        else:
            logp = np.log(prior)
            self.init_ = logp - logp.mean()
            Y = np.zeros((n, K))
            Y[np.arange(n), codes] = 1.0
        F = np.tile(self.init_, (n, 1))
        self.estimators_, imps = [], []
        for _ in range(self.n_estimators):
            P = _link_inverse(F)
            stage = []
            for k in range(F.shape[1]):
                r = Y[:, k] - P[:, k]
                tree, imp, mask = self._stage_tree(Xa, r, rng, mf, sw)
                leaves = tree.apply(Xa)
                lm = np.where(mask, leaves, tree.node_count)
                p = P[:, k]
                h = p * (1 - p)
                sr, sh = (r, h) if sw is None else (sw * r, sw * h)
                num = np.bincount(lm, sr, minlength=tree.node_count + 1)[:-1].astype(np.float64)
                den = np.bincount(lm, sh, minlength=tree.node_count + 1)[:-1]
                if K > 2:
                    num = num * ((K - 1) / K)
                with np.errstate(divide="ignore", invalid="ignore"):
                    val = np.where(np.abs(den) > 1e-150, num / den, 0.0)
                leaf = tree.children_left == -1
                tree.value[leaf, 0] = val[leaf]
                F[:, k] += self.learning_rate * tree.value[leaves, 0]
                stage.append(tree)
                imps.append(imp)
            self.estimators_.append(stage)
        self._finish_importances(imps)
        return self

    def decision_function(self, X: ArrayLike) -> FloatArray:
        """Raw scores $F_M(x)$: `(n_samples,)` binary (log-odds), `(n_samples, K)` otherwise."""
        Xa = self._validate_predict_input(X)
        K = len(self.estimators_[0])
        V = leaf_values([t for stage in self.estimators_ for t in stage], Xa)[:, :, 0]
        F = self.init_ + self.learning_rate * V.reshape(len(Xa), -1, K).sum(axis=1)
        return np.asarray(F[:, 0] if F.shape[1] == 1 else F)

    def predict_proba(self, X: ArrayLike) -> FloatArray:
        """Class probabilities (sigmoid or softmax of the raw scores)."""
        F = self.decision_function(X)
        P = _link_inverse(F.reshape(len(F), -1))
        return np.c_[1 - P[:, 0], P[:, 0]] if P.shape[1] == 1 else P

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """Most probable class."""
        proba = self.predict_proba(X)
        return np.asarray(self.classes_[proba.argmax(1)])


def _link_inverse(F: FloatArray) -> FloatArray:
    if F.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-F))
    Z = np.exp(F - F.max(1, keepdims=True))
    return np.asarray(Z / Z.sum(1, keepdims=True))
