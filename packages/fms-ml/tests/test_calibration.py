"""Probability calibration against scikit-learn's `CalibratedClassifierCV` and `isotonic_regression`.

Tolerances: isotonic maps of a deterministic classifier (Gaussian naive Bayes, itself equal to
scikit-learn's to 1e-10) 1e-10; sigmoid maps 1e-6 (scikit-learn stops L-BFGS at a gradient of
1e-6, our Newton iteration at 1e-5 with quadratic convergence, measured 1e-7 apart);
temperature scaling 1e-6 (scikit-learn's bounded Brent search in log beta against our Newton
steps in beta, measured 2e-8 apart); the isotonic regression itself 1e-12.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn.calibration as skc
import sklearn.naive_bayes as sknb
import sklearn.svm as sksvm
from sklearn.base import clone as sk_clone
from sklearn.datasets import make_classification
from sklearn.isotonic import isotonic_regression as sk_isotonic_regression
from sklearn.model_selection import cross_val_score as sk_cross_val_score

from fms_ml import NotFittedError
from fms_ml.calibration import CalibratedClassifierCV, isotonic_regression, sigmoid_calibration
from fms_ml.metrics import log_loss
from fms_ml.naive_bayes import GaussianNB
from fms_ml.svm import SVC


def _data(k: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(
        n_samples=n, n_features=8, n_informative=5, n_classes=k, random_state=k
    )
    return X, y


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("method", ["sigmoid", "isotonic", "temperature"])
@pytest.mark.parametrize("ensemble", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_probabilities_equal_scikit_learn(
    k: int, method: str, ensemble: bool, weighted: bool
) -> None:
    X, y = _data(k)
    w = np.random.default_rng(k).uniform(0.2, 2.0, len(y)) if weighted else None
    ours = CalibratedClassifierCV(GaussianNB(), method=method, ensemble=ensemble)  # type: ignore[arg-type]
    ref = skc.CalibratedClassifierCV(sknb.GaussianNB(), method=method, ensemble=ensemble)
    p = ours.fit(X, y, sample_weight=w).predict_proba(X)
    q = ref.fit(X, y, sample_weight=w).predict_proba(X)
    tol = 1e-10 if method == "isotonic" else 1e-6
    np.testing.assert_allclose(p, q, atol=tol)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    assert len(ours.calibrated_classifiers_) == (5 if ensemble else 1)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("method", ["sigmoid", "temperature"])
def test_svc_scores_calibrated_like_scikit_learn(k: int, method: str) -> None:
    """A classifier without `predict_proba` is calibrated through its decision function (for
    temperature scaling a binary decision value $f$ becomes the logits $(-f, f)$)."""
    X, y = _data(k, 150)
    p = CalibratedClassifierCV(SVC(tol=1e-6), method=method, cv=3).fit(X, y).predict_proba(X)  # type: ignore[arg-type]
    ref = skc.CalibratedClassifierCV(sksvm.SVC(tol=1e-6), method=method, cv=3)
    q = ref.fit(X, y).predict_proba(X)
    np.testing.assert_allclose(p, q, atol=1e-4)  # SVC decision values agree to 1e-3 (test_svm)


def test_isotonic_regression_equals_scikit_learn() -> None:
    r = np.random.default_rng(0)
    y = np.cumsum(r.normal(size=200)) + r.normal(scale=3.0, size=200)
    w = r.uniform(0.0, 2.0, 200)
    for weights in (None, w):
        z = isotonic_regression(y, weights)
        np.testing.assert_allclose(z, sk_isotonic_regression(y, sample_weight=weights), atol=1e-12)
        assert np.all(np.diff(z) >= 0)


def test_sigmoid_calibration_equals_scikit_learn() -> None:
    r = np.random.default_rng(1)
    f = r.normal(size=500)
    y = (r.uniform(size=500) < 1 / (1 + np.exp(-2.5 * f + 0.3))).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = skc._sigmoid_calibration(f, y)  # private, but the function the class calls
    A, B = sigmoid_calibration(f, y)
    assert pytest.approx(a, abs=1e-5) == A
    assert pytest.approx(b, abs=1e-5) == B
    assert A < 0  # P(y = 1 | f) rises with f: 1 / (1 + exp(A f + B)) with A < 0


def test_calibration_lowers_the_losses_of_an_overconfident_model() -> None:
    """Naive Bayes on redundant features counts the same evidence many times and is
    over-confident (held-out log-loss 0.46 to 1.26 here); on held-out data all three calibrations
    lower its Brier score and its log-loss, in every one of 5 seeds."""
    for seed in range(5):
        X, y = make_classification(
            n_samples=4000, n_features=20, n_informative=2, n_redundant=10, random_state=seed
        )
        tr, te = slice(0, 2000), slice(2000, None)

        def losses(p: np.ndarray, y_te: np.ndarray) -> tuple[float, float]:
            return float(np.mean((p[:, 1] - y_te) ** 2)), log_loss(y_te, p)

        brier, nll = losses(GaussianNB().fit(X[tr], y[tr]).predict_proba(X[te]), y[te])
        for method in ("sigmoid", "isotonic", "temperature"):
            cal = CalibratedClassifierCV(GaussianNB(), method=method).fit(X[tr], y[tr])  # type: ignore[arg-type]
            cal_brier, cal_nll = losses(cal.predict_proba(X[te]), y[te])
            assert cal_brier < brier
            assert cal_nll < nll


def test_estimator_contract() -> None:
    """scikit-learn's `clone` and `cross_val_score` take it; predicting before `fit` is an error."""
    X, y = _data(2, 100)
    est = CalibratedClassifierCV(GaussianNB(), method="isotonic", cv=4)
    params = sk_clone(est).get_params(deep=False)
    assert params["method"] == "isotonic"
    assert params["cv"] == 4
    assert isinstance(params["estimator"], GaussianNB)
    assert sk_cross_val_score(est, X, y, cv=3).mean() > 0.7
    with pytest.raises(NotFittedError, match="not fitted"):
        est.predict(X)
    est.fit(X, y)
    assert est.predict_proba(X).shape == (100, 2)
    assert est.n_features_in_ == 8


def test_bad_arguments_are_named() -> None:
    X, y = _data(2, 60)
    with pytest.raises(ValueError, match="method"):
        CalibratedClassifierCV(GaussianNB(), method="platt").fit(X, y)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ensemble"):
        CalibratedClassifierCV(GaussianNB(), ensemble="yes").fit(X, y)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same length"):
        sigmoid_calibration([0.1, 0.2], [1])
