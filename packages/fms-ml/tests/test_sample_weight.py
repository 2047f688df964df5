"""`sample_weight` in the linear models, trees, SVMs, clusterers and metrics, against scikit-learn.

Three kinds of check for every estimator and metric:

* parity with scikit-learn on the same data and weights (some weights zero): least squares,
  ridge, lasso and elastic-net coefficients to 1e-8 relative (the last two with the same zeros
  and sweeps); logistic regression (both sides at `tol=1e-10`) to 1e-5 relative, probabilities
  to 1e-6; naive Bayes statistics to 1e-10 relative, probabilities to 1e-10; depth-limited trees
  the same structure (node count, sorted thresholds, node sizes and weighted sizes) and
  predictions to 1e-10; gradient boosting predictions to 1e-8 (trees kept free of exact ties
  between features, see its tests); LinearSVC coefficients to 1e-4 relative and SVC decision
  values, dual coefficients and intercepts to 1e-3 absolute at `tol=1e-6` with the same support
  vectors (the tolerances of the unweighted SVM tests); KMeans from the same initial centres:
  centres, inertia and score to 1e-10, identical labels and iterations (k-means++ seeding, whose
  random stream differs, is checked by its semantics); DBSCAN labels and core samples identical;
  SGD (whose random streams differ) by its exact properties and by landing on the weighted
  least-squares fit; metrics (classification ones included) to 1e-12 relative;
* integer weights equal repeated rows, and weight 0 equals a dropped row (same tolerances; for the
  trees exactly equal arrays when a row is dropped; not for DBSCAN, where a row of weight 0 is
  still a point that its neighbours' weight can make core, as in scikit-learn);
* `sample_weight` of ones equals no weights, and bad weights raise a `ValueError` naming the
  problem.

Trees are compared depth-limited (or with `min_samples_leaf`): deep in a fully grown tree, small
nodes are often split equally well by several features, and with real-valued weights which one
wins depends on the order of the floating-point sums, not on the method.
"""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.cluster as skc
import sklearn.ensemble as ske
import sklearn.linear_model as sk
import sklearn.metrics as skm
import sklearn.naive_bayes as sknb
import sklearn.svm as sks
import sklearn.tree as skt
from hypothesis import given, settings
from hypothesis import strategies as st

from fms_ml import cluster, ensemble, metrics, svm, tree
from fms_ml import linear_model as fm
from fms_ml import naive_bayes as nb


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a) - b)) / max(1e-12, np.max(np.abs(b))))


def _weights(n: int, seed: int = 0, n_zero: int = 10) -> np.ndarray:
    w = np.random.default_rng(seed).uniform(0.1, 3.0, n)
    w[:n_zero] = 0.0
    return w


def _standardise(X: np.ndarray) -> np.ndarray:
    return (X - X.mean(0)) / X.std(0)


# ------------------------------------------------------------------------------------------------
# Linear models
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_weighted_least_squares_and_ridge_match_sklearn_to_1e8(diabetes, fit_intercept) -> None:  # type: ignore[no-untyped-def]
    X, y = diabetes
    w = _weights(len(y))
    ours = fm.LinearRegression(fit_intercept=fit_intercept).fit(X, y, sample_weight=w)
    ref = sk.LinearRegression(fit_intercept=fit_intercept).fit(X, y, sample_weight=w)
    assert _rel(ours.coef_, ref.coef_) < 1e-8
    assert ours.intercept_ == pytest.approx(ref.intercept_, rel=1e-8, abs=1e-8)
    assert ours.score(X, y, sample_weight=w) == pytest.approx(
        ref.score(X, y, sample_weight=w), rel=1e-10
    )
    for alpha in (1e-3, 1.0, 100.0):
        ours_r = fm.Ridge(alpha, fit_intercept=fit_intercept).fit(X, y, sample_weight=w)
        ref_r = sk.Ridge(alpha=alpha, fit_intercept=fit_intercept).fit(X, y, sample_weight=w)
        assert _rel(ours_r.coef_, ref_r.coef_) < 1e-8
        assert ours_r.intercept_ == pytest.approx(ref_r.intercept_, rel=1e-8, abs=1e-8)


def test_weighted_ridge_wide_design_and_two_targets_match_sklearn_to_1e8(rng) -> None:  # type: ignore[no-untyped-def]
    X, Y = rng.normal(size=(20, 50)), rng.normal(size=(20, 2))
    w = _weights(20, n_zero=3)
    for solver in ("auto", "svd"):
        ours = fm.Ridge(0.5, solver=solver).fit(X, Y, sample_weight=w)
        ref = sk.Ridge(alpha=0.5).fit(X, Y, sample_weight=w)
        assert _rel(ours.coef_, ref.coef_) < 1e-8
        np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-8)


@pytest.mark.parametrize("solver", ["lbfgs", "newton"])
def test_weighted_binary_logistic_matches_sklearn_to_1e5(breast_cancer, solver) -> None:  # type: ignore[no-untyped-def]
    X, y = breast_cancer
    X, w = _standardise(X), _weights(len(y))
    ours = fm.LogisticRegression(C=0.5, tol=1e-10, max_iter=1000, solver=solver)
    ours.fit(X, y, sample_weight=w)
    ref = sk.LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(X, y, sample_weight=w)
    assert _rel(ours.coef_, ref.coef_) < 1e-5
    assert ours.intercept_[0] == pytest.approx(ref.intercept_[0], rel=1e-5)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-6)


@pytest.mark.parametrize("name", ["iris", "wine"])
def test_weighted_multinomial_logistic_matches_sklearn_to_1e5(name, request) -> None:  # type: ignore[no-untyped-def]
    X, y = request.getfixturevalue(name)
    X, w = _standardise(X), _weights(len(y))
    ours = fm.LogisticRegression(tol=1e-10, max_iter=5000).fit(X, y, sample_weight=w)
    ref = sk.LogisticRegression(tol=1e-10, max_iter=10_000).fit(X, y, sample_weight=w)
    assert _rel(ours.coef_, ref.coef_) < 1e-5
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-6)


def _repeat_and_drop_cases(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    X = rng.normal(size=(120, 4))
    y = X @ [1.0, -2.0, 0.5, 0.0] + rng.normal(size=120)
    counts = rng.integers(0, 4, 120)  # some rows weigh 0
    return X, y, counts


@pytest.mark.parametrize(
    "make",
    [
        lambda: fm.LinearRegression(),
        lambda: fm.Ridge(3.0),
        lambda: fm.Ridge(3.0, fit_intercept=False),
        lambda: fm.LogisticRegression(C=0.3, tol=1e-10, max_iter=1000),
        lambda: fm.LogisticRegression(C=0.3, tol=1e-10, max_iter=1000, solver="newton"),
    ],
)
def test_linear_integer_weights_equal_repeated_rows_and_zero_equals_dropped(make, rng) -> None:  # type: ignore[no-untyped-def]
    X, y, counts = _repeat_and_drop_cases(rng)
    if isinstance(make(), fm.LogisticRegression):
        y = np.digitize(y, [-1.0, 1.0]) if make().solver == "lbfgs" else (y > 0).astype(int)
    weighted = make().fit(X, y, sample_weight=counts)
    repeated = make().fit(np.repeat(X, counts, axis=0), np.repeat(y, counts))
    assert _rel(weighted.coef_, repeated.coef_) < 1e-6
    np.testing.assert_allclose(weighted.intercept_, repeated.intercept_, rtol=1e-6, atol=1e-9)
    keep = counts > 0
    w = np.where(keep, 1.0 + rng.random(120), 0.0)
    zero = make().fit(X, y, sample_weight=w)
    dropped = make().fit(X[keep], y[keep], sample_weight=w[keep])
    assert _rel(zero.coef_, dropped.coef_) < 1e-6
    ones = make().fit(X, y, sample_weight=np.ones(120))
    assert _rel(ones.coef_, make().fit(X, y).coef_) < 1e-12


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize(("alpha", "l1_ratio"), [(0.01, 1.0), (0.1, 0.5), (0.001, 0.2)])
@pytest.mark.parametrize("tol", [1e-4, 1e-12])
def test_weighted_lasso_and_elastic_net_match_sklearn_to_1e8(  # type: ignore[no-untyped-def]
    diabetes, alpha, l1_ratio, tol, fit_intercept
) -> None:
    """Same objective (weights rescaled to sum to n), same stopping rule: same sweeps and zeros."""
    X, y = diabetes
    w = _weights(len(y))
    kw = {"alpha": alpha, "fit_intercept": fit_intercept, "tol": tol, "max_iter": 10_000}
    if l1_ratio == 1.0:
        ours: fm.ElasticNet = fm.Lasso(**kw).fit(X, y, sample_weight=w)
        ref = sk.Lasso(**kw).fit(X, y, sample_weight=w)
    else:
        ours = fm.ElasticNet(l1_ratio=l1_ratio, **kw).fit(X, y, sample_weight=w)
        ref = sk.ElasticNet(l1_ratio=l1_ratio, **kw).fit(X, y, sample_weight=w)
    assert _rel(ours.coef_, ref.coef_) < 1e-8
    np.testing.assert_array_equal(ours.coef_ == 0, ref.coef_ == 0)
    assert ours.intercept_ == pytest.approx(ref.intercept_, rel=1e-8, abs=1e-8)
    assert ours.n_iter_ == ref.n_iter_


@pytest.mark.parametrize(
    "make",
    [
        lambda: fm.Lasso(0.05, tol=1e-12, max_iter=10_000),
        lambda: fm.ElasticNet(0.05, l1_ratio=0.3, tol=1e-12, max_iter=10_000),
        lambda: fm.ElasticNet(0.05, l1_ratio=0.3, fit_intercept=False, tol=1e-12),
    ],
)
def test_enet_integer_weights_equal_repeated_rows_and_zero_equals_dropped(make, rng) -> None:  # type: ignore[no-untyped-def]
    """The data term is a weighted mean, so the scale of the weights does not matter either."""
    X, y, counts = _repeat_and_drop_cases(rng)
    weighted = make().fit(X, y, sample_weight=counts)
    repeated = make().fit(np.repeat(X, counts, axis=0), np.repeat(y, counts))
    assert _rel(weighted.coef_, repeated.coef_) < 1e-8
    assert weighted.intercept_ == pytest.approx(repeated.intercept_, rel=1e-8, abs=1e-10)
    keep = counts > 0
    w = np.where(keep, 1.0 + rng.random(120), 0.0)
    zero = make().fit(X, y, sample_weight=w)
    dropped = make().fit(X[keep], y[keep], sample_weight=w[keep])
    assert _rel(zero.coef_, dropped.coef_) < 1e-8
    assert _rel(make().fit(X, y, sample_weight=7.5 * w).coef_, zero.coef_) < 1e-8
    ones = make().fit(X, y, sample_weight=np.ones(120))
    assert _rel(ones.coef_, make().fit(X, y).coef_) < 1e-12


# ------------------------------------------------------------------------------------------------
# Naive Bayes
# ------------------------------------------------------------------------------------------------
def test_weighted_naive_bayes_matches_sklearn_to_1e10(iris) -> None:  # type: ignore[no-untyped-def]
    """Weighted class counts, means, variances and feature counts; probabilities to 1e-10."""
    X, y = iris
    w = _weights(len(y))
    ours = nb.GaussianNB().fit(X, y, sample_weight=w)
    ref = sknb.GaussianNB().fit(X, y, sample_weight=w)
    for name in ("class_count_", "class_prior_", "theta_", "var_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-10)
    counts = np.random.default_rng(1).integers(0, 5, (len(y), 6))
    for kw in ({"alpha": 0.5}, {"alpha": 1.0, "fit_prior": False}):
        ours_m = nb.MultinomialNB(**kw).fit(counts, y, sample_weight=w)
        ref_m = sknb.MultinomialNB(**kw).fit(counts, y, sample_weight=w)
        for name in ("class_count_", "feature_count_", "feature_log_prob_", "class_log_prior_"):
            np.testing.assert_allclose(getattr(ours_m, name), getattr(ref_m, name), rtol=1e-10)
        np.testing.assert_allclose(
            ours_m.predict_proba(counts), ref_m.predict_proba(counts), atol=1e-10
        )


@pytest.mark.parametrize(
    "make",
    [
        lambda: nb.GaussianNB(var_smoothing=0.0),  # the smoothing uses the unweighted variance
        lambda: nb.MultinomialNB(alpha=0.5),
    ],
)
def test_naive_bayes_integer_weights_equal_repeated_rows_and_zero_equals_dropped(make, rng) -> None:  # type: ignore[no-untyped-def]
    X = rng.integers(0, 6, (90, 4)).astype(float)  # counts for MultinomialNB
    if isinstance(make(), nb.GaussianNB):
        X += rng.random((90, 4))
    y = rng.integers(0, 3, 90)
    counts = rng.integers(0, 4, 90)
    counts[:3], y[:3] = 1, [0, 1, 2]
    weighted = make().fit(X, y, sample_weight=counts)
    repeated = make().fit(np.repeat(X, counts, axis=0), np.repeat(y, counts))
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X), rtol=1e-10)
    np.testing.assert_array_equal(weighted.class_count_, repeated.class_count_)
    keep = counts > 0
    w = np.where(keep, 1.0 + rng.random(90), 0.0)
    zero, dropped = make().fit(X, y, sample_weight=w), make().fit(X[keep], y[keep], w[keep])
    np.testing.assert_allclose(zero.predict_proba(X), dropped.predict_proba(X), rtol=1e-10)
    ones = make().fit(X, y, sample_weight=np.ones(90))
    np.testing.assert_allclose(ones.predict_proba(X), make().fit(X, y).predict_proba(X), rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# Trees
# ------------------------------------------------------------------------------------------------
def _same_tree(ours: tree.Tree, ref: object) -> None:
    """Same nodes up to their numbering (ours is breadth-first, scikit-learn's depth-first)."""
    r = ref.tree_  # type: ignore[attr-defined]
    assert ours.node_count == r.node_count
    np.testing.assert_allclose(np.sort(ours.threshold), np.sort(r.threshold), rtol=1e-12)
    np.testing.assert_array_equal(np.sort(ours.n_node_samples), np.sort(r.n_node_samples))
    np.testing.assert_allclose(
        np.sort(ours.weighted_n_node_samples), np.sort(r.weighted_n_node_samples), rtol=1e-10
    )
    # a pure regression node has impurity 0 up to cancellation in E[y^2] - E[y]^2 (~1e-10 here)
    atol = 1e-12 * max(1.0, float(np.max(r.weighted_n_node_samples)), float(np.max(r.impurity)))
    np.testing.assert_allclose(np.sort(ours.impurity), np.sort(r.impurity), rtol=1e-8, atol=atol)


@pytest.mark.parametrize("criterion", ["gini", "entropy"])
@pytest.mark.parametrize("kw", [{"max_depth": 4}, {"min_samples_leaf": 15}])
def test_weighted_tree_classifier_equals_sklearn(criterion, kw) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 5))
    y = (X[:, 0] + X[:, 1] ** 2 + 0.3 * rng.normal(size=400) > 1).astype(int) + (X[:, 2] > 1)
    w = _weights(400, seed=1, n_zero=30)
    ours = tree.DecisionTreeClassifier(criterion=criterion, **kw).fit(X, y, sample_weight=w)
    ref = skt.DecisionTreeClassifier(criterion=criterion, random_state=0, **kw)
    ref.fit(X, y, sample_weight=w)
    _same_tree(ours.tree_, ref)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-10)
    np.testing.assert_allclose(ours.feature_importances_, ref.feature_importances_, rtol=1e-10)
    assert ours.score(X, y, sample_weight=w) == ref.score(X, y, sample_weight=w)


@pytest.mark.parametrize(
    "kw",
    [
        {"max_depth": 2},
        {"max_depth": 4},
        {"min_samples_leaf": 10},
        {"min_samples_split": 40, "max_depth": 5},
        {"min_impurity_decrease": 50.0},
    ],
)
def test_weighted_regression_tree_equals_sklearn_to_1e10_on_diabetes(diabetes, kw) -> None:  # type: ignore[no-untyped-def]
    X, y = diabetes
    w = _weights(len(y))
    ours = tree.DecisionTreeRegressor(**kw).fit(X, y, sample_weight=w)
    ref = skt.DecisionTreeRegressor(random_state=0, **kw).fit(X, y, sample_weight=w)
    _same_tree(ours.tree_, ref)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-10)


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.2, 0.5])
@pytest.mark.parametrize("weighted", [False, True])
def test_min_weight_fraction_leaf_equals_sklearn(diabetes, fraction, weighted) -> None:  # type: ignore[no-untyped-def]
    """Regression on diabetes: the same tree, predictions to 1e-10. Classification: the same
    probabilities to 1e-10 (scikit-learn may also split a node that is pure up to rounding,
    impurity ~4e-16 above its epsilon, into two pure children: more nodes, same predictions)."""
    X, y = diabetes
    w = _weights(len(y)) if weighted else None
    kw = {"min_weight_fraction_leaf": fraction}
    ours = tree.DecisionTreeRegressor(**kw).fit(X, y, sample_weight=w)
    ref = skt.DecisionTreeRegressor(random_state=0, **kw).fit(X, y, sample_weight=w)
    _same_tree(ours.tree_, ref)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-10)
    rng = np.random.default_rng(1)
    Xc = rng.normal(size=(400, 5))
    yc = (Xc[:, 0] + Xc[:, 1] ** 2 > 1).astype(int)
    wc = rng.uniform(0.0, 2.0, 400) if weighted else None
    ours_c = tree.DecisionTreeClassifier(**kw).fit(Xc, yc, sample_weight=wc)
    ref_c = skt.DecisionTreeClassifier(random_state=0, **kw).fit(Xc, yc, sample_weight=wc)
    np.testing.assert_allclose(ours_c.predict_proba(Xc), ref_c.predict_proba(Xc), atol=1e-10)
    with pytest.raises(ValueError, match="min_weight_fraction_leaf"):
        tree.DecisionTreeRegressor(min_weight_fraction_leaf=0.6).fit(X, y)


@pytest.mark.parametrize("regression", [False, True])
def test_tree_integer_weights_equal_repeated_rows_and_zero_equals_dropped(regression) -> None:  # type: ignore[no-untyped-def]
    """Depth 5: the same nodes as on copied rows; a zero-weight row leaves no trace at all.

    "The same nodes": the same partition of the training rows (equal predictions on them) and
    the same multiset of node sizes and impurities. Which feature separates two rows when
    several do equally well can differ (the tie is broken by rounding in the sums), so points
    outside the training set may land differently.
    """
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    if regression:
        y = X[:, 0] + np.sin(3 * X[:, 1]) + 0.1 * rng.normal(size=200)
        make = lambda: tree.DecisionTreeRegressor(max_depth=5)  # noqa: E731
    else:
        y = (X[:, 0] + X[:, 1] + rng.normal(size=200) > 0).astype(int) + (X[:, 2] > 1)
        make = lambda: tree.DecisionTreeClassifier(max_depth=5)  # noqa: E731
    counts = rng.integers(0, 4, 200)
    weighted = make().fit(X, y, sample_weight=counts)
    repeated = make().fit(np.repeat(X, counts, axis=0), np.repeat(y, counts))
    tw, tr = weighted.tree_, repeated.tree_
    assert tw.node_count == tr.node_count
    np.testing.assert_array_equal(np.sort(tw.weighted_n_node_samples), np.sort(tr.n_node_samples))
    np.testing.assert_allclose(np.sort(tw.impurity), np.sort(tr.impurity), rtol=1e-9, atol=1e-12)
    Xt = X[counts > 0]
    f = (lambda m: m.predict(Xt)) if regression else (lambda m: m.predict_proba(Xt))
    np.testing.assert_allclose(f(weighted), f(repeated), rtol=1e-12, atol=1e-12)
    keep = counts > 0
    w = np.where(keep, 1.0 + rng.random(200), 0.0)
    zero, dropped = make().fit(X, y, sample_weight=w), make().fit(X[keep], y[keep], w[keep])
    for name in ("threshold", "feature", "value", "n_node_samples", "weighted_n_node_samples"):
        np.testing.assert_array_equal(getattr(zero.tree_, name), getattr(dropped.tree_, name))


def test_tree_sample_weight_of_ones_equals_no_weights(diabetes) -> None:  # type: ignore[no-untyped-def]
    X, y = diabetes
    a = tree.DecisionTreeRegressor(max_depth=6).fit(X, y)
    b = tree.DecisionTreeRegressor(max_depth=6).fit(X, y, sample_weight=np.ones(len(y)))
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    np.testing.assert_array_equal(a.tree_.weighted_n_node_samples, a.tree_.n_node_samples)


# ------------------------------------------------------------------------------------------------
# Gradient boosting
# ------------------------------------------------------------------------------------------------
GB_TIE_FREE = [{"max_depth": 2}, {"max_depth": 3, "min_samples_leaf": 10}]


@pytest.mark.parametrize("kw", GB_TIE_FREE)
def test_weighted_gradient_boosting_regressor_equals_sklearn_to_1e8(diabetes, kw) -> None:  # type: ignore[no-untyped-def]
    """Weighted mean as $F_0$, trees on weighted residuals: predictions and train scores."""
    X, y = diabetes
    w = _weights(len(y))
    ours = ensemble.GradientBoostingRegressor(n_estimators=50, **kw).fit(X, y, sample_weight=w)
    ref = ske.GradientBoostingRegressor(n_estimators=50, random_state=0, **kw)
    ref.fit(X, y, sample_weight=w)
    assert ours.init_ == pytest.approx(float(ref.init_.constant_[0, 0]), rel=1e-12)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=1e-8)
    np.testing.assert_allclose(ours.train_score_, ref.train_score_, rtol=1e-8)


@pytest.mark.parametrize("name", ["breast_cancer", "iris"])
@pytest.mark.parametrize("kw", GB_TIE_FREE)
def test_weighted_gradient_boosting_classifier_equals_sklearn_to_1e8(name, kw, request) -> None:  # type: ignore[no-untyped-def]
    """Weighted priors, trees on weighted residuals, leaves $\\sum s r / \\sum s p(1-p)$."""
    X, y = request.getfixturevalue(name)
    w = _weights(len(y))
    ours = ensemble.GradientBoostingClassifier(n_estimators=30, **kw)
    ours.fit(X, y, sample_weight=w)
    ref = ske.GradientBoostingClassifier(n_estimators=30, random_state=0, **kw)
    ref.fit(X, y, sample_weight=w)
    np.testing.assert_allclose(ours.decision_function(X), ref.decision_function(X), atol=1e-8)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-8)


def test_weighted_gradient_boosting_deep_trees_equal_sklearn_on_weighted_rows(
    breast_cancer,
) -> None:  # type: ignore[no-untyped-def]
    """Depth 3 without a leaf size: a node of a few rows can be split into the same two groups
    by several features with exactly equal gain, and the winner depends on rounding. The rows
    that carry weight land in the same leaves either way (so the fit is the same, to 1e-8); a
    row of weight 0 is in no tree and may be routed to the other side."""
    X, y = breast_cancer
    w = _weights(len(y))
    ours = ensemble.GradientBoostingClassifier(n_estimators=30).fit(X, y, sample_weight=w)
    ref = ske.GradientBoostingClassifier(n_estimators=30, random_state=0)
    ref.fit(X, y, sample_weight=w)
    Xw = X[w > 0]
    np.testing.assert_allclose(ours.decision_function(Xw), ref.decision_function(Xw), atol=1e-8)


@pytest.mark.parametrize("regression", [False, True])
def test_gradient_boosting_integer_weights_equal_repeated_rows_and_zero_equals_dropped(  # type: ignore[no-untyped-def]
    regression, rng
) -> None:
    """On the rows that carry weight (see the test above for why only those), to 1e-10."""
    X = rng.normal(size=(150, 4))
    y = X[:, 0] + np.sin(2 * X[:, 1]) + 0.2 * rng.normal(size=150)
    if regression:
        make = lambda: ensemble.GradientBoostingRegressor(n_estimators=20, max_depth=2)  # noqa: E731
        f = lambda m, Z: m.predict(Z)  # noqa: E731
    else:
        y = np.digitize(y, [-0.5, 0.5])
        make = lambda: ensemble.GradientBoostingClassifier(n_estimators=10, max_depth=2)  # noqa: E731
        f = lambda m, Z: m.decision_function(Z)  # noqa: E731
    counts = rng.integers(0, 4, 150)
    keep = counts > 0
    weighted = make().fit(X, y, sample_weight=counts)
    repeated = make().fit(np.repeat(X, counts, axis=0), np.repeat(y, counts))
    np.testing.assert_allclose(f(weighted, X[keep]), f(repeated, X[keep]), rtol=1e-10, atol=1e-10)
    w = np.where(keep, 1.0 + rng.random(150), 0.0)
    zero, dropped = make().fit(X, y, sample_weight=w), make().fit(X[keep], y[keep], w[keep])
    np.testing.assert_allclose(f(zero, X[keep]), f(dropped, X[keep]), rtol=1e-10, atol=1e-10)
    ones = make().fit(X, y, sample_weight=np.ones(150))
    np.testing.assert_allclose(f(ones, X), f(make().fit(X, y), X), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Support vector machines
# ------------------------------------------------------------------------------------------------
CLASS_WEIGHTS = [None, "balanced", {0: 2.0, 1: 0.5}]


@pytest.mark.parametrize("name", ["breast_cancer", "iris", "wine"])
@pytest.mark.parametrize("class_weight", CLASS_WEIGHTS)
def test_weighted_linear_svc_matches_sklearn_to_1e4(name, class_weight, request) -> None:  # type: ignore[no-untyped-def]
    """liblinear's per-sample $C_i = C s_i c_{y_i}$ (one-vs-rest: $c_k$ on the positives only)."""
    X, y = request.getfixturevalue(name)
    X, w = _standardise(X), _weights(len(y))
    ours = svm.LinearSVC(C=0.1, tol=1e-10, class_weight=class_weight).fit(X, y, sample_weight=w)
    ref = sks.LinearSVC(C=0.1, tol=1e-10, max_iter=100_000, class_weight=class_weight)
    ref.fit(X, y, sample_weight=w)
    scale = np.abs(ref.coef_).max()
    assert np.abs(ours.coef_ - ref.coef_).max() / scale < 1e-4
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=1e-4 * scale)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


@pytest.mark.parametrize("kernel", ["linear", "rbf", "poly"])
@pytest.mark.parametrize("class_weight", CLASS_WEIGHTS)
def test_weighted_binary_svc_matches_sklearn_decision_to_1e3(
    breast_cancer, kernel, class_weight
) -> None:  # type: ignore[no-untyped-def]
    """libsvm's boxes $0 \\le \\alpha_i \\le C s_i c_{y_i}$, rows of weight 0 removed first.

    The same support vectors; scikit-learn's `support_` indexes the rows left after that removal,
    ours the rows of `X`.
    """
    X, y = breast_cancer
    X, y = _standardise(X)[::2], y[::2]
    w = _weights(len(y))
    ours = svm.SVC(kernel=kernel, tol=1e-6, class_weight=class_weight).fit(X, y, sample_weight=w)
    ref = sks.SVC(kernel=kernel, tol=1e-6, class_weight=class_weight).fit(X, y, sample_weight=w)
    np.testing.assert_array_equal(ours.support_, np.flatnonzero(w > 0)[ref.support_])
    np.testing.assert_array_equal(ours.support_vectors_, ref.support_vectors_)
    np.testing.assert_allclose(ours.decision_function(X), ref.decision_function(X), atol=1e-3)
    np.testing.assert_allclose(ours.dual_coef_, ref.dual_coef_, atol=1e-3)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=1e-3)


@pytest.mark.parametrize("class_weight", CLASS_WEIGHTS)
def test_weighted_multiclass_svc_matches_sklearn_to_1e3(wine, class_weight) -> None:  # type: ignore[no-untyped-def]
    X, y = wine
    X, w = _standardise(X), _weights(len(y))
    for shape in ("ovo", "ovr"):
        ours = svm.SVC(C=2.0, tol=1e-6, class_weight=class_weight, decision_function_shape=shape)  # type: ignore[arg-type]
        ref = sks.SVC(C=2.0, tol=1e-6, class_weight=class_weight, decision_function_shape=shape)
        ours.fit(X, y, sample_weight=w)
        ref.fit(X, y, sample_weight=w)
        np.testing.assert_allclose(ours.decision_function(X), ref.decision_function(X), atol=1e-3)
        np.testing.assert_array_equal(ours.n_support_, ref.n_support_)
        np.testing.assert_array_equal(ours.support_vectors_, ref.support_vectors_)


def test_svm_integer_weights_equal_repeated_rows_and_zero_equals_dropped(rng) -> None:  # type: ignore[no-untyped-def]
    """LinearSVC: the same primal objective, coefficients to 1e-6. SVC: $k$ copies of a row share
    a box of $kC$, the same dual up to how $\\alpha$ is split between copies, so the decision
    values agree to 1e-4 at `tol=1e-6` (measured 1e-6); a zero weight is a dropped row exactly."""
    X = rng.normal(size=(120, 4))
    y = np.digitize(X[:, 0] + X[:, 1] ** 2 + 0.5 * rng.normal(size=120), [0.5, 2.0])
    counts = rng.integers(0, 4, 120)
    keep = counts > 0
    rep = lambda v: np.repeat(v, counts, axis=0)  # noqa: E731
    lin = lambda: svm.LinearSVC(C=0.5, tol=1e-10)  # noqa: E731
    a, b = lin().fit(X, y, sample_weight=counts), lin().fit(rep(X), rep(y))
    assert _rel(a.coef_, b.coef_) < 1e-6
    np.testing.assert_allclose(a.intercept_, b.intercept_, atol=1e-6 * np.abs(b.coef_).max())
    # a fixed gamma: "scale" reads the variance of X, which repeating rows changes
    svc = lambda: svm.SVC(C=0.5, gamma=0.5, tol=1e-6, decision_function_shape="ovo")  # noqa: E731
    a_s, b_s = svc().fit(X, y, sample_weight=counts), svc().fit(rep(X), rep(y))
    np.testing.assert_allclose(a_s.decision_function(X), b_s.decision_function(X), atol=1e-4)
    w = np.where(keep, 0.5 + rng.random(120), 0.0)
    z, d = lin().fit(X, y, sample_weight=w), lin().fit(X[keep], y[keep], sample_weight=w[keep])
    assert _rel(z.coef_, d.coef_) < 1e-8
    z_s, d_s = svc().fit(X, y, sample_weight=w), svc().fit(X[keep], y[keep], sample_weight=w[keep])
    np.testing.assert_array_equal(z_s.decision_function(X), d_s.decision_function(X))
    np.testing.assert_array_equal(z_s.support_, np.flatnonzero(keep)[d_s.support_])
    ones = svc().fit(X, y, sample_weight=np.ones(120))
    np.testing.assert_array_equal(ones.decision_function(X), svc().fit(X, y).decision_function(X))


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------
SETTINGS = settings(max_examples=25, deadline=None)


@SETTINGS
@given(st.integers(2, 60), st.integers(2, 4), st.integers(0, 2**31 - 1))
def test_weighted_metrics_equal_sklearn_to_1e12(n: int, k: int, seed: int) -> None:
    r = np.random.default_rng(seed)
    w = r.uniform(0, 2, n)
    w[r.random(n) < 0.2] = 0.0
    w[0] = 1.0  # not all zero
    yt, yp = r.integers(0, k, n), r.integers(0, k, n)
    assert metrics.accuracy_score(yt, yp, sample_weight=w) == pytest.approx(
        skm.accuracy_score(yt, yp, sample_weight=w), rel=1e-12
    )
    assert metrics.accuracy_score(yt, yp, normalize=False, sample_weight=w) == pytest.approx(
        skm.accuracy_score(yt, yp, normalize=False, sample_weight=w), rel=1e-12
    )
    P = r.dirichlet(np.ones(k), n)
    assert metrics.log_loss(yt, P, labels=np.arange(k), sample_weight=w) == pytest.approx(
        skm.log_loss(yt, P, labels=np.arange(k), sample_weight=w), rel=1e-12
    )
    a, b = r.normal(size=n) * 10, r.normal(size=n) * 10
    for name in ("mean_squared_error", "mean_absolute_error", "r2_score"):
        ours = getattr(metrics, name)(a, b, sample_weight=w)
        assert ours == pytest.approx(getattr(skm, name)(a, b, sample_weight=w), rel=1e-12), name


def test_weighted_metrics_integer_weights_equal_repeats_and_zero_equals_dropped(rng) -> None:  # type: ignore[no-untyped-def]
    n = 40
    counts = rng.integers(0, 4, n)
    counts[:2] = [1, 2]
    yt, yp = rng.integers(0, 3, n), rng.integers(0, 3, n)
    P = rng.dirichlet(np.ones(3), n)
    a, b = rng.normal(size=n), rng.normal(size=n)
    rep = lambda v: np.repeat(v, counts, axis=0)  # noqa: E731
    keep = counts > 0
    cases = [
        (metrics.accuracy_score, yt, yp),
        (metrics.log_loss, yt, P),
        (metrics.mean_squared_error, a, b),
        (metrics.mean_absolute_error, a, b),
        (metrics.r2_score, a, b),
    ]
    for f, u, v in cases:
        assert f(u, v, sample_weight=counts) == pytest.approx(f(rep(u), rep(v)), rel=1e-12)
        w = np.where(keep, counts * 0.7, 0.0)
        assert f(u, v, sample_weight=w) == pytest.approx(
            f(u[keep], v[keep], sample_weight=w[keep]), rel=1e-12
        )
        assert f(u, v, sample_weight=np.ones(n)) == pytest.approx(f(u, v), rel=1e-14)


CLASSIFICATION_AVERAGES = [None, "micro", "macro", "weighted"]


@settings(max_examples=15, deadline=None)
@given(st.integers(4, 60), st.integers(2, 4), st.integers(0, 2**31 - 1))
def test_weighted_classification_metrics_equal_sklearn_to_1e12(n: int, k: int, seed: int) -> None:
    """Confusion matrix, P/R/F (every average, the four wrappers), ROC curve and AUC."""
    r = np.random.default_rng(seed)
    w = r.uniform(0, 2, n)
    w[r.random(n) < 0.2] = 0.0
    w[0] = 1.0  # not all zero
    yt, yp = r.integers(0, k, n), r.integers(0, k, n)
    np.testing.assert_allclose(
        metrics.confusion_matrix(yt, yp, sample_weight=w),
        skm.confusion_matrix(yt, yp, sample_weight=w),
        rtol=1e-12,
    )
    for avg in CLASSIFICATION_AVERAGES + (["binary"] if k == 2 else []):
        ours = metrics.precision_recall_fscore_support(
            yt, yp, beta=0.5, average=avg, sample_weight=w
        )
        ref = skm.precision_recall_fscore_support(
            yt, yp, beta=0.5, average=avg, sample_weight=w, zero_division=0.0
        )
        for a, b in zip(ours, ref, strict=True):
            if b is None:
                assert a is None
            else:
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
        for name in ("precision_score", "recall_score", "f1_score"):
            np.testing.assert_allclose(
                getattr(metrics, name)(yt, yp, average=avg, sample_weight=w),
                getattr(skm, name)(yt, yp, average=avg, sample_weight=w, zero_division=0.0),
                rtol=1e-12,
                atol=1e-15,
            )
        np.testing.assert_allclose(
            metrics.fbeta_score(yt, yp, beta=2.0, average=avg, sample_weight=w),
            skm.fbeta_score(yt, yp, beta=2.0, average=avg, sample_weight=w, zero_division=0.0),
            rtol=1e-12,
            atol=1e-15,
        )
    # scores with ties, so that thresholds shared by several samples are summed
    s = r.integers(0, max(2, n // 3), n) / 7.0
    yb = r.integers(0, 2, n)
    yb[:2] = [0, 1]
    w[:2] = [1.0, 1.0]  # both classes carry weight
    fpr, tpr, thr = metrics.roc_curve(yb, s, sample_weight=w)
    rfpr, rtpr, rthr = skm.roc_curve(yb, s, sample_weight=w, drop_intermediate=False)
    np.testing.assert_array_equal(thr, rthr)
    np.testing.assert_allclose(fpr, rfpr, rtol=1e-12)
    np.testing.assert_allclose(tpr, rtpr, rtol=1e-12)
    assert metrics.roc_auc_score(yb, s, sample_weight=w) == pytest.approx(
        skm.roc_auc_score(yb, s, sample_weight=w), rel=1e-12
    )
    if k > 2:
        yt[:k], w[:k] = np.arange(k), 1.0  # every class carries weight
        P = r.dirichlet(np.ones(k), n)
        for avg in ("macro", "weighted"):
            assert metrics.roc_auc_score(yt, P, average=avg, sample_weight=w) == pytest.approx(
                skm.roc_auc_score(yt, P, average=avg, multi_class="ovr", sample_weight=w),
                rel=1e-12,
            )


def test_weighted_confusion_matrix_dtype_and_labels_follow_sklearn(rng) -> None:  # type: ignore[no-untyped-def]
    """Integer weights give int64 counts, float weights float64; `labels` keeps its order."""
    yt, yp = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    counts = rng.integers(0, 4, 50)
    ours = metrics.confusion_matrix(yt, yp, sample_weight=counts)
    ref = skm.confusion_matrix(yt, yp, sample_weight=counts)
    assert ours.dtype == ref.dtype == np.int64
    np.testing.assert_array_equal(ours, ref)
    w = counts * 0.5
    lab = [2, 0]
    ours = metrics.confusion_matrix(yt, yp, labels=lab, sample_weight=w)
    assert ours.dtype == np.float64
    np.testing.assert_array_equal(ours, skm.confusion_matrix(yt, yp, labels=lab, sample_weight=w))
    assert ours.sum() == w[np.isin(yt, lab) & np.isin(yp, lab)].sum()


def test_weighted_classification_metrics_integer_weights_equal_repeats_and_zero_equals_dropped(
    rng,  # type: ignore[no-untyped-def]
) -> None:
    n = 60
    counts = rng.integers(0, 4, n)
    yt, yp = rng.integers(0, 3, n), rng.integers(0, 3, n)
    yt[:3], yp[:3], counts[:3] = [0, 1, 2], [0, 1, 2], [1, 2, 3]  # every label kept
    s = np.round(rng.random(n), 1)  # ties
    yb = (yt == 1).astype(int)
    P = rng.dirichlet(np.ones(3), n)
    rep = lambda v: np.repeat(v, counts, axis=0)  # noqa: E731
    keep = counts > 0
    w = np.where(keep, counts * 0.7, 0.0)
    cases: list[tuple[object, ...]] = [
        (metrics.confusion_matrix, yt, yp, {}),
        (metrics.roc_auc_score, yb, s, {}),
        (metrics.roc_auc_score, yt, P, {"average": "weighted"}),
    ]
    cases += [(metrics.precision_recall_fscore_support, yt, yp, {"average": a}) for a in [None]]
    cases += [(metrics.f1_score, yt, yp, {"average": a}) for a in ("micro", "macro", "weighted")]
    for f, u, v, kw in cases:
        np.testing.assert_allclose(
            np.asarray(f(u, v, sample_weight=counts, **kw), dtype=float),  # type: ignore[operator]
            np.asarray(f(rep(u), rep(v), **kw), dtype=float),  # type: ignore[operator]
            rtol=1e-12,
        )
        np.testing.assert_allclose(
            np.asarray(f(u, v, sample_weight=w, **kw), dtype=float),  # type: ignore[operator]
            np.asarray(f(u[keep], v[keep], sample_weight=w[keep], **kw), dtype=float),  # type: ignore[operator,index]
            rtol=1e-12,
        )
    for a, b in zip(
        metrics.roc_curve(yb, s, sample_weight=counts),
        metrics.roc_curve(rep(yb), rep(s)),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    for a, b in zip(
        metrics.roc_curve(yb, s, sample_weight=np.ones(n)), metrics.roc_curve(yb, s), strict=True
    ):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------------
# Clustering
# ------------------------------------------------------------------------------------------------
def _far_init(X: np.ndarray, k: int) -> np.ndarray:
    """k data rows plus two centres far from the data (they start empty and are relocated)."""
    init = X[np.linspace(0, len(X) - 1, k).astype(int)]
    far = np.zeros((2, X.shape[1]))
    far[0], far[1, 0] = 100.0 * np.abs(X).max(), -50.0 * np.abs(X).max()
    return np.vstack([init, far])


@pytest.mark.parametrize(("name", "k"), [("iris", 3), ("wine", 3), ("digits", 10)])
@pytest.mark.parametrize("far", [False, True])
def test_weighted_kmeans_same_init_equals_sklearn_to_1e10(name, k, far, request) -> None:  # type: ignore[no-untyped-def]
    """Weighted centres, labels, iterations, inertia and score; `far` adds empty clusters."""
    X, _ = request.getfixturevalue(name)
    w = _weights(len(X))
    init = _far_init(X, k) if far else X[np.linspace(0, len(X) - 1, k).astype(int)]
    ours = cluster.KMeans(len(init), init=init).fit(X, sample_weight=w)
    ref = skc.KMeans(len(init), init=init, n_init=1).fit(X, sample_weight=w)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    assert ours.n_iter_ == ref.n_iter_
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)
    assert ours.score(X, sample_weight=w) == pytest.approx(ref.score(X, sample_weight=w), rel=1e-10)
    np.testing.assert_array_equal(
        ours.fit_predict(X, sample_weight=w), ref.fit_predict(X, sample_weight=w)
    )
    np.testing.assert_allclose(
        ours.fit_transform(X, sample_weight=w), ref.fit_transform(X, sample_weight=w), rtol=1e-10
    )


def test_kmeans_integer_weights_equal_repeated_rows_and_zero_equals_dropped(iris) -> None:  # type: ignore[no-untyped-def]
    """From the same initial centres, to 1e-10 (`tol=0`: the tolerance uses the rows' variance)."""
    X, _ = iris
    counts = np.random.default_rng(0).integers(0, 4, len(X))
    init = X[[0, 60, 120, 140]]
    weighted = cluster.KMeans(4, init=init, tol=0.0).fit(X, sample_weight=counts)
    repeated = cluster.KMeans(4, init=init, tol=0.0).fit(np.repeat(X, counts, axis=0))
    np.testing.assert_allclose(weighted.cluster_centers_, repeated.cluster_centers_, atol=1e-10)
    assert weighted.inertia_ == pytest.approx(repeated.inertia_, rel=1e-10)
    keep = counts > 0
    w = np.where(keep, 0.5 + np.random.default_rng(1).random(len(X)), 0.0)
    zero = cluster.KMeans(4, init=init, tol=0.0).fit(X, sample_weight=w)
    dropped = cluster.KMeans(4, init=init, tol=0.0).fit(X[keep], sample_weight=w[keep])
    np.testing.assert_allclose(zero.cluster_centers_, dropped.cluster_centers_, atol=1e-10)
    np.testing.assert_array_equal(zero.labels_[keep], dropped.labels_)
    assert zero.inertia_ == pytest.approx(dropped.inertia_, rel=1e-10)


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_kmeans_seeding_ignores_uniform_weights_and_exact_rescaling(digits, init) -> None:  # type: ignore[no-untyped-def]
    """Ones (or twos) equal no weights bitwise; doubling any weights changes no bit."""
    X, _ = digits
    X = X[:400]
    plain = cluster.KMeans(5, init=init, n_init=2, random_state=3).fit(X)
    for w in (np.ones(400), np.full(400, 2.0)):
        same = cluster.KMeans(5, init=init, n_init=2, random_state=3).fit(X, sample_weight=w)
        np.testing.assert_array_equal(same.cluster_centers_, plain.cluster_centers_)
        np.testing.assert_array_equal(same.labels_, plain.labels_)
    w = _weights(400)
    a = cluster.KMeans(5, init=init, n_init=2, random_state=3).fit(X, sample_weight=w)
    b = cluster.KMeans(5, init=init, n_init=2, random_state=3).fit(X, sample_weight=4.0 * w)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert b.inertia_ == 4.0 * a.inertia_


def test_weighted_kmeans_plusplus_never_seeds_on_zero_weight_rows(digits) -> None:  # type: ignore[no-untyped-def]
    """A zero-weight row has no mass in any draw (scikit-learn's semantics), over 40 seedings."""
    X, _ = digits
    w = _weights(len(X), n_zero=600)
    chosen = np.concatenate(
        [cluster.kmeans_plusplus(X, 10, sample_weight=w, random_state=s)[1] for s in range(40)]
    )
    assert (w[chosen] > 0).all()
    with pytest.raises(ValueError, match="only 2 positive"):
        cluster.KMeans(3, init="random").fit(X[:5], sample_weight=[1.0, 0, 0, 2.0, 0])


def test_weighted_kmeans_plusplus_first_seed_follows_the_weights_like_sklearn() -> None:
    """First seed drawn with probability w_i / sum(w): 1000 draws, within 0.06 (4 s.e.) of it."""
    X = np.arange(4.0).reshape(4, 1)
    w = np.array([1.0, 0.0, 3.0, 0.0])
    ours = [
        cluster.kmeans_plusplus(X, 1, sample_weight=w, random_state=s)[1][0] for s in range(1000)
    ]
    ref = [skc.kmeans_plusplus(X, 1, sample_weight=w, random_state=s)[1][0] for s in range(1000)]
    for draws in (ours, ref):
        freq = np.bincount(draws, minlength=4) / 1000
        np.testing.assert_allclose(freq, w / w.sum(), atol=0.06)


def test_weighted_kmeans_plusplus_inertia_close_to_sklearn(digits) -> None:  # type: ignore[no-untyped-def]
    """Mean weighted inertia over 5 seeds within 2% of scikit-learn's (different random streams)."""
    X, _ = digits
    w = _weights(len(X), n_zero=300)
    ours = np.mean(
        [cluster.KMeans(10, random_state=s).fit(X, sample_weight=w).inertia_ for s in range(5)]
    )
    ref = np.mean(
        [skc.KMeans(10, random_state=s).fit(X, sample_weight=w).inertia_ for s in range(5)]
    )
    assert ours == pytest.approx(ref, rel=0.02)


def _dbscan_weights(kind: str, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    if kind == "real":
        return rng.uniform(0.0, 3.0, n)
    if kind == "integer":
        return rng.integers(0, 4, n).astype(float)
    return np.where(rng.random(n) < 0.3, 0.0, 1.0)


@pytest.mark.parametrize(("eps", "min_samples"), [(0.3, 3), (0.5, 5), (0.8, 10), (0.5, 12)])
@pytest.mark.parametrize("kind", ["real", "integer", "zero_one"])
def test_weighted_dbscan_labels_and_core_samples_equal_sklearn(
    iris, eps, min_samples, kind
) -> None:  # type: ignore[no-untyped-def]
    """Core iff the neighbourhood's summed weight reaches `min_samples`: identical labels, cores."""
    X, _ = iris
    X = _standardise(X)
    w = _dbscan_weights(kind, len(X))
    ours = cluster.DBSCAN(eps, min_samples=min_samples).fit(X, sample_weight=w)
    ref = skc.DBSCAN(eps=eps, min_samples=min_samples).fit(X, sample_weight=w)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    np.testing.assert_array_equal(ours.core_sample_indices_, ref.core_sample_indices_)
    np.testing.assert_array_equal(
        cluster.DBSCAN(eps, min_samples=min_samples).fit_predict(X, sample_weight=w), ref.labels_
    )


def test_dbscan_weights_count_as_copies_and_zero_weight_rows_stay_points(iris) -> None:  # type: ignore[no-untyped-def]
    """Integer weights equal repeated rows exactly; a row of weight 0 is not dropped: it can be core
    through its neighbours' weight (scikit-learn's semantics), and ones equal no weights."""
    X, _ = iris
    X = _standardise(X)
    counts = np.random.default_rng(0).integers(0, 4, len(X))
    keep = counts > 0
    est = cluster.DBSCAN(0.5, min_samples=6)
    weighted = est.fit(X[keep], sample_weight=counts[keep]).labels_
    repeated = est.fit(np.repeat(X, counts, axis=0)).labels_
    np.testing.assert_array_equal(np.repeat(weighted, counts[keep]), repeated)
    w = counts.astype(float)
    core = np.zeros(len(X), dtype=bool)
    core[est.fit(X, sample_weight=w).core_sample_indices_] = True
    assert (core & (w == 0)).any()  # zero-weight rows that are core all the same
    np.testing.assert_array_equal(
        est.fit(X, sample_weight=np.ones(len(X))).labels_, est.fit(X).labels_
    )
    heavy = np.ones(len(X))
    heavy[7] = 6.0  # a row of weight >= min_samples is core by itself
    assert 7 in est.fit(X, sample_weight=heavy).core_sample_indices_


# ------------------------------------------------------------------------------------------------
# Stochastic gradient descent
# ------------------------------------------------------------------------------------------------
def _sgd_problem(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(k)
    X = rng.normal(size=(300, 4))
    y = np.digitize(X @ [1.0, -1.0, 0.5, 0.0] + 0.5 * rng.normal(size=300), [0.0, 1.0][: k - 1])
    return X, y, X @ [1.0, -2.0, 0.5, 0.0] + 0.1 * rng.normal(size=300)


@pytest.mark.parametrize("k", [2, 3])
def test_sgd_weights_of_ones_equal_no_weights_bitwise(k) -> None:  # type: ignore[no-untyped-def]
    """Also a class_weight dict of ones, and class_weight={c: v} equals that sample_weight."""
    X, y, t = _sgd_problem(k)
    plain = fm.SGDClassifier("log_loss", random_state=0).fit(X, y)
    ones = fm.SGDClassifier("log_loss", random_state=0).fit(X, y, sample_weight=np.ones(300))
    cw1 = fm.SGDClassifier("log_loss", class_weight=dict.fromkeys(range(k), 1.0), random_state=0)
    for other in (ones, cw1.fit(X, y)):
        np.testing.assert_array_equal(other.coef_, plain.coef_)
        np.testing.assert_array_equal(other.intercept_, plain.intercept_)
        assert other.n_iter_ == plain.n_iter_
    reg = fm.SGDRegressor(random_state=0).fit(X, t)
    reg1 = fm.SGDRegressor(random_state=0).fit(X, t, sample_weight=np.ones(300))
    np.testing.assert_array_equal(reg1.coef_, reg.coef_)
    if k == 2:  # binary: each class takes its own weight, so a dict is a per-class sample_weight
        by_class = fm.SGDClassifier(class_weight={0: 1.0, 1: 3.0}, random_state=0).fit(X, y)
        by_row = fm.SGDClassifier(random_state=0).fit(
            X, y, sample_weight=np.where(y == 1, 3.0, 1.0)
        )
        np.testing.assert_array_equal(by_class.coef_, by_row.coef_)


@pytest.mark.parametrize("k", [2, 3, 0])
def test_sgd_zero_weight_rows_never_change_the_model(k) -> None:  # type: ignore[no-untyped-def]
    """Rewriting the features and labels of weight-0 rows leaves every bit of the fit unchanged
    (`k=0`: the regressor). They are not dropped rows: like scikit-learn's, each still advances the
    step-size schedule and the shrinkage."""
    X, y, t = _sgd_problem(max(k, 2))
    w = _weights(300, n_zero=60)
    X2, y2, t2 = X.copy(), y.copy(), t.copy()
    X2[:60] = 100.0 * np.random.default_rng(5).normal(size=(60, 4))
    y2[:60] = y[:60][::-1]
    t2[:60] = -1e3
    if k:
        a = fm.SGDClassifier(random_state=0).fit(X, y, sample_weight=w)
        b = fm.SGDClassifier(random_state=0).fit(X2, y2, sample_weight=w)
    else:
        a = fm.SGDRegressor(random_state=0).fit(X, t, sample_weight=w)
        b = fm.SGDRegressor(random_state=0).fit(X2, t2, sample_weight=w)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.intercept_, b.intercept_)
    assert a.n_iter_ == b.n_iter_
    unweighted = fm.SGDClassifier(random_state=0).fit(X2, y2) if k else None
    if unweighted is not None:  # the rewritten rows do matter without the weights
        assert not np.array_equal(unweighted.coef_, b.coef_)


def test_weighted_sgd_regressor_lands_on_the_weighted_least_squares_fit() -> None:
    """Two populations with different slopes, one down-weighted 10x: over 3 seeds, SGD's
    coefficients are within 0.05 of the weighted least-squares ones (scikit-learn's, per-sample,
    within 0.15), which lie more than 1 from the unweighted ones."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    first = np.arange(400) < 200
    y = np.where(first, X @ [2.0, -1.0, 0.5], X @ [-1.0, 1.0, 2.0]) + 0.1 * rng.normal(size=400)
    w = np.where(first, 1.0, 0.1)
    target = fm.LinearRegression().fit(X, y, sample_weight=w).coef_
    assert np.abs(target - fm.LinearRegression().fit(X, y).coef_).max() > 1.0
    for seed in range(3):
        ours = fm.SGDRegressor(random_state=seed).fit(X, y, sample_weight=w)
        ref = sk.SGDRegressor(random_state=seed).fit(X, y, sample_weight=w)
        assert np.abs(ours.coef_ - target).max() < 0.05
        assert np.abs(ref.coef_ - target).max() < 0.15


# ------------------------------------------------------------------------------------------------
# Bad weights
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("w", "match"),
    [
        (np.ones((6, 1)), "1-d"),
        (np.ones(5), "5 entries; expected 6"),
        (np.array([1.0, np.nan, 1, 1, 1, 1]), "non-finite"),
        (np.array([1.0, np.inf, 1, 1, 1, 1]), "non-finite"),
        (np.array([1.0, -1.0, 1, 1, 1, 1]), "negative"),
        (np.zeros(6), "all zero"),
    ],
)
def test_bad_sample_weight_raises_naming_the_problem(w, match) -> None:  # type: ignore[no-untyped-def]
    X = np.arange(12.0).reshape(6, 2)
    y = np.array([0, 1, 0, 1, 0, 1])
    estimators = [
        fm.LinearRegression(),
        fm.Ridge(),
        fm.LogisticRegression(),
        tree.DecisionTreeClassifier(),
        tree.DecisionTreeRegressor(),
        fm.Lasso(),
        fm.ElasticNet(),
        nb.GaussianNB(),
        nb.MultinomialNB(),
        ensemble.GradientBoostingRegressor(n_estimators=2),
        ensemble.GradientBoostingClassifier(n_estimators=2),
        svm.LinearSVC(),
        svm.SVC(),
        cluster.KMeans(2),
        cluster.DBSCAN(),
        fm.SGDClassifier(max_iter=5),
        fm.SGDRegressor(max_iter=5),
    ]
    for est in estimators:
        with pytest.raises(ValueError, match=match):
            est.fit(X, y, sample_weight=w)
    for f in (
        metrics.accuracy_score,
        metrics.mean_squared_error,
        metrics.r2_score,
        metrics.confusion_matrix,
        metrics.f1_score,
        metrics.roc_auc_score,
    ):
        with pytest.raises(ValueError, match=match):
            f(y, y[::-1], sample_weight=w)
    with pytest.raises(ValueError, match=match):
        metrics.log_loss(y, np.full(6, 0.5), sample_weight=w)
