"""Linear models against scikit-learn.

Convex models are solved to tight tolerances on both sides and compared coefficient by
coefficient: least squares / ridge / lasso / elastic net to 1e-8 relative, logistic regression
and LinearSVC to 1e-4 relative (the issue's bound). SGD is stochastic: held-out accuracy / R²
within 0.05 of scikit-learn's.
"""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.linear_model as sk

from fms_ml import linear_model as fm
from fms_ml.model_selection import train_test_split


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(1e-12, np.max(np.abs(b))))


def test_linear_regression_matches_sklearn_to_1e8_on_diabetes(diabetes) -> None:  # type: ignore[no-untyped-def]
    X, y = diabetes
    ours, ref = fm.LinearRegression().fit(X, y), sk.LinearRegression().fit(X, y)
    assert _rel(ours.coef_, ref.coef_) < 1e-8
    assert ours.intercept_ == pytest.approx(ref.intercept_, rel=1e-8)
    assert ours.score(X, y) == pytest.approx(ref.score(X, y), rel=1e-10)
    Y2 = np.c_[y, 2 * y + 1]
    np.testing.assert_allclose(
        fm.LinearRegression().fit(X, Y2).predict(X),
        sk.LinearRegression().fit(X, Y2).predict(X),
        rtol=1e-8,
    )
    no_b = fm.LinearRegression(fit_intercept=False).fit(X, y)
    assert _rel(no_b.coef_, sk.LinearRegression(fit_intercept=False).fit(X, y).coef_) < 1e-8


@pytest.mark.parametrize("solver", ["auto", "cholesky", "svd"])
@pytest.mark.parametrize("alpha", [1e-3, 1.0, 100.0])
def test_ridge_matches_sklearn_to_1e8_on_diabetes(diabetes, solver, alpha) -> None:  # type: ignore[no-untyped-def]
    X, y = diabetes
    ours, ref = fm.Ridge(alpha, solver=solver).fit(X, y), sk.Ridge(alpha=alpha).fit(X, y)
    assert _rel(ours.coef_, ref.coef_) < 1e-8
    assert ours.intercept_ == pytest.approx(ref.intercept_, rel=1e-8)


def test_ridge_wide_design_uses_dual_and_matches_sklearn_to_1e8(rng) -> None:  # type: ignore[no-untyped-def]
    X, y = rng.normal(size=(20, 50)), rng.normal(size=20)
    assert _rel(fm.Ridge(0.5).fit(X, y).coef_, sk.Ridge(alpha=0.5).fit(X, y).coef_) < 1e-8


@pytest.mark.parametrize("alpha", [0.01, 0.1, 1.0])
def test_lasso_and_elastic_net_match_sklearn_to_1e8_on_diabetes(diabetes, alpha) -> None:  # type: ignore[no-untyped-def]
    X, y = diabetes
    kw = {"tol": 1e-12, "max_iter": 100_000}
    o, r = fm.Lasso(alpha, **kw).fit(X, y), sk.Lasso(alpha=alpha, **kw).fit(X, y)
    assert _rel(o.coef_, r.coef_) < 1e-8
    assert np.array_equal(o.coef_ == 0, r.coef_ == 0)  # same sparsity pattern
    o, r = (
        fm.ElasticNet(alpha, l1_ratio=0.3, **kw).fit(X, y),
        sk.ElasticNet(alpha=alpha, l1_ratio=0.3, **kw).fit(X, y),
    )
    assert _rel(o.coef_, r.coef_) < 1e-8
    assert o.intercept_ == pytest.approx(r.intercept_, rel=1e-8)


def test_lasso_default_tolerance_matches_sklearn_to_1e4(diabetes) -> None:  # type: ignore[no-untyped-def]
    X, y = diabetes
    assert _rel(fm.Lasso(0.05).fit(X, y).coef_, sk.Lasso(alpha=0.05).fit(X, y).coef_) < 1e-4


def test_enet_path_matches_sklearn_lasso_path_to_1e6(diabetes) -> None:  # type: ignore[no-untyped-def]
    X, y = diabetes
    Xc, yc = X - X.mean(0), y - y.mean()
    alphas, coefs = fm.enet_path(X, y, n_alphas=20, tol=1e-12, max_iter=100_000)
    ref_alphas, ref_coefs, _ = sk.lasso_path(Xc, yc, alphas=alphas, tol=1e-12, max_iter=100_000)
    np.testing.assert_allclose(alphas, ref_alphas)
    assert _rel(coefs, ref_coefs) < 1e-6
    assert np.all(coefs[:, 0] == 0)  # alpha_max zeroes every coefficient


@pytest.mark.parametrize("solver", ["lbfgs", "newton"])
def test_binary_logistic_matches_sklearn_to_1e4_on_breast_cancer(breast_cancer, solver) -> None:  # type: ignore[no-untyped-def]
    X, y = breast_cancer
    X = (X - X.mean(0)) / X.std(0)
    ours = fm.LogisticRegression(C=0.5, tol=1e-10, max_iter=1000, solver=solver).fit(X, y)
    ref = sk.LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(X, y)
    assert _rel(ours.coef_, ref.coef_) < 1e-4
    assert ours.intercept_[0] == pytest.approx(ref.intercept_[0], rel=1e-4)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-6)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


@pytest.mark.parametrize("name", ["iris", "wine"])
def test_multinomial_logistic_matches_sklearn_to_1e4(name, request) -> None:  # type: ignore[no-untyped-def]
    X, y = request.getfixturevalue(name)
    X = (X - X.mean(0)) / X.std(0)
    ours = fm.LogisticRegression(C=1.0, tol=1e-10, max_iter=5000).fit(X, y)
    ref = sk.LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(X, y)
    assert _rel(ours.coef_, ref.coef_) < 1e-4
    np.testing.assert_allclose(
        ours.intercept_, ref.intercept_, atol=1e-4 * np.abs(ref.intercept_).max()
    )
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-6)


def test_multinomial_logistic_on_digits_matches_sklearn_predictions(digits) -> None:  # type: ignore[no-untyped-def]
    """Digits (10 classes, 64 features) at scikit-learn's default tolerance: probabilities to 1e-3."""
    X, y = digits
    X = X / 16.0
    ours = fm.LogisticRegression(C=0.1, max_iter=500, tol=1e-6).fit(X, y)
    ref = sk.LogisticRegression(C=0.1, max_iter=5000, tol=1e-8).fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-3)
    assert np.mean(ours.predict(X) == ref.predict(X)) == 1.0


def test_unpenalised_logistic_matches_sklearn_to_1e4(rng) -> None:  # type: ignore[no-untyped-def]
    X = rng.normal(size=(300, 4))
    y = (X @ [1.0, -2.0, 0.5, 0.0] + rng.logistic(size=300) > 0).astype(int)
    ours = fm.LogisticRegression(penalty=None, tol=1e-10, max_iter=1000, solver="newton").fit(X, y)
    ref = sk.LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(X, y)
    assert _rel(ours.coef_, ref.coef_) < 1e-4


def test_logistic_string_labels_round_trip() -> None:
    X = np.array([[0.0], [0.2], [0.9], [1.1], [2.0], [2.2]])
    y = np.array(["lo", "lo", "mid", "mid", "hi", "hi"])
    clf = fm.LogisticRegression(C=100.0).fit(X, y)
    assert clf.classes_.tolist() == ["hi", "lo", "mid"]
    assert clf.predict([[0.1], [2.1]]).tolist() == ["lo", "hi"]
    assert clf.score(X, y) >= 5 / 6
    np.testing.assert_allclose(clf.predict_proba(X).sum(1), 1.0)


@pytest.mark.parametrize("loss", ["hinge", "log_loss", "modified_huber"])
def test_sgd_classifier_accuracy_within_005_of_sklearn(breast_cancer, loss) -> None:  # type: ignore[no-untyped-def]
    X, y = breast_cancer
    X = (X - X.mean(0)) / X.std(0)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    ours = fm.SGDClassifier(loss, random_state=0).fit(Xtr, ytr).score(Xte, yte)
    ref = sk.SGDClassifier(loss=loss, random_state=0).fit(Xtr, ytr).score(Xte, yte)
    assert ours >= ref - 0.05


def test_sgd_classifier_multiclass_and_proba(iris) -> None:  # type: ignore[no-untyped-def]
    X, y = iris
    X = (X - X.mean(0)) / X.std(0)
    clf = fm.SGDClassifier("log_loss", random_state=0).fit(X, y)
    assert clf.coef_.shape == (3, 4)
    assert clf.score(X, y) > 0.85
    np.testing.assert_allclose(clf.predict_proba(X).sum(1), 1.0)
    with pytest.raises(AttributeError, match="log_loss"):
        fm.SGDClassifier().fit(X, y).predict_proba(X)


def test_sgd_regressor_r2_within_005_of_sklearn(diabetes) -> None:  # type: ignore[no-untyped-def]
    X, y = diabetes
    X = (X - X.mean(0)) / X.std(0)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0)
    ours = fm.SGDRegressor(random_state=0, max_iter=2000).fit(Xtr, ytr).score(Xte, yte)
    ref = sk.SGDRegressor(random_state=0).fit(Xtr, ytr).score(Xte, yte)
    assert ours >= ref - 0.05


def test_linear_model_parameter_errors(diabetes) -> None:  # type: ignore[no-untyped-def]
    X, y = diabetes
    with pytest.raises(ValueError, match="alpha"):
        fm.Ridge(-1.0).fit(X, y)
    with pytest.raises(ValueError, match="l1_ratio"):
        fm.ElasticNet(l1_ratio=2.0).fit(X, y)
    with pytest.raises(ValueError, match="penalty"):
        fm.LogisticRegression(penalty="l1").fit(X, y > 100)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="binary"):
        fm.LogisticRegression(solver="newton").fit(X, np.digitize(y, [100, 200]))
    with pytest.raises(ValueError, match="loss"):
        fm.SGDRegressor(loss="hinge").fit(X, y)
    with pytest.raises(ValueError, match="Invalid parameter 'l1_ratio'"):
        fm.Lasso().set_params(l1_ratio=0.5)
