"""Trees and ensembles against scikit-learn.

Deterministic trees (all features examined) reach the same training fit and held-out accuracy
within 0.05 (ties between equally good splits are broken differently); on diabetes, depth-limited
regression trees and gradient boosting give the same predictions to 1e-8 (no ties). Forests:
held-out score within 0.05 of scikit-learn's with the same number of trees.
"""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.ensemble as ske
import sklearn.tree as skt

from fms_ml import ensemble, tree
from fms_ml.model_selection import train_test_split


def _split(data):  # type: ignore[no-untyped-def]
    X, y = data
    return train_test_split(
        X, y, test_size=0.3, random_state=0, stratify=y if len(np.unique(y)) < 20 else None
    )


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer", "digits"])
@pytest.mark.parametrize("criterion", ["gini", "entropy"])
def test_tree_classifier_heldout_accuracy_within_005_of_sklearn(name, criterion, request) -> None:  # type: ignore[no-untyped-def]
    Xtr, Xte, ytr, yte = _split(request.getfixturevalue(name))
    ours = tree.DecisionTreeClassifier(criterion=criterion).fit(Xtr, ytr)
    ref = skt.DecisionTreeClassifier(criterion=criterion, random_state=0).fit(Xtr, ytr)
    assert ours.score(Xtr, ytr) == ref.score(Xtr, ytr) == 1.0
    assert abs(ours.score(Xte, yte) - ref.score(Xte, yte)) <= 0.05
    assert abs(ours.get_depth() - ref.get_depth()) <= 2
    np.testing.assert_allclose(ours.feature_importances_.sum(), 1.0)


def test_tree_structure_identical_to_sklearn_without_ties(rng) -> None:  # type: ignore[no-untyped-def]
    """Continuous features and nodes large enough that no two splits tie: the same tree."""
    X = rng.normal(size=(400, 5))
    y = (X[:, 0] + X[:, 1] ** 2 + 0.3 * rng.normal(size=400) > 1).astype(int)
    ours = tree.DecisionTreeClassifier(max_depth=4, min_samples_leaf=15).fit(X, y)
    ref = skt.DecisionTreeClassifier(max_depth=4, min_samples_leaf=15, random_state=0).fit(X, y)
    assert ours.tree_.node_count == ref.tree_.node_count
    np.testing.assert_allclose(
        np.sort(ours.tree_.threshold), np.sort(ref.tree_.threshold), rtol=1e-12
    )
    np.testing.assert_allclose(ours.feature_importances_, ref.feature_importances_, rtol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X))


@pytest.mark.parametrize("max_depth", [2, 4, 6])
def test_regression_tree_predictions_equal_sklearn_to_1e8_on_diabetes(diabetes, max_depth) -> None:  # type: ignore[no-untyped-def]
    X, y = diabetes
    ours = tree.DecisionTreeRegressor(max_depth=max_depth).fit(X, y)
    ref = skt.DecisionTreeRegressor(max_depth=max_depth, random_state=0).fit(X, y)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-8)
    # equally good splits on different features (ties) shift importance between them, not the fit
    assert np.argmax(ours.feature_importances_) == np.argmax(ref.feature_importances_)


@pytest.mark.parametrize(
    "kw",
    [
        {"min_samples_split": 40},
        {"min_samples_leaf": 15},
        {"min_impurity_decrease": 50.0},
        {"max_depth": 3},
    ],
)
def test_tree_controls_match_sklearn_on_diabetes(diabetes, kw) -> None:  # type: ignore[no-untyped-def]
    X, y = diabetes
    ours = tree.DecisionTreeRegressor(**kw).fit(X, y)
    ref = skt.DecisionTreeRegressor(random_state=0, **kw).fit(X, y)
    assert ours.get_n_leaves() == ref.get_n_leaves()
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-8)


def test_tree_string_labels_and_apply(iris) -> None:  # type: ignore[no-untyped-def]
    X, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = tree.DecisionTreeClassifier(max_depth=2).fit(X, names)
    assert set(clf.predict(X)) <= set(names)
    leaves = clf.apply(X)
    assert np.all(clf.tree_.children_left[leaves] == -1)
    assert clf.get_depth() == 2


def test_gradient_boosting_regressor_equals_sklearn_to_1e8(diabetes) -> None:  # type: ignore[no-untyped-def]
    X, y = diabetes
    ours = ensemble.GradientBoostingRegressor(n_estimators=50).fit(X, y)
    ref = ske.GradientBoostingRegressor(n_estimators=50, random_state=0).fit(X, y)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-8)
    np.testing.assert_allclose(ours.train_score_, ref.train_score_, rtol=1e-8)


@pytest.mark.parametrize("name", ["breast_cancer", "iris"])
def test_gradient_boosting_classifier_equals_sklearn_to_1e8(name, request) -> None:  # type: ignore[no-untyped-def]
    X, y = request.getfixturevalue(name)
    ours = ensemble.GradientBoostingClassifier(n_estimators=30).fit(X, y)
    ref = ske.GradientBoostingClassifier(n_estimators=30, random_state=0).fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-8)


def test_random_forest_classifier_heldout_within_005_of_sklearn(wine, breast_cancer) -> None:  # type: ignore[no-untyped-def]
    for data in (wine, breast_cancer):
        Xtr, Xte, ytr, yte = _split(data)
        ours = ensemble.RandomForestClassifier(30, random_state=0).fit(Xtr, ytr)
        ref = ske.RandomForestClassifier(30, random_state=0).fit(Xtr, ytr)
        assert ours.score(Xte, yte) >= ref.score(Xte, yte) - 0.05
        np.testing.assert_allclose(ours.predict_proba(Xte).sum(1), 1.0)
        np.testing.assert_allclose(ours.feature_importances_.sum(), 1.0)


def test_random_forest_regressor_heldout_r2_within_005_of_sklearn(diabetes) -> None:  # type: ignore[no-untyped-def]
    X, y = diabetes
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0)
    ours = ensemble.RandomForestRegressor(30, min_samples_leaf=3, random_state=0).fit(Xtr, ytr)
    ref = ske.RandomForestRegressor(30, min_samples_leaf=3, random_state=0).fit(Xtr, ytr)
    assert ours.score(Xte, yte) >= ref.score(Xte, yte) - 0.05


def test_forest_is_reproducible_with_random_state(iris) -> None:  # type: ignore[no-untyped-def]
    X, y = iris
    a = ensemble.RandomForestClassifier(5, random_state=3).fit(X, y).predict_proba(X)
    b = ensemble.RandomForestClassifier(5, random_state=3).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)


def test_tree_parameter_errors(iris) -> None:  # type: ignore[no-untyped-def]
    X, y = iris
    with pytest.raises(ValueError, match="criterion"):
        tree.DecisionTreeClassifier(criterion="mse").fit(X, y)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_depth"):
        tree.DecisionTreeClassifier(max_depth=0).fit(X, y)
    with pytest.raises(ValueError, match="max_features"):
        tree.DecisionTreeClassifier(max_features=10).fit(X, y)
    with pytest.raises(ValueError, match="n_estimators"):
        ensemble.RandomForestClassifier(0).fit(X, y)
    with pytest.raises(ValueError, match="learning_rate"):
        ensemble.GradientBoostingRegressor(learning_rate=0.0).fit(X, y.astype(float))


@pytest.mark.parametrize("kind", ["gini", "entropy", "squared_error"])
def test_weighted_rows_grow_the_same_tree_as_copied_rows(kind) -> None:  # type: ignore[no-untyped-def]
    """Forests grow on bootstrap counts as weights: a row of weight w must act as w copies.

    All features examined. Regression (continuous targets, fully grown): the same partition of
    the training rows (leaf values equal to 1e-10 relative), node count and total impurity
    decrease; which feature separates two rows when several do equally well may differ, as the
    tie is broken by position. Classification (integer counts tie more often, so depth 3): the
    same tree, leaf values equal on fresh points.
    """
    from fms_ml.tree import _grow_many

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    if kind == "squared_error":
        Y = (X[:, 0] + 0.1 * rng.normal(size=200)).reshape(-1, 1)
    else:
        Y = np.eye(3)[(X[:, 0] + X[:, 1] + rng.normal(size=200) > 0).astype(int) + (X[:, 2] > 1)]
    counts = np.bincount(rng.integers(0, 200, 200), minlength=200)
    rows = np.nonzero(counts)[0]
    kw = {
        "max_depth": None if kind == "squared_error" else 3,
        "min_samples_split": 2,
        "min_samples_leaf": 1,
        "min_impurity_decrease": 0.0,
        "max_features": 5,
    }
    ((t_w, imp_w),) = _grow_many(X, Y, kind, [rows], [counts[rows].astype(float)], rng=rng, **kw)
    ((t_c, imp_c),) = _grow_many(X, Y, kind, [np.repeat(rows, counts[rows])], rng=rng, **kw)
    Xq = X[rows] if kind == "squared_error" else rng.normal(size=(300, 5))
    np.testing.assert_allclose(t_w.value[t_w.apply(Xq)], t_c.value[t_c.apply(Xq)], rtol=1e-10)
    assert t_w.node_count == t_c.node_count
    np.testing.assert_allclose(imp_w.sum(), imp_c.sum(), rtol=1e-8)


@pytest.mark.parametrize(
    ("max_features", "expected"), [(None, 13), ("sqrt", 3), ("log2", 3), (0.5, 6), (4, 4)]
)
def test_forest_max_features_resolves_as_sklearn(wine, max_features, expected) -> None:  # type: ignore[no-untyped-def]
    """`None` means every feature (13 for wine), as in scikit-learn, not the class default."""
    X, y = wine
    for cls in (ensemble.RandomForestClassifier, ensemble.RandomForestRegressor):
        forest = cls(n_estimators=2, max_features=max_features, random_state=0).fit(X, y)
        assert {t.max_features for t in forest.estimators_} == {expected}
        ref = getattr(ske, cls.__name__)(n_estimators=2, max_features=max_features).fit(X, y)
        assert {t.max_features_ for t in ref.estimators_} == {expected}
