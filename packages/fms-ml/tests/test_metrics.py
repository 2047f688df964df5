"""Every metric equals scikit-learn's on random inputs (hypothesis).

Tolerance: exact (`==`) for counts, accuracy and precision/recall/F; 1e-12 relative for sums of
floats (MSE, MAE, R², log loss, ROC AUC, silhouette), where summation order may differ by an ulp.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn.metrics as skm
from hypothesis import given, settings
from hypothesis import strategies as st

from fms_ml import metrics as fm

SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def label_pairs(draw: st.DrawFn, n_classes_max: int = 4) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(2, 60))
    k = draw(st.integers(2, n_classes_max))
    seed = draw(st.integers(0, 2**31 - 1))
    r = np.random.default_rng(seed)
    return r.integers(0, k, n), r.integers(0, k, n)


@SETTINGS
@given(label_pairs())
def test_accuracy_and_confusion_matrix_equal_sklearn_exactly(pair) -> None:  # type: ignore[no-untyped-def]
    yt, yp = pair
    assert fm.accuracy_score(yt, yp) == skm.accuracy_score(yt, yp)
    assert fm.accuracy_score(yt, yp, normalize=False) == skm.accuracy_score(yt, yp, normalize=False)
    np.testing.assert_array_equal(fm.confusion_matrix(yt, yp), skm.confusion_matrix(yt, yp))


@SETTINGS
@given(label_pairs())
def test_precision_recall_f1_all_averages_equal_sklearn_exactly(pair) -> None:  # type: ignore[no-untyped-def]
    yt, yp = pair
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for avg in ("micro", "macro", "weighted", None):
            ours = fm.precision_recall_fscore_support(yt, yp, average=avg)
            ref = skm.precision_recall_fscore_support(yt, yp, average=avg, zero_division=0.0)
            for a, b in zip(ours[:3], ref[:3], strict=True):
                np.testing.assert_array_equal(a, b)
            for beta in (0.5, 2.0):  # recall counts beta^2 times as much as precision
                ours = fm.precision_recall_fscore_support(yt, yp, beta=beta, average=avg)
                ref = skm.precision_recall_fscore_support(
                    yt, yp, beta=beta, average=avg, zero_division=0.0
                )
                np.testing.assert_array_equal(ours[2], ref[2])
        ytb, ypb = yt % 2, yp % 2
        assert fm.f1_score(ytb, ypb) == skm.f1_score(ytb, ypb, zero_division=0.0)
        assert fm.precision_score(ytb, ypb) == skm.precision_score(ytb, ypb, zero_division=0.0)
        assert fm.recall_score(ytb, ypb) == skm.recall_score(ytb, ypb, zero_division=0.0)


def test_string_labels_and_pos_label() -> None:
    yt = np.array(["spam", "ham", "ham", "spam", "spam"])
    yp = np.array(["spam", "spam", "ham", "ham", "spam"])
    assert fm.f1_score(yt, yp, pos_label="spam") == skm.f1_score(yt, yp, pos_label="spam")
    np.testing.assert_array_equal(fm.confusion_matrix(yt, yp), skm.confusion_matrix(yt, yp))
    with pytest.raises(ValueError, match="pos_label"):
        fm.f1_score(yt, yp)
    with pytest.raises(ValueError, match="average"):
        fm.f1_score(yt, yp, average="samples")  # type: ignore[arg-type]


@SETTINGS
@given(st.integers(3, 80), st.integers(0, 2**31 - 1), st.booleans())
def test_roc_auc_equals_sklearn_to_1e12(n: int, seed: int, ties: bool) -> None:
    r = np.random.default_rng(seed)
    y = r.integers(0, 2, n)
    y[0], y[1] = 0, 1
    s = r.integers(0, 5, n).astype(float) if ties else r.normal(size=n)
    assert fm.roc_auc_score(y, s) == pytest.approx(skm.roc_auc_score(y, s), rel=1e-12)


def test_roc_auc_multiclass_ovr_equals_sklearn() -> None:
    r = np.random.default_rng(0)
    y = r.integers(0, 3, 100)
    p = r.dirichlet(np.ones(3), 100)
    assert fm.roc_auc_score(y, p) == pytest.approx(
        skm.roc_auc_score(y, p, multi_class="ovr"), rel=1e-12
    )


@SETTINGS
@given(st.integers(2, 60), st.integers(2, 5), st.integers(0, 2**31 - 1))
def test_log_loss_equals_sklearn_to_1e12(n: int, k: int, seed: int) -> None:
    r = np.random.default_rng(seed)
    y = r.integers(0, k, n)
    y[:k] = np.arange(k) if n >= k else y[:k]
    labels = np.arange(k)
    p = r.dirichlet(np.ones(k), n)
    assert fm.log_loss(y, p, labels=labels) == pytest.approx(
        skm.log_loss(y, p, labels=labels), rel=1e-12
    )


def test_log_loss_binary_1d_and_clipping() -> None:
    y = np.array([0, 1, 1, 0])
    p = np.array([0.0, 1.0, 0.7, 0.2])
    assert fm.log_loss(y, p) == pytest.approx(skm.log_loss(y, p), rel=1e-12)


@SETTINGS
@given(st.integers(2, 60), st.integers(0, 2**31 - 1))
def test_regression_metrics_equal_sklearn_to_1e12(n: int, seed: int) -> None:
    r = np.random.default_rng(seed)
    yt, yp = r.normal(size=n) * 10, r.normal(size=n) * 10
    assert fm.mean_squared_error(yt, yp) == pytest.approx(skm.mean_squared_error(yt, yp), rel=1e-12)
    assert fm.mean_absolute_error(yt, yp) == pytest.approx(
        skm.mean_absolute_error(yt, yp), rel=1e-12
    )
    assert fm.r2_score(yt, yp) == pytest.approx(skm.r2_score(yt, yp), rel=1e-12)


def test_r2_constant_target_matches_sklearn() -> None:
    y = np.ones(5)
    assert fm.r2_score(y, y) == skm.r2_score(y, y)
    assert fm.r2_score(y, y + 1) == skm.r2_score(y, y + 1)


@SETTINGS
@given(st.integers(6, 50), st.integers(2, 4), st.integers(0, 2**31 - 1))
def test_silhouette_equals_sklearn_to_1e10(n: int, k: int, seed: int) -> None:
    r = np.random.default_rng(seed)
    X = r.normal(size=(n, 3))
    lab = np.r_[np.arange(k), r.integers(0, k, n - k)]
    assert fm.silhouette_score(X, lab) == pytest.approx(
        skm.silhouette_score(X, lab), rel=1e-10, abs=1e-12
    )


def test_metric_bad_inputs() -> None:
    with pytest.raises(ValueError, match="Inconsistent numbers of samples"):
        fm.accuracy_score([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="non-finite"):
        fm.mean_squared_error([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match="empty"):
        fm.mean_absolute_error([], [])
    with pytest.raises(ValueError, match="single class"):
        fm.roc_auc_score([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="columns"):
        fm.log_loss([0, 1, 2], np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="Number of labels"):
        fm.silhouette_score(np.zeros((4, 2)), [0, 0, 0, 0])
