"""The battery's instances: one of each public fms_ml estimator, with scikit-learn's test parameters.

Shared by `test_estimator_checks.py`, `test_named_defects.py` and
`experiments/estimator_battery.py` (which puts this directory on `sys.path`; `conftest.py` does
the same for the tests). See `test_estimator_checks.py` for the expected failures' reasons.
"""

from __future__ import annotations

from typing import Any

from fms_ml.calibration import CalibratedClassifierCV
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
from fms_ml.neighbors import KNeighborsClassifier, KNeighborsRegressor, NearestNeighbors
from fms_ml.pipeline import Pipeline
from fms_ml.preprocessing import MinMaxScaler, OneHotEncoder, PolynomialFeatures, StandardScaler
from fms_ml.svm import SVC, LinearSVC
from fms_ml.tree import DecisionTreeClassifier, DecisionTreeRegressor


def battery_instances() -> list[Any]:
    """One instance of each of the 30 public estimators, with scikit-learn's test parameters."""
    return [
        LinearRegression(),
        Ridge(),
        ElasticNet(max_iter=5),
        Lasso(max_iter=5),
        LogisticRegression(max_iter=5),
        SGDClassifier(max_iter=5),
        SGDRegressor(max_iter=5),
        LinearSVC(max_iter=20),
        SVC(),
        KNeighborsClassifier(n_neighbors=2),
        KNeighborsRegressor(n_neighbors=2),
        NearestNeighbors(),
        GaussianNB(),
        MultinomialNB(),
        DecisionTreeClassifier(),
        DecisionTreeRegressor(),
        RandomForestClassifier(n_estimators=5),
        RandomForestRegressor(n_estimators=5),
        GradientBoostingClassifier(n_estimators=5),
        GradientBoostingRegressor(n_estimators=5),
        StandardScaler(),
        MinMaxScaler(),
        OneHotEncoder(handle_unknown="ignore"),
        PolynomialFeatures(),
        PCA(),
        KMeans(n_clusters=2, max_iter=5),
        DBSCAN(),
        GaussianMixture(max_iter=5),
        Pipeline([("scaler", StandardScaler()), ("final_estimator", Ridge())]),
        CalibratedClassifierCV(LogisticRegression(C=1), cv=3),
    ]


def _sklearn_expected_failures() -> dict[str, dict[str, str]]:
    from sklearn.utils._test_common.instance_generator import PER_ESTIMATOR_XFAIL_CHECKS

    ours = {type(e).__name__ for e in battery_instances()}
    return {
        k.__name__: dict(v) for k, v in PER_ESTIMATOR_XFAIL_CHECKS.items() if k.__name__ in ours
    }


EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = _sklearn_expected_failures()
