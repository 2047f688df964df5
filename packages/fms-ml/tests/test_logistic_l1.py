"""L1 and elastic-net logistic regression (FISTA) against scikit-learn's `solver="saga"`.

Standardised breast cancer (binary), iris and wine (multinomial); ours at `tol=1e-10`, saga at
`tol=1e-12` with a large `max_iter`. Coefficients agree to 1e-6 relative (to the largest
coefficient; measured: at most about 2e-8), intercepts to 1e-6 absolute, and the sparsity pattern
(which coefficients are exactly zero) is identical. Independently of scikit-learn, the solution
satisfies the optimality (KKT) conditions of the $\\ell_1$ problem to 1e-8.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn.linear_model as sk

from fms_ml import linear_model as fm


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(1e-12, np.max(np.abs(b))))


def _data(name: str, request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray]:
    X, y = request.getfixturevalue(name)
    return (X - X.mean(0)) / X.std(0), y


def _saga(X, y, l1_ratio, C, sample_weight=None):  # type: ignore[no-untyped-def]
    ref = sk.LogisticRegression(l1_ratio=l1_ratio, C=C, solver="saga", tol=1e-12, max_iter=200_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn 1.9 deprecation notes
        return ref.fit(X, y, sample_weight=sample_weight)


CASES = [
    ("breast_cancer", "l1", None, 0.1),
    ("breast_cancer", "elasticnet", 0.5, 0.5),
    ("iris", "l1", None, 1.0),
    ("iris", "elasticnet", 0.5, 0.5),
    ("wine", "l1", None, 0.1),
    ("wine", "elasticnet", 0.3, 1.0),
]


@pytest.mark.parametrize(("name", "penalty", "l1_ratio", "C"), CASES)
def test_l1_and_elasticnet_logistic_match_sklearn_saga_to_1e6(
    name, penalty, l1_ratio, C, request
) -> None:  # type: ignore[no-untyped-def]
    X, y = _data(name, request)
    ours = fm.LogisticRegression(
        penalty, l1_ratio=l1_ratio, C=C, solver="fista", tol=1e-10, max_iter=100_000
    ).fit(X, y)
    ref = _saga(X, y, 1.0 if penalty == "l1" else l1_ratio, C)
    assert _rel(ours.coef_, ref.coef_) < 1e-6
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=1e-6)
    np.testing.assert_array_equal(ours.coef_ == 0, ref.coef_ == 0)
    assert 0 < (ours.coef_ == 0).sum() < ours.coef_.size  # sparse, but not empty


def test_weighted_l1_logistic_matches_sklearn_saga_to_1e6(wine) -> None:  # type: ignore[no-untyped-def]
    X, y = wine
    X = (X - X.mean(0)) / X.std(0)
    sw = np.random.default_rng(0).uniform(0.1, 3.0, len(y))
    ours = fm.LogisticRegression("l1", C=0.3, solver="fista", tol=1e-10, max_iter=100_000)
    ours.fit(X, y, sample_weight=sw)
    ref = _saga(X, y, 1.0, 0.3, sample_weight=sw)
    assert _rel(ours.coef_, ref.coef_) < 1e-6
    np.testing.assert_array_equal(ours.coef_ == 0, ref.coef_ == 0)


@pytest.mark.parametrize("name", ["breast_cancer", "wine"])
def test_l1_logistic_satisfies_the_kkt_conditions(name, request) -> None:  # type: ignore[no-untyped-def]
    r"""At the minimum of $f(w) + \lambda\lVert w\rVert_1$: $\nabla f_j = -\lambda\,\mathrm{sign}(w_j)$
    where $w_j \ne 0$ and $|\nabla f_j| \le \lambda$ where $w_j = 0$; the intercept's gradient is 0.
    (Here $f$ is the summed log loss and $\lambda = 1/C$.)"""
    X, y = _data(name, request)
    C = 0.2
    clf = fm.LogisticRegression("l1", C=C, solver="fista", tol=1e-12, max_iter=100_000).fit(X, y)
    P = clf.predict_proba(X)
    Y = (y[:, None] == clf.classes_[None, :]).astype(float)
    R = (P[:, 1] - Y[:, 1])[:, None] if len(clf.classes_) == 2 else P - Y
    G = (R.T @ X) * C  # gradient of C * loss, so that the l1 weight is 1
    W = clf.coef_
    nz = W != 0
    np.testing.assert_allclose(G[nz], -np.sign(W[nz]), atol=1e-8)
    assert np.all(np.abs(G[~nz]) <= 1 + 1e-8)
    np.testing.assert_allclose(R.sum(0), 0.0, atol=1e-8)


def test_fista_with_smooth_penalties_equals_lbfgs(breast_cancer, iris) -> None:  # type: ignore[no-untyped-def]
    """l1_ratio=0 is the l2 penalty, and FISTA on it (or on no penalty) reaches L-BFGS's optimum."""
    for X, y in (breast_cancer, iris):
        X = (X - X.mean(0)) / X.std(0)
        ref = fm.LogisticRegression(C=0.5, tol=1e-10, max_iter=5000).fit(X, y)
        for kw in ({"penalty": "elasticnet", "l1_ratio": 0.0}, {"penalty": "l2"}):
            ours = fm.LogisticRegression(C=0.5, solver="fista", tol=1e-10, max_iter=100_000, **kw)
            assert _rel(ours.fit(X, y).coef_, ref.coef_) < 1e-6


def test_l1_path_sparsity_grows_as_c_shrinks(breast_cancer) -> None:  # type: ignore[no-untyped-def]
    X, y = breast_cancer
    X = (X - X.mean(0)) / X.std(0)
    nnz = [
        int(
            (
                fm.LogisticRegression("l1", C=C, solver="fista", tol=1e-8, max_iter=20_000)
                .fit(X, y)
                .coef_
                != 0
            ).sum()
        )
        for C in (0.01, 0.1, 1.0)
    ]
    assert nnz[0] < nnz[1] < nnz[2]
    # below the smallest C with a non-zero coefficient, C < 1 / max_j |X_j^T (y - ybar)|
    c0 = 1.0 / np.max(np.abs(X.T @ (y - y.mean())))
    tiny = fm.LogisticRegression("l1", C=0.9 * c0, solver="fista", tol=1e-10, max_iter=10_000)
    assert np.all(tiny.fit(X, y).coef_ == 0)


def test_l1_parameter_errors(breast_cancer) -> None:  # type: ignore[no-untyped-def]
    X, y = breast_cancer
    with pytest.raises(ValueError, match="needs solver='fista'"):
        fm.LogisticRegression("l1").fit(X, y)
    with pytest.raises(ValueError, match="l1_ratio in"):
        fm.LogisticRegression("elasticnet", solver="fista").fit(X, y)
    with pytest.raises(ValueError, match="l1_ratio in"):
        fm.LogisticRegression("elasticnet", solver="fista", l1_ratio=1.5).fit(X, y)
    with pytest.raises(ValueError, match="solver must be"):
        fm.LogisticRegression(solver="saga").fit(X, y)  # type: ignore[arg-type]
