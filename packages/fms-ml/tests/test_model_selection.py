"""Splitters, cross-validation and grid search; unshuffled folds equal scikit-learn's exactly."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.model_selection as skms

from fms_ml import model_selection as ms
from fms_ml.linear_model import LogisticRegression, Ridge
from fms_ml.neighbors import KNeighborsClassifier


@pytest.mark.parametrize("n", [10, 23, 150])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_kfold_unshuffled_equals_sklearn_exactly(n: int, k: int) -> None:
    X = np.zeros((n, 1))
    for (a, b), (c, d) in zip(ms.KFold(k).split(X), skms.KFold(k).split(X), strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_kfold_unshuffled_equals_sklearn_exactly(seed: int) -> None:
    r = np.random.default_rng(seed)
    y = r.choice(["b", "a", "c"], size=47, p=[0.5, 0.3, 0.2])
    X = np.zeros((47, 1))
    ours = list(ms.StratifiedKFold(4).split(X, y))
    ref = list(skms.StratifiedKFold(4).split(X, y))
    for (a, b), (c, d) in zip(ours, ref, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_shuffled_splits_partition_the_data_and_are_seeded() -> None:
    y = np.repeat([0, 1], [30, 10])
    X = np.zeros((40, 1))
    tests = [te for _, te in ms.StratifiedKFold(5, shuffle=True, random_state=0).split(X, y)]
    np.testing.assert_array_equal(np.sort(np.concatenate(tests)), np.arange(40))
    assert all((y[te] == 1).sum() == 2 for te in tests)
    a = [te.tolist() for _, te in ms.KFold(4, shuffle=True, random_state=3).split(X)]
    b = [te.tolist() for _, te in ms.KFold(4, shuffle=True, random_state=3).split(X)]
    assert a == b


def test_train_test_split_sizes_and_stratify() -> None:
    X = np.arange(100).reshape(50, 2)
    y = np.repeat([0, 1], [40, 10])
    Xtr, Xte, _ytr, yte = ms.train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    assert (len(Xtr), len(Xte)) == (40, 10)
    assert (yte == 1).sum() == 2
    assert sorted(np.r_[Xtr[:, 0], Xte[:, 0]].tolist()) == X[:, 0].tolist()
    a = ms.train_test_split(X, random_state=1)
    assert [len(v) for v in a] == [37, 13]  # scikit-learn's rounding: test = ceil(0.25 n)
    with pytest.raises(ValueError, match="Inconsistent"):
        ms.train_test_split(X, y[:-1])
    with pytest.raises(ValueError, match="test_size"):
        ms.train_test_split(X, test_size=1.5)


def test_cross_val_score_equals_sklearn_for_same_folds(iris) -> None:  # type: ignore[no-untyped-def]
    """Same folds and a deterministic model give identical fold scores (exact)."""
    X, y = iris
    ours = ms.cross_val_score(KNeighborsClassifier(5), X, y, cv=5)
    ref = skms.cross_val_score(KNeighborsClassifier(5), X, y, cv=5)
    np.testing.assert_array_equal(ours, ref)


def test_grid_search_finds_best_and_refits(diabetes) -> None:  # type: ignore[no-untyped-def]
    X, y = diabetes
    gs = ms.GridSearchCV(Ridge(), {"alpha": [1e-3, 0.1, 10.0, 1000.0]}, cv=4, scoring="r2").fit(
        X, y
    )
    ref = skms.GridSearchCV(Ridge(), {"alpha": [1e-3, 0.1, 10.0, 1000.0]}, cv=4, scoring="r2").fit(
        X, y
    )
    assert gs.best_params_ == ref.best_params_
    np.testing.assert_allclose(
        gs.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"], rtol=1e-8
    )
    assert gs.cv_results_["rank_test_score"].tolist() == ref.cv_results_["rank_test_score"].tolist()
    assert gs.score(X, y) == pytest.approx(gs.best_estimator_.score(X, y))
    assert len(ms.ParameterGrid([{"a": [1, 2]}, {"b": [1, 2, 3]}])) == 5
    with pytest.raises(ValueError, match="non-empty list"):
        ms.ParameterGrid({"a": 1})  # type: ignore[dict-item]


def test_learning_curve_shapes_and_trend(breast_cancer) -> None:  # type: ignore[no-untyped-def]
    X, y = breast_cancer
    X = (X - X.mean(0)) / X.std(0)
    sizes, tr, te = ms.learning_curve(LogisticRegression(), X, y, train_sizes=[0.3, 0.6, 1.0], cv=3)
    assert tr.shape == te.shape == (3, 3)
    assert sizes.tolist() == [113, 227, 379]
    assert te.mean(1)[-1] >= te.mean(1)[0]


def test_scorers_and_cv_errors() -> None:
    with pytest.raises(ValueError, match="scoring"):
        ms.get_scorer("nope")
    with pytest.raises(ValueError, match="n_splits"):
        ms.KFold(1)
    with pytest.raises(ValueError, match="greater than the number of samples"):
        list(ms.KFold(5).split(np.zeros((3, 1))))
