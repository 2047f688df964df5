"""`class_weight` in LogisticRegression, the trees, the forests and SGDClassifier.

Against scikit-learn 1.9.1: logistic coefficients to 1e-5 relative and probabilities to 1e-6
(both at `tol=1e-10`); depth-limited trees and forests without bootstrap (all features, so every
tree is the same) give the same probabilities to 1e-10. Forests are compared with real-valued
sample weights as well: with class weights alone, the weighted class counts take few distinct
values and two different splits often tie exactly, which scikit-learn breaks by its random
feature order (its own trees then disagree with each other). With bootstrap, the draws differ
from scikit-learn's, so the checks are on what the weights must do to every bootstrap sample.
SGD's random streams and steps differ from scikit-learn's, so its balanced weights are compared by
their effect on minority recall over several seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.ensemble as ske
import sklearn.linear_model as sk
import sklearn.tree as skt
from sklearn.utils.class_weight import compute_class_weight as sk_compute_class_weight

from fms_ml import ensemble, tree
from fms_ml import linear_model as fm
from fms_ml._validation import compute_class_weight
from fms_ml.metrics import accuracy_score
from fms_ml.model_selection import train_test_split


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(1e-12, np.max(np.abs(b))))


def _imbalanced(seed: int = 1, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of about 210, 175 and 15 samples, continuous features."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = (X[:, 0] + X[:, 1] ** 2 + 0.3 * rng.normal(size=n) > 1).astype(int) + (X[:, 2] > 1.2)
    return X, y


def test_compute_class_weight_equals_sklearn() -> None:
    y = np.array(["a", "b", "b", "c", "c", "c", "c"])
    classes, codes = np.unique(y, return_inverse=True)
    sw = np.linspace(0.5, 2.0, 7)
    for cw in ("balanced", {"a": 3.0, "c": 0.5}, None):
        for s in (None, sw):
            ref = sk_compute_class_weight(cw, classes=classes, y=y, sample_weight=s)
            ours = compute_class_weight(cw, classes, codes, s)
            np.testing.assert_allclose(ours, ref, rtol=1e-14)
    # every class then carries the same total weight, n / K
    w = compute_class_weight("balanced", classes, codes, sw)[codes] * sw
    np.testing.assert_allclose(np.bincount(codes, weights=w), sw.sum() / 3, rtol=1e-14)


@pytest.mark.parametrize("name", ["breast_cancer", "wine"])
@pytest.mark.parametrize("cw", ["balanced", "dict"])
@pytest.mark.parametrize("weighted", [False, True])
def test_class_weight_logistic_matches_sklearn_to_1e5(name, cw, weighted, request) -> None:  # type: ignore[no-untyped-def]
    """Binary (breast cancer) and multinomial (wine); scikit-learn 1.9 counts the balanced
    classes with their sample weights, and so do we."""
    X, y = request.getfixturevalue(name)
    X = (X - X.mean(0)) / X.std(0)
    class_weight = "balanced" if cw == "balanced" else {0: 3.0, 1: 0.5}
    sw = np.random.default_rng(0).uniform(0.1, 3.0, len(y)) if weighted else None
    kw = {"tol": 1e-10, "class_weight": class_weight}
    ours = fm.LogisticRegression(max_iter=5000, **kw).fit(X, y, sample_weight=sw)
    ref = sk.LogisticRegression(max_iter=10_000, **kw).fit(X, y, sample_weight=sw)
    assert _rel(ours.coef_, ref.coef_) < 1e-5
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-6)


def test_class_weight_logistic_equals_sample_weight_and_shifts_to_the_rare_class() -> None:
    X, y = _imbalanced()
    cw = {0: 1.0, 1: 2.0, 2: 7.0}
    a = fm.LogisticRegression(class_weight=cw, tol=1e-10, max_iter=1000).fit(X, y)
    b = fm.LogisticRegression(tol=1e-10, max_iter=1000)
    b.fit(X, y, sample_weight=np.array([1.0, 2.0, 7.0])[y])
    np.testing.assert_array_equal(a.coef_, b.coef_)
    plain = fm.LogisticRegression(tol=1e-10, max_iter=1000).fit(X, y)
    balanced = fm.LogisticRegression(class_weight="balanced", tol=1e-10, max_iter=1000).fit(X, y)
    rare = y == 2
    assert (balanced.predict(X)[rare] == 2).mean() > (plain.predict(X)[rare] == 2).mean()


@pytest.mark.parametrize("cw", ["balanced", {0: 1.0, 1: 2.0, 2: 5.0}])
@pytest.mark.parametrize("weighted", [False, True])
def test_class_weight_tree_matches_sklearn(cw, weighted) -> None:  # type: ignore[no-untyped-def]
    """Trees count the balanced classes without sample weights (scikit-learn's
    `compute_sample_weight`), then multiply the two."""
    X, y = _imbalanced()
    sw = np.random.default_rng(2).uniform(0.1, 2.0, len(y)) if weighted else None
    ours = tree.DecisionTreeClassifier(max_depth=4, class_weight=cw).fit(X, y, sample_weight=sw)
    ref = skt.DecisionTreeClassifier(max_depth=4, class_weight=cw, random_state=0)
    ref.fit(X, y, sample_weight=sw)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-10)
    np.testing.assert_allclose(
        ours.tree_.weighted_n_node_samples[0], ref.tree_.weighted_n_node_samples[0], rtol=1e-12
    )


@pytest.mark.parametrize("cw", ["balanced", "balanced_subsample", {0: 1.0, 1: 2.0, 2: 5.0}])
def test_class_weight_forest_without_bootstrap_matches_sklearn_to_1e10(cw) -> None:  # type: ignore[no-untyped-def]
    """Without bootstrap, "balanced_subsample" is "balanced", as in scikit-learn."""
    X, y = _imbalanced()
    sw = np.random.default_rng(2).uniform(0.1, 2.0, len(y))
    kw = {
        "n_estimators": 5,
        "max_depth": 4,
        "max_features": 1.0,
        "bootstrap": False,
        "class_weight": cw,
    }
    ours = ensemble.RandomForestClassifier(**kw).fit(X, y, sample_weight=sw)
    ref = ske.RandomForestClassifier(random_state=0, **kw).fit(X, y, sample_weight=sw)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-10)
    if isinstance(cw, dict):  # every tree is the class-weighted single tree
        single = tree.DecisionTreeClassifier(max_depth=4, class_weight=cw)
        single.fit(X, y, sample_weight=sw)
        np.testing.assert_allclose(ours.predict_proba(X), single.predict_proba(X), atol=1e-14)


def test_balanced_subsample_balances_every_bootstrap_sample() -> None:
    """Each tree's root holds the same weight of every class: its draws m over K_b classes."""
    X, y = _imbalanced()
    forest = ensemble.RandomForestClassifier(
        30, class_weight="balanced_subsample", random_state=0
    ).fit(X, y)
    for est in forest.estimators_:
        root = est.tree_.value[0]
        np.testing.assert_allclose(root, len(y) / 3, rtol=1e-12)


def test_balanced_forest_draws_balanced_bootstraps_as_sklearn_19() -> None:
    """scikit-learn 1.9 draws row i with probability proportional to its class weight, so
    each class fills about n / K of a bootstrap sample (here within 10% on average over 50
    trees, for both libraries); held-out accuracy within 0.05 of scikit-learn's."""
    X, y = _imbalanced(n=600)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    kw = {"n_estimators": 50, "class_weight": "balanced"}
    ours = ensemble.RandomForestClassifier(random_state=0, **kw).fit(Xtr, ytr)
    ref = ske.RandomForestClassifier(random_state=0, **kw).fit(Xtr, ytr)
    share = len(ytr) / 3
    ours_root = np.mean([e.tree_.value[0] for e in ours.estimators_], axis=0)
    ref_root = np.mean(
        [e.tree_.value[0] * e.tree_.weighted_n_node_samples[0] for e in ref.estimators_], axis=0
    )
    np.testing.assert_allclose(ours_root.ravel(), share, rtol=0.1)
    np.testing.assert_allclose(ref_root.ravel(), share, rtol=0.1)
    assert abs(ours.score(Xte, yte) - ref.score(Xte, yte)) <= 0.05


def test_forest_sample_weight_zero_rows_are_never_drawn() -> None:
    X, y = _imbalanced()
    sw = np.where(y == 2, 0.0, 1.0)
    forest = ensemble.RandomForestClassifier(20, random_state=0).fit(X, y, sample_weight=sw)
    for est in forest.estimators_:
        assert est.tree_.value[0][2] == 0.0
        assert est.tree_.weighted_n_node_samples[0] == len(y)
    assert (forest.predict(X) != 2).all()
    acc = accuracy_score(y, forest.predict(X), sample_weight=sw)
    assert acc > 0.9


def test_class_weight_errors() -> None:
    X, y = _imbalanced()
    with pytest.raises(ValueError, match="not class labels"):
        fm.LogisticRegression(class_weight={5: 2.0}).fit(X, y)
    with pytest.raises(ValueError, match="class_weight must be"):
        tree.DecisionTreeClassifier(class_weight="balance").fit(X, y)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        ensemble.RandomForestClassifier(2, class_weight={0: -1.0}).fit(X, y)
    with pytest.raises(ValueError, match="zero for every sample"):
        fm.LogisticRegression(class_weight={0: 0.0, 1: 0.0, 2: 0.0}).fit(X, y)
    with pytest.raises(ValueError, match="positive total weight"):
        fm.LogisticRegression(class_weight="balanced").fit(X, y, sample_weight=(y != 2) * 1.0)


def test_balanced_sgd_raises_minority_recall_like_sklearn() -> None:
    """Imbalanced binary problems (about 8% positives), 8 seeds, hinge and log loss: the held-out
    minority recall that `class_weight="balanced"` adds, averaged over the 16 fits, is at least
    0.2 and within 0.15 of what it adds to scikit-learn's SGDClassifier (different random streams
    and per-sample steps, so only the effect is compared)."""
    from sklearn.datasets import make_classification
    from sklearn.metrics import recall_score

    gain = {"ours": [], "ref": []}  # type: dict[str, list[float]]
    for seed in range(8):
        X, y = make_classification(
            1200,
            10,
            n_informative=4,
            weights=[0.92, 0.08],
            flip_y=0.02,
            class_sep=0.8,
            random_state=seed,
        )
        X = (X - X.mean(0)) / X.std(0)
        Xtr, ytr, Xte, yte = X[:800], y[:800], X[800:], y[800:]
        for name, make in (("ours", fm.SGDClassifier), ("ref", sk.SGDClassifier)):
            for loss in ("hinge", "log_loss"):
                recall = [
                    recall_score(
                        yte,
                        make(loss=loss, class_weight=cw, random_state=seed)
                        .fit(Xtr, ytr)
                        .predict(Xte),
                    )
                    for cw in (None, "balanced")
                ]
                gain[name].append(recall[1] - recall[0])
    ours, ref = float(np.mean(gain["ours"])), float(np.mean(gain["ref"]))
    assert ours >= 0.2
    assert abs(ours - ref) <= 0.15, (ours, ref)


def test_sgd_class_weight_one_vs_rest_weights_only_the_positives() -> None:
    """Multiclass one-vs-rest, as scikit-learn: problem k gives c_k to its positives and 1 to the
    rest, so weighting class 2 alone changes only its own problem's coefficients (the others to
    1e-12: once problem 2 stops at another epoch, the shared matrix products change shape and BLAS
    may round the other columns differently)."""
    X, y = _imbalanced()
    plain = fm.SGDClassifier(random_state=0).fit(X, y)
    heavy = fm.SGDClassifier(class_weight={2: 5.0}, random_state=0).fit(X, y)
    np.testing.assert_allclose(heavy.coef_[:2], plain.coef_[:2], rtol=0, atol=1e-12)
    assert not np.array_equal(heavy.coef_[2], plain.coef_[2])
    with pytest.raises(ValueError, match="zero for every sample"):  # binary: every row weighs 0
        fm.SGDClassifier(class_weight={0: 0.0, 1: 0.0}).fit(X, y > 0)
