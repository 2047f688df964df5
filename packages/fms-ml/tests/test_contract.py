"""The estimator contract: scikit-learn interoperability and bad-input errors for every estimator."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.base import clone as sk_clone
from sklearn.model_selection import GridSearchCV as SkGridSearchCV
from sklearn.model_selection import cross_val_score as sk_cross_val_score
from sklearn.pipeline import Pipeline as SkPipeline
from sklearn.preprocessing import StandardScaler as SkStandardScaler

from fms_ml import NotFittedError, base
from fms_ml.cluster import DBSCAN, KMeans
from fms_ml.decomposition import PCA
from fms_ml.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from fms_ml.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    SGDClassifier,
    SGDRegressor,
)
from fms_ml.mixture import GaussianMixture
from fms_ml.naive_bayes import GaussianNB, MultinomialNB
from fms_ml.neighbors import KNeighborsClassifier, KNeighborsRegressor
from fms_ml.preprocessing import MinMaxScaler, PolynomialFeatures, StandardScaler
from fms_ml.svm import SVC, LinearSVC
from fms_ml.tree import DecisionTreeClassifier, DecisionTreeRegressor

CLASSIFIERS: list[Any] = [
    LogisticRegression(),
    SGDClassifier(random_state=0, max_iter=20),
    LinearSVC(),
    SVC(),
    KNeighborsClassifier(3),
    GaussianNB(),
    MultinomialNB(),
    DecisionTreeClassifier(max_depth=3),
    RandomForestClassifier(5, random_state=0),
    GradientBoostingClassifier(n_estimators=5),
]
REGRESSORS: list[Any] = [
    LinearRegression(),
    Ridge(),
    Lasso(0.1),
    ElasticNet(0.1),
    SGDRegressor(random_state=0, max_iter=20),
    KNeighborsRegressor(3),
    DecisionTreeRegressor(max_depth=3),
    RandomForestRegressor(5, random_state=0),
    GradientBoostingRegressor(n_estimators=5),
]
TRANSFORMERS: list[Any] = [StandardScaler(), MinMaxScaler(), PolynomialFeatures(), PCA(2)]
UNSUPERVISED: list[Any] = [KMeans(2, random_state=0), GaussianMixture(2, random_state=0)]
ALL = CLASSIFIERS + REGRESSORS + TRANSFORMERS + UNSUPERVISED


def _ids(ests: list[Any]) -> list[str]:
    return [type(e).__name__ for e in ests]


def _data(est: Any) -> tuple[np.ndarray, np.ndarray]:
    r = np.random.default_rng(0)
    X = np.abs(r.normal(size=(40, 3)))  # non-negative: MultinomialNB accepts it
    y = (
        (X[:, 0] > np.median(X[:, 0])).astype(int)
        if _kind(est) == "classifier"
        else X @ [1.0, 2.0, -1.0]
    )
    return X, y


def _kind(est: Any) -> str | None:
    return getattr(est, "_estimator_type", None)


def _fit(est: Any, X: Any, y: Any) -> Any:
    return est.fit(X, y) if _kind(est) in ("classifier", "regressor") else est.fit(X)


# ------------------------------------------------------------------------------------------------
# scikit-learn interoperability
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("est", ALL, ids=_ids(ALL))
def test_sklearn_clone_and_params_round_trip(est: Any) -> None:
    c = sk_clone(est)
    assert type(c) is type(est)
    assert c is not est
    assert c.get_params() == est.get_params()
    ours = base.clone(est)
    assert ours.get_params(deep=False).keys() == est.get_params(deep=False).keys()
    name = next(iter(est.get_params()))
    assert est.set_params(**{name: est.get_params()[name]}) is est
    assert type(est).__name__ in repr(est)


@pytest.mark.parametrize("est", CLASSIFIERS + REGRESSORS, ids=_ids(CLASSIFIERS + REGRESSORS))
def test_fit_returns_self_and_learned_attributes_end_in_underscore(est: Any) -> None:
    e = base.clone(est)
    X, y = _data(est)
    before = set(vars(e))
    assert e.fit(X, y) is e
    new = {k for k in set(vars(e)) - before if not k.startswith("_")}
    assert new
    assert all(k.endswith("_") for k in new)
    assert e.get_params() == est.get_params()  # fit leaves hyper-parameters untouched


def test_inside_sklearn_pipeline_gridsearch_and_cross_val_score(breast_cancer) -> None:  # type: ignore[no-untyped-def]
    X, y = breast_cancer
    pipe = SkPipeline([("scale", SkStandardScaler()), ("clf", LogisticRegression())])
    scores = sk_cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,)
    assert scores.mean() > 0.95
    gs = SkGridSearchCV(pipe, {"clf__C": [0.01, 1.0]}, cv=3).fit(X, y)
    assert gs.best_params_["clf__C"] in (0.01, 1.0)
    assert gs.score(X, y) > 0.95
    # our transformer feeding a scikit-learn estimator, and our Pipeline scored by scikit-learn
    from sklearn.linear_model import LogisticRegression as SkLR

    from fms_ml.pipeline import make_pipeline

    mixed = SkPipeline([("scale", StandardScaler()), ("clf", SkLR())])
    assert sk_cross_val_score(mixed, X, y, cv=3).mean() > 0.95
    ours = make_pipeline(StandardScaler(), DecisionTreeClassifier(max_depth=3))
    assert sk_cross_val_score(ours, X, y, cv=3).mean() > 0.85


def test_sklearn_sees_classifiers_and_regressors(iris) -> None:  # type: ignore[no-untyped-def]
    from sklearn.base import is_classifier, is_regressor

    assert all(is_classifier(e) for e in CLASSIFIERS)
    assert all(is_regressor(e) for e in REGRESSORS)
    # stratified folds are chosen for our classifiers, as for scikit-learn's
    X, y = iris
    assert sk_cross_val_score(KNeighborsClassifier(), X, y, cv=5).mean() > 0.9


def test_our_gridsearch_on_sklearn_estimator(diabetes) -> None:  # type: ignore[no-untyped-def]
    from sklearn.linear_model import Ridge as SkRidge

    from fms_ml.model_selection import GridSearchCV

    X, y = diabetes
    gs = GridSearchCV(SkRidge(), {"alpha": [0.01, 1.0]}, cv=3).fit(X, y)
    assert gs.best_params_["alpha"] in (0.01, 1.0)


# ------------------------------------------------------------------------------------------------
# bad input: each case raises ValueError (or NotFittedError) naming the problem
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("est", ALL, ids=_ids(ALL))
def test_nan_and_inf_are_rejected(est: Any) -> None:
    X, y = _data(est)
    for bad in (np.nan, np.inf):
        Xb = X.copy()
        Xb[3, 1] = bad
        with pytest.raises(ValueError, match="non-finite"):
            _fit(base.clone(est), Xb, y)


@pytest.mark.parametrize("est", ALL, ids=_ids(ALL))
def test_wrong_ndim_is_rejected(est: Any) -> None:
    X, y = _data(est)
    with pytest.raises(ValueError, match="must be 2-d"):
        _fit(base.clone(est), X[:, 0], y)
    with pytest.raises(ValueError, match="must be 2-d"):
        _fit(base.clone(est), X[:, :, None], y)


@pytest.mark.parametrize("est", CLASSIFIERS + REGRESSORS, ids=_ids(CLASSIFIERS + REGRESSORS))
def test_mismatched_lengths_are_rejected(est: Any) -> None:
    X, y = _data(est)
    with pytest.raises(ValueError, match="Inconsistent numbers of samples"):
        base.clone(est).fit(X, y[:-1])


@pytest.mark.parametrize("est", ALL, ids=_ids(ALL))
def test_empty_input_is_rejected(est: Any) -> None:
    X, y = _data(est)
    with pytest.raises(ValueError, match="empty"):
        _fit(base.clone(est), X[:0], y[:0])


@pytest.mark.parametrize("est", CLASSIFIERS, ids=_ids(CLASSIFIERS))
def test_single_class_is_rejected(est: Any) -> None:
    X, _ = _data(est)
    with pytest.raises(ValueError, match="single class"):
        base.clone(est).fit(X, np.zeros(len(X)))


def test_continuous_targets_are_rejected_by_classifiers() -> None:
    X = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(ValueError, match="continuous"):
        LogisticRegression().fit(X, X[:, 0])


PREDICTORS = CLASSIFIERS + REGRESSORS + TRANSFORMERS + UNSUPERVISED


def _predict(est: Any, X: Any) -> Any:
    return est.predict(X) if hasattr(est, "predict") else est.transform(X)


@pytest.mark.parametrize("est", PREDICTORS, ids=_ids(PREDICTORS))
def test_predict_before_fit_raises_not_fitted(est: Any) -> None:
    X, _ = _data(est)
    with pytest.raises(NotFittedError, match="not fitted"):
        _predict(base.clone(est), X)
    assert issubclass(NotFittedError, ValueError)


@pytest.mark.parametrize("est", PREDICTORS, ids=_ids(PREDICTORS))
def test_different_number_of_features_at_predict_is_rejected(est: Any) -> None:
    X, y = _data(est)
    e = _fit(base.clone(est), X, y)
    with pytest.raises(ValueError, match="features"):
        _predict(e, np.c_[X, X[:, :1]])


def test_dbscan_bad_input() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        DBSCAN().fit([[0.0, np.nan], [1.0, 1.0]])
    with pytest.raises(ValueError, match="eps"):
        DBSCAN(eps=0).fit([[0.0], [1.0]])


def test_string_labels_work_for_every_classifier() -> None:
    X = np.abs(np.random.default_rng(1).normal(size=(60, 3)))
    y = np.where(X[:, 0] > np.median(X[:, 0]), "yes", "no")
    for est in CLASSIFIERS:
        e = base.clone(est).fit(X, y)
        assert set(e.predict(X)) <= {"yes", "no"}
        assert e.classes_.tolist() == ["no", "yes"]
        assert 0.0 <= e.score(X, y) <= 1.0


def test_set_params_rejects_unknown_and_nested(iris) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="Invalid parameter 'nope'"):
        Ridge().set_params(nope=1)
    from fms_ml.model_selection import GridSearchCV

    gs = GridSearchCV(Ridge(), {"alpha": [1.0]})
    gs.set_params(estimator__alpha=3.0)
    assert gs.estimator.alpha == 3.0
