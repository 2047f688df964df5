"""The defects issue 15 named, one test each (each failed before its fix).

Reference behaviour is scikit-learn's: the same error types, warning categories and tags.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
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
