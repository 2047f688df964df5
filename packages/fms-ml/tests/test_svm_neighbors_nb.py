"""SVMs, nearest neighbours and naive Bayes against scikit-learn.

LinearSVC coefficients to 1e-4 relative; SVC decision values to 1e-3 absolute at tol=1e-6 with
identical support vectors and predictions; kNN neighbours exact (brute and k-d tree) and
probabilities to 1e-12; naive Bayes probabilities to 1e-9.
"""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.naive_bayes as sknb
import sklearn.neighbors as skn
import sklearn.svm as sks

from fms_ml import naive_bayes, neighbors, svm


def _std(X: np.ndarray) -> np.ndarray:
    return (X - X.mean(0)) / (X.std(0) + 1e-12)


@pytest.mark.parametrize("name", ["breast_cancer", "iris", "wine"])
def test_linear_svc_matches_sklearn_to_1e4(name, request) -> None:  # type: ignore[no-untyped-def]
    X, y = request.getfixturevalue(name)
    X = _std(X)
    ours = svm.LinearSVC(C=0.1, tol=1e-10).fit(X, y)
    ref = sks.LinearSVC(C=0.1, tol=1e-10, max_iter=100_000).fit(X, y)
    scale = np.abs(ref.coef_).max()
    assert np.abs(ours.coef_ - ref.coef_).max() / scale < 1e-4
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=1e-4 * scale)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


@pytest.mark.parametrize("kernel", ["linear", "rbf", "poly"])
def test_binary_svc_matches_sklearn_decision_to_1e3(breast_cancer, kernel) -> None:  # type: ignore[no-untyped-def]
    X, y = breast_cancer
    X = _std(X)[::2]
    y = y[::2]
    ours = svm.SVC(kernel=kernel, C=1.0, tol=1e-6).fit(X, y)
    ref = sks.SVC(kernel=kernel, C=1.0, tol=1e-6).fit(X, y)
    np.testing.assert_array_equal(ours.support_, ref.support_)
    np.testing.assert_allclose(ours.decision_function(X), ref.decision_function(X), atol=1e-3)
    np.testing.assert_allclose(ours.dual_coef_, ref.dual_coef_, atol=1e-3)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=1e-3)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


def test_multiclass_svc_matches_sklearn_ovo_and_ovr(wine) -> None:  # type: ignore[no-untyped-def]
    X, y = wine
    X = _std(X)
    for shape in ("ovo", "ovr"):
        ours = svm.SVC(C=2.0, tol=1e-6, decision_function_shape=shape).fit(X, y)  # type: ignore[arg-type]
        ref = sks.SVC(C=2.0, tol=1e-6, decision_function_shape=shape).fit(X, y)
        np.testing.assert_allclose(ours.decision_function(X), ref.decision_function(X), atol=1e-3)
        np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
        np.testing.assert_array_equal(ours.n_support_, ref.n_support_)


def test_svc_with_column_cache_equals_full_kernel(iris) -> None:  # type: ignore[no-untyped-def]
    X, y = iris
    full = svm.SVC(tol=1e-6).fit(X, y)
    cached = svm.SVC(tol=1e-6, cache_size=0.01).fit(X, y)  # forces on-demand kernel columns
    np.testing.assert_allclose(full.decision_function(X), cached.decision_function(X), atol=1e-5)


@pytest.mark.parametrize("algorithm", ["brute", "kd_tree"])
def test_kneighbors_exact_against_sklearn(algorithm, rng) -> None:  # type: ignore[no-untyped-def]
    A, Q = rng.normal(size=(3000, 3)), rng.normal(size=(200, 3))
    d, i = (
        neighbors.NearestNeighbors(n_neighbors=7, algorithm=algorithm, leaf_size=64)
        .fit(A)
        .kneighbors(Q)
    )
    rd, ri = skn.NearestNeighbors(n_neighbors=7).fit(A).kneighbors(Q)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_allclose(d, rd, rtol=1e-9, atol=1e-12)
    _d2, i2 = (
        neighbors.NearestNeighbors(n_neighbors=3, algorithm=algorithm, leaf_size=64)
        .fit(A)
        .kneighbors()
    )
    _rd2, ri2 = skn.NearestNeighbors(n_neighbors=3).fit(A).kneighbors()
    np.testing.assert_array_equal(i2, ri2)


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_knn_classifier_regressor_match_sklearn_to_1e12(breast_cancer, diabetes, weights) -> None:  # type: ignore[no-untyped-def]
    X, y = breast_cancer
    X = _std(X)
    ours = neighbors.KNeighborsClassifier(5, weights=weights).fit(X[::2], y[::2])
    ref = skn.KNeighborsClassifier(5, weights=weights).fit(X[::2], y[::2])
    np.testing.assert_allclose(ours.predict_proba(X[1::2]), ref.predict_proba(X[1::2]), atol=1e-12)
    np.testing.assert_array_equal(ours.predict(X[1::2]), ref.predict(X[1::2]))
    X, y = diabetes
    o = neighbors.KNeighborsRegressor(9, weights=weights).fit(X[::2], y[::2]).predict(X[1::2])
    r = skn.KNeighborsRegressor(9, weights=weights).fit(X[::2], y[::2]).predict(X[1::2])
    np.testing.assert_allclose(o, r, rtol=1e-12)


def test_knn_string_labels_and_kd_tree_auto(rng) -> None:  # type: ignore[no-untyped-def]
    X = rng.normal(size=(12_000, 2))
    y = np.where(X[:, 0] > 0, "right", "left")
    clf = neighbors.KNeighborsClassifier(3).fit(X, y)
    assert clf.effective_algorithm_ == "kd_tree"
    assert clf.predict([[2.0, 0.0], [-2.0, 0.0]]).tolist() == ["right", "left"]


@pytest.mark.parametrize("name", ["iris", "wine", "digits"])
def test_gaussian_nb_matches_sklearn_to_1e9(name, request) -> None:  # type: ignore[no-untyped-def]
    X, y = request.getfixturevalue(name)
    ours, ref = naive_bayes.GaussianNB().fit(X, y), sknb.GaussianNB().fit(X, y)
    np.testing.assert_allclose(ours.theta_, ref.theta_, rtol=1e-12)
    np.testing.assert_allclose(ours.var_, ref.var_, rtol=1e-12)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-9)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


@pytest.mark.parametrize("alpha", [0.01, 1.0])
def test_multinomial_nb_matches_sklearn_to_1e9(digits, alpha) -> None:  # type: ignore[no-untyped-def]
    X, y = digits
    ours, ref = (
        naive_bayes.MultinomialNB(alpha=alpha).fit(X, y),
        sknb.MultinomialNB(alpha=alpha).fit(X, y),
    )
    np.testing.assert_allclose(ours.feature_log_prob_, ref.feature_log_prob_, rtol=1e-12)
    np.testing.assert_allclose(
        ours.predict_log_proba(X), ref.predict_log_proba(X), rtol=1e-9, atol=1e-9
    )
    with pytest.raises(ValueError, match="negative"):
        naive_bayes.MultinomialNB().fit(-X, y)
