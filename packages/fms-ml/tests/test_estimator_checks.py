"""scikit-learn's own battery (`parametrize_with_checks`) over every public fms_ml estimator.

Every check scikit-learn runs on its own estimators runs here on ours, on the instances of
`battery_instances` (scikit-learn's own test parameters). The only expected failures are those
scikit-learn marks for its own estimator of the same name (`PER_ESTIMATOR_XFAIL_CHECKS`):

* `check_sample_weight_equivalence_on_dense_data` (GradientBoosting*, KMeans, LinearSVC,
  LogisticRegression, RandomForest*, SGD*, SVC): "sample_weight is not equivalent to
  removing/repeating samples" (the solvers' stopping rules and random draws see the weights);
* `check_classifiers_one_label_sample_weights` (RandomForestClassifier): "failed when fitted on
  one label after sample_weight trimming";
* `check_dont_overwrite_parameters`, `check_estimators_overwrite_params` (Pipeline): its steps are
  fitted in place, as scikit-learn's are;
* `check_non_transformer_estimators_n_iter` (LinearSVC, Ridge): scikit-learn's do not expose it.

The remaining entries of that table (array API, sparse sample-weight checks) name checks that do
not run on estimators without array API or sparse support, so they are never reached.

The instances take the parameters scikit-learn's own test suite gives its estimator of the same
name (`INIT_PARAMS` in `sklearn/utils/_test_common/instance_generator.py`: few iterations, few
trees), so the battery runs fast and tests what scikit-learn tests. Run
`uv run python packages/fms-ml/experiments/estimator_battery.py` for the count per estimator.
"""

from __future__ import annotations

from typing import Any

from battery_instances import EXPECTED_FAILED_CHECKS, battery_instances
from sklearn.utils.estimator_checks import parametrize_with_checks


def _expected_failed_checks(estimator: Any) -> dict[str, str]:
    return EXPECTED_FAILED_CHECKS.get(type(estimator).__name__, {})


def test_every_public_estimator_is_in_the_battery() -> None:
    import fms_ml.calibration
    import fms_ml.cluster
    import fms_ml.decomposition
    import fms_ml.ensemble
    import fms_ml.linear_model
    import fms_ml.mixture
    import fms_ml.naive_bayes
    import fms_ml.neighbors
    import fms_ml.pipeline
    import fms_ml.preprocessing
    import fms_ml.svm
    import fms_ml.tree
    from fms_ml.base import BaseEstimator

    modules = [
        fms_ml.calibration, fms_ml.cluster, fms_ml.decomposition, fms_ml.ensemble,
        fms_ml.linear_model, fms_ml.mixture, fms_ml.naive_bayes, fms_ml.neighbors,
        fms_ml.pipeline, fms_ml.preprocessing, fms_ml.svm, fms_ml.tree,
    ]  # fmt: skip
    public = {
        name
        for m in modules
        for name in m.__all__
        if isinstance(getattr(m, name), type) and issubclass(getattr(m, name), BaseEstimator)
    }
    assert public == {type(e).__name__ for e in battery_instances()}
    assert len(public) == 30


@parametrize_with_checks(battery_instances(), expected_failed_checks=_expected_failed_checks)
def test_sklearn_estimator_checks(estimator: Any, check: Any) -> None:
    check(estimator)
