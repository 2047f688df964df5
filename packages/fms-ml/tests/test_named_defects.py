"""The defects issue 15 named, one test each (each failed before its fix).

Reference behaviour is scikit-learn's: the same error types, warning categories and tags.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from battery_instances import battery_instances
from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
from sklearn.exceptions import NotFittedError as SkNotFittedError
from sklearn.utils import get_tags

from fms_ml import NotFittedError
from fms_ml.linear_model import Lasso, LinearRegression, LogisticRegression, SGDClassifier
from fms_ml.mixture import GaussianMixture
from fms_ml.naive_bayes import MultinomialNB
from fms_ml.pipeline import Pipeline
from fms_ml.preprocessing import StandardScaler
from fms_ml.svm import LinearSVC
from fms_ml.tree import DecisionTreeClassifier


def _frame() -> tuple[pd.DataFrame, np.ndarray]:
    r = np.random.default_rng(0)
    X = pd.DataFrame(r.normal(size=(40, 3)), columns=["a", "b", "c"])
    return X, X["a"].to_numpy() * 2 - X["c"].to_numpy()


def test_feature_names_in_from_a_dataframe_and_reordered_columns_are_an_error() -> None:
    X, y = _frame()
    est = LinearRegression().fit(X, y)
    assert est.feature_names_in_.tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(est.predict(X), y, atol=1e-10)
    with pytest.raises(ValueError, match=r"feature names should match.*another order"):
        est.predict(X[["c", "b", "a"]])  # silently wrong predictions before the fix
    with pytest.raises(ValueError, match="missing \\['c'\\]"):
        est.predict(X.rename(columns={"c": "d"}))
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        est.predict(X.to_numpy())
    refit = est.fit(X.to_numpy(), y)
    assert not hasattr(refit, "feature_names_in_")


def test_convergence_warning_at_max_iter_and_n_iter() -> None:
    r = np.random.default_rng(0)
    X = r.normal(size=(60, 4))
    y = (X[:, 0] + 0.3 * r.normal(size=60) > 0).astype(int)
    for est in (LogisticRegression(max_iter=1), LinearSVC(max_iter=1), GaussianMixture(max_iter=1)):
        with pytest.warns(SkConvergenceWarning, match="did not converge"):
            est.fit(X, y)
        assert est.n_iter_ >= 1
    with pytest.warns(SkConvergenceWarning, match="duality gap"):
        Lasso(alpha=1e-4, max_iter=1, tol=1e-12).fit(X, X @ [1.0, 2.0, 0.0, -1.0])
    with pytest.warns(SkConvergenceWarning):
        SGDClassifier(max_iter=2, random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkConvergenceWarning)
        assert LogisticRegression().fit(X, y).n_iter_ < 100  # converged: no warning


def test_sparse_complex_and_string_input_are_refused_clearly() -> None:
    X, y = np.eye(4), np.array([0, 1, 0, 1])
    for sparse in (sp.csr_matrix(X), sp.csr_array(X)):
        with pytest.raises(TypeError, match=r"sparse input is not supported, call X.toarray\(\)"):
            DecisionTreeClassifier().fit(sparse, y)
    with pytest.raises(ValueError, match="Complex data not supported"):
        DecisionTreeClassifier().fit(X + 1j, y)
    with pytest.raises(ValueError, match="holds strings"):
        DecisionTreeClassifier().fit(X.astype(str), y)  # numpy would have parsed them
    with pytest.raises(ValueError, match="holds strings"):
        DecisionTreeClassifier().fit(X.astype(str).astype(object), y)


def test_array_like_sample_weight_is_converted_before_use() -> None:
    X, y = _frame()
    w = pd.Series(np.linspace(1, 2, len(y)))
    a = LinearRegression().fit(X, y, sample_weight=w)
    b = LinearRegression().fit(X, y, sample_weight=w.to_numpy())
    np.testing.assert_array_equal(a.coef_, b.coef_)
    c = LinearRegression().fit(X, y, sample_weight=2.0)  # a scalar weighs every sample
    np.testing.assert_allclose(c.coef_, LinearRegression().fit(X, y).coef_, atol=1e-12)


def test_not_fitted_error_is_sklearns_and_ours() -> None:
    with pytest.raises(SkNotFittedError) as info:
        LinearRegression().predict(np.eye(2))
    assert isinstance(info.value, NotFittedError)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, AttributeError)


def test_methods_that_cannot_work_are_not_advertised() -> None:
    assert not hasattr(SGDClassifier(loss="hinge"), "predict_proba")
    assert hasattr(SGDClassifier(loss="log_loss"), "predict_proba")
    with pytest.raises(AttributeError, match="needs loss='log_loss'"):
        _ = SGDClassifier().predict_proba
    pipe = Pipeline([("scale", StandardScaler()), ("lr", LinearRegression())])
    assert not hasattr(pipe, "transform")
    assert not hasattr(pipe, "predict_proba")
    assert hasattr(pipe, "predict")


def test_tags_multinomialnb_positive_only_and_pipeline_fitted_state() -> None:
    assert get_tags(MultinomialNB()).input_tags.positive_only
    pipe = Pipeline([("scale", StandardScaler()), ("lr", LinearRegression())])
    assert not pipe.__sklearn_is_fitted__()
    with pytest.raises(NotFittedError):
        pipe.predict(np.eye(3))
    X, y = _frame()
    pipe.fit(X, y)
    assert pipe.__sklearn_is_fitted__()
    assert pipe.n_features_in_ == 3
    assert get_tags(pipe).estimator_type == "regressor"


# -- huge values and huge outputs ------------------------------------------------------------------
@pytest.mark.parametrize("est", battery_instances(), ids=lambda e: type(e).__name__)
def test_values_near_1e300_give_an_error_or_finite_answers_never_silent_nan(est: Any) -> None:
    """Inputs near 1e300 are finite floats, yet their squares are inf and inf - inf is NaN.

    Before, Ridge, Lasso, SGD, SVC, GaussianNB, StandardScaler, PCA, k-means and the mixture
    fitted without complaint and predicted NaN (and the neighbour models ranked NaN distances).
    Now every estimator either refuses the data with a ValueError that says so, or answers with
    finite numbers (trees and forests split on order alone, so they are unaffected).
    """
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)) * 1e300
    y = (X[:, 0] > 0).astype(int) if est._estimator_type != "regressor" else X[:, 0] / 1e300
    if isinstance(est, MultinomialNB):
        X = np.abs(X)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X, y)
            outputs = [
                getattr(est, m)(X)
                for m in (
                    "predict",
                    "predict_proba",
                    "decision_function",
                    "transform",
                    "kneighbors",
                )
                if hasattr(est, m)
            ]
    except ValueError as exc:  # refused, at fit or at predict: the message must say why
        message = str(exc)
        assert "overflow" in message, message
        assert "Rescale" in message, message
        return
    for out in outputs:
        for part in out if isinstance(out, tuple) else (out,):
            a = np.asarray(part)
            assert a.dtype.kind not in "fc" or np.isfinite(a).all()


def test_a_diverging_solver_is_named_as_such_not_as_overflow_of_large_values() -> None:
    from fms_ml._validation import check_finite_result

    with pytest.raises(ValueError, match="diverged"):
        check_finite_result(np.array([np.nan]), "the learned coef_", {"X": np.ones((3, 2))})
    check_finite_result(np.array([np.nan]), "x", {"X": np.array([np.nan])})  # the input's own NaN


def test_sgd_on_unscaled_features_stays_finite_as_sklearns_does() -> None:
    """scikit-learn clips the loss derivative at 1e12; without it the iterates overflowed to NaN."""
    from sklearn.linear_model import SGDRegressor as SkSGDRegressor

    from fms_ml.linear_model import SGDRegressor

    rng = np.random.RandomState(0)
    X, y = rng.normal(loc=100, size=(100, 2)), rng.normal(size=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = SGDRegressor(max_iter=5, random_state=0).fit(X, y).coef_
        theirs = SkSGDRegressor(max_iter=5, random_state=0).fit(X, y).coef_
    assert np.isfinite(ours).all()
    assert 1e9 < np.abs(ours).max() < 1e14  # far off, as scikit-learn's is
    assert 1e9 < np.abs(theirs).max() < 1e14


def test_svc_with_every_positive_weight_on_one_class_is_an_error_naming_it() -> None:
    from fms_ml.svm import SVC

    X = np.random.default_rng(0).normal(size=(10, 2))
    y = np.r_[np.zeros(5), np.ones(5)]
    with pytest.raises(ValueError, match="same class"):
        SVC().fit(X, y, sample_weight=np.r_[np.ones(5), np.zeros(5)])


def test_euclidean_distances_equal_sklearns_and_refuse_overflow() -> None:
    from sklearn.metrics.pairwise import euclidean_distances as sk_euclidean

    from fms_ml.metrics import euclidean_distances

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(30, 4)), rng.normal(size=(20, 4))
    np.testing.assert_allclose(
        euclidean_distances(X, Y), sk_euclidean(X, Y), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        euclidean_distances(X, squared=True), sk_euclidean(X, squared=True), rtol=1e-12, atol=1e-12
    )
    assert (np.diag(euclidean_distances(X)) == 0).all()
    with pytest.raises(ValueError, match="overflow"):
        euclidean_distances(X * 1e300)
    with pytest.raises(ValueError, match="same number of features"):
        euclidean_distances(X, Y[:, :3])


def test_polynomial_features_count_their_outputs_before_enumerating_them() -> None:
    """1 000 features at degree 10 make about 3e23 monomials: fit used to enumerate them forever."""
    from fms_ml.preprocessing import PolynomialFeatures

    with pytest.raises(MemoryError, match=r"lower degree.*interaction_only"):
        PolynomialFeatures(degree=10).fit(np.ones((2, 1000)))
    pf = PolynomialFeatures(degree=2).fit(np.ones((2, 3)))
    assert pf.n_output_features_ == 10


def test_outputs_and_solver_matrices_larger_than_memory_are_refused_before_allocating(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fms_ml import _validation
    from fms_ml.linear_model import Ridge
    from fms_ml.preprocessing import PolynomialFeatures

    X = np.random.default_rng(0).normal(size=(200, 30))
    pf = PolynomialFeatures(degree=2).fit(X)  # 496 columns: 200 x 496 x 8 bytes = 0.76 MiB
    monkeypatch.setattr(_validation, "_memory_bytes", lambda: 2**19)  # a 512 KiB machine
    with pytest.raises(
        MemoryError, match=r"PolynomialFeatures: the output would need 775 KiB \(200 x 496 values"
    ):
        pf.transform(X)
    monkeypatch.setattr(_validation, "_memory_bytes", lambda: 2**12)
    with pytest.raises(MemoryError, match="Lasso: the Gram matrix"):
        Lasso().fit(X, X[:, 0])
    with pytest.raises(MemoryError, match=r"Ridge: the normal equations.*solver=\"svd\""):
        Ridge().fit(X, X[:, 0])


def test_n_iter_wherever_sklearns_namesake_has_it() -> None:
    """Ridge lacked `n_iter_` (scikit-learn sets None for its direct solvers); SGD lacked `t_`."""
    from sklearn.base import clone as sk_clone
    from sklearn.utils import all_estimators

    theirs = dict(all_estimators())
    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(size=(60, 3)))
    y = (X[:, 0] > 0.8).astype(int)
    checked = []
    for est in battery_instances():
        name = type(est).__name__
        if name in ("Pipeline", "CalibratedClassifierCV"):
            continue  # meta-estimators: their steps are the estimators checked here
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = sk_clone(theirs[name]()).fit(X, y)
            est.fit(X, y)
        for attr in ("n_iter_", "t_"):
            if hasattr(ref, attr):
                assert hasattr(est, attr), f"{name} has no {attr}"
                checked.append(f"{name}.{attr}")
    assert "Ridge.n_iter_" in checked
    assert "SGDClassifier.t_" in checked
    assert len(checked) >= 10
