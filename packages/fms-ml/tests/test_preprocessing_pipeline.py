"""Preprocessing and Pipeline against scikit-learn (tolerance 1e-12 relative unless stated)."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.preprocessing as skp

from fms_ml import NotFittedError
from fms_ml.linear_model import LogisticRegression, Ridge
from fms_ml.pipeline import Pipeline, make_pipeline
from fms_ml.preprocessing import MinMaxScaler, OneHotEncoder, PolynomialFeatures, StandardScaler


def test_standard_scaler_matches_sklearn_to_1e12(wine) -> None:  # type: ignore[no-untyped-def]
    X, _ = wine
    X = np.c_[X, np.ones(len(X))]  # a constant column is left unscaled
    ours, ref = StandardScaler().fit(X), skp.StandardScaler().fit(X)
    np.testing.assert_allclose(ours.transform(X), ref.transform(X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.scale_, ref.scale_, rtol=1e-12)
    np.testing.assert_allclose(ours.inverse_transform(ours.transform(X)), X, rtol=1e-12)
    np.testing.assert_allclose(
        StandardScaler(with_mean=False).fit_transform(X),
        skp.StandardScaler(with_mean=False).fit_transform(X),
        rtol=1e-12,
    )


def test_minmax_scaler_matches_sklearn_to_1e12(iris) -> None:  # type: ignore[no-untyped-def]
    X, _ = iris
    ours = MinMaxScaler((-1, 2)).fit(X[:100])
    ref = skp.MinMaxScaler((-1, 2)).fit(X[:100])
    np.testing.assert_allclose(ours.transform(X), ref.transform(X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.inverse_transform(ours.transform(X)), X, rtol=1e-12)
    with pytest.raises(ValueError, match="feature_range"):
        MinMaxScaler((1, 0)).fit(X)


@pytest.mark.parametrize("drop", [None, "first", "if_binary"])
def test_one_hot_encoder_matches_sklearn_exactly(drop) -> None:  # type: ignore[no-untyped-def]
    X = np.array([["a", "x"], ["b", "y"], ["c", "x"], ["a", "y"]], dtype=object)
    ours = OneHotEncoder(drop=drop).fit(X)
    ref = skp.OneHotEncoder(drop=drop, sparse_output=False).fit(X)
    np.testing.assert_array_equal(ours.transform(X), ref.transform(X))
    np.testing.assert_array_equal(ours.get_feature_names_out(), ref.get_feature_names_out())


def test_one_hot_unknown_categories() -> None:
    enc = OneHotEncoder().fit([[1], [2]])
    with pytest.raises(ValueError, match="unknown categories"):
        enc.transform([[3]])
    np.testing.assert_array_equal(
        OneHotEncoder(handle_unknown="ignore").fit([[1], [2]]).transform([[3]]), [[0, 0]]
    )


@pytest.mark.parametrize(
    ("degree", "inter", "bias"), [(2, False, True), (3, False, False), (3, True, True)]
)
def test_polynomial_features_match_sklearn_exactly(degree, inter, bias) -> None:  # type: ignore[no-untyped-def]
    X = np.random.default_rng(0).normal(size=(7, 3))
    ours = PolynomialFeatures(degree, interaction_only=inter, include_bias=bias).fit(X)
    ref = skp.PolynomialFeatures(degree, interaction_only=inter, include_bias=bias).fit(X)
    np.testing.assert_allclose(ours.transform(X), ref.transform(X), rtol=1e-14)
    np.testing.assert_array_equal(ours.powers_, ref.powers_)


def test_transformers_reject_bad_input() -> None:
    s = StandardScaler()
    with pytest.raises(NotFittedError, match="not fitted"):
        s.transform([[1.0]])
    s.fit([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(ValueError, match="X has 3 features"):
        s.transform([[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="non-finite"):
        s.fit([[1.0, np.inf]])
    with pytest.raises(ValueError, match="2-d"):
        s.fit([1.0, 2.0])
    with pytest.raises(ValueError, match="empty"):
        s.fit(np.empty((0, 2)))


def test_pipeline_fits_predicts_and_nests_params(breast_cancer) -> None:  # type: ignore[no-untyped-def]
    X, y = breast_cancer
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=0.5))])
    assert pipe.get_params()["clf__C"] == 0.5
    pipe.set_params(clf__C=2.0)
    assert pipe.named_steps["clf"].C == 2.0
    pipe.fit(X, y)
    manual = LogisticRegression(C=2.0).fit(StandardScaler().fit_transform(X), y)
    np.testing.assert_allclose(
        pipe.predict_proba(X), manual.predict_proba(StandardScaler().fit(X).transform(X))
    )
    assert pipe.score(X, y) > 0.95
    np.testing.assert_array_equal(pipe.classes_, [0, 1])
    with pytest.raises(ValueError, match="Invalid parameter"):
        pipe.set_params(nope__C=1)


def test_make_pipeline_names_and_validation() -> None:
    p = make_pipeline(StandardScaler(), StandardScaler(), Ridge())
    assert [n for n, _ in p.steps] == ["standardscaler", "standardscaler-2", "ridge"]
    with pytest.raises(TypeError, match="must implement fit and transform"):
        Pipeline([("r", Ridge()), ("s", StandardScaler())]).fit(np.ones((3, 1)), np.ones(3))
