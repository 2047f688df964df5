"""KMeans, DBSCAN, GaussianMixture and PCA against scikit-learn.

KMeans from the same initial centres: centres to 1e-10, identical labels and iteration count.
DBSCAN: identical labels. GaussianMixture from the same initial parameters: means/covariances to
1e-8. PCA: components (sign included), variances and projections to 1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.cluster as skc
import sklearn.decomposition as skd
import sklearn.mixture as skm

from fms_ml import cluster, decomposition, mixture
from fms_ml.metrics import silhouette_score


@pytest.mark.parametrize(("name", "k"), [("iris", 3), ("wine", 3), ("digits", 10)])
def test_kmeans_same_init_gives_same_centres_to_1e10(name, k, request) -> None:  # type: ignore[no-untyped-def]
    X, _ = request.getfixturevalue(name)
    init = X[np.linspace(0, len(X) - 1, k).astype(int)]
    ours = cluster.KMeans(k, init=init).fit(X)
    ref = skc.KMeans(k, init=init, n_init=1).fit(X)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    assert ours.n_iter_ == ref.n_iter_
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    np.testing.assert_allclose(ours.transform(X[:5]), ref.transform(X[:5]), rtol=1e-10)


def test_kmeans_plusplus_inertia_close_to_sklearn(digits) -> None:  # type: ignore[no-untyped-def]
    X, _ = digits
    ours = np.mean([cluster.KMeans(10, random_state=s).fit(X).inertia_ for s in range(3)])
    ref = np.mean([skc.KMeans(10, random_state=s).fit(X).inertia_ for s in range(3)])
    assert ours == pytest.approx(ref, rel=0.02)
    km = cluster.KMeans(3, random_state=0, n_init=4).fit(X[:300])
    assert km.labels_.shape == (300,)
    assert km.score(X[:300]) == pytest.approx(-km.inertia_)


@pytest.mark.parametrize(("eps", "min_samples"), [(0.3, 3), (0.5, 5), (0.8, 10)])
def test_dbscan_labels_equal_sklearn(iris, eps, min_samples) -> None:  # type: ignore[no-untyped-def]
    X, _ = iris
    X = (X - X.mean(0)) / X.std(0)
    ours = cluster.DBSCAN(eps, min_samples=min_samples).fit(X)
    ref = skc.DBSCAN(eps=eps, min_samples=min_samples).fit(X)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    np.testing.assert_array_equal(ours.core_sample_indices_, ref.core_sample_indices_)
    if len(set(ours.labels_)) > 2:
        assert -1 <= silhouette_score(X, ours.labels_) <= 1


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_gmm_same_init_matches_sklearn_to_1e8(iris, cov) -> None:  # type: ignore[no-untyped-def]
    X, _ = iris
    K = 3
    prec = np.stack([np.eye(4)] * K) if cov == "full" else np.ones((K, 4))
    kw = {
        "weights_init": np.ones(K) / K,
        "means_init": X[[0, 50, 100]],
        "precisions_init": prec,
        "tol": 1e-6,
    }
    ours = mixture.GaussianMixture(K, covariance_type=cov, **kw).fit(X)  # type: ignore[arg-type]
    ref = skm.GaussianMixture(K, covariance_type=cov, **kw).fit(X)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-8)
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ours.weights_, ref.weights_, rtol=1e-8)
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-8)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-8)
    assert ours.bic(X) == pytest.approx(ref.bic(X), rel=1e-8)
    np.testing.assert_allclose(ours.precisions_, ref.precisions_, rtol=1e-8, atol=1e-10)


def test_gmm_kmeans_init_recovers_blobs() -> None:
    from fms_ml.datasets import make_blobs

    X, y = make_blobs(600, 2, centers=[[-5, 0], [0, 5], [5, 0]], cluster_std=0.7, random_state=0)
    g = mixture.GaussianMixture(3, random_state=0).fit(X)
    assert g.converged_
    lab = g.predict(X)
    purity = sum(np.bincount(y[lab == k]).max() for k in range(3)) / len(y)
    assert purity > 0.98


@pytest.mark.parametrize("whiten", [False, True])
@pytest.mark.parametrize("n_components", [None, 5, 0.9])
def test_pca_matches_sklearn_to_1e10_sign_included(digits, whiten, n_components) -> None:  # type: ignore[no-untyped-def]
    X, _ = digits
    ours = decomposition.PCA(n_components, whiten=whiten).fit(X)
    ref = skd.PCA(n_components, whiten=whiten, svd_solver="full").fit(X)
    assert ours.n_components_ == ref.n_components_
    np.testing.assert_allclose(ours.components_, ref.components_, atol=1e-10)
    np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(
        ours.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-10
    )
    np.testing.assert_allclose(ours.transform(X), ref.transform(X), atol=1e-8)
    np.testing.assert_allclose(ours.fit_transform(X), ref.fit_transform(X), atol=1e-8)
    assert ours.noise_variance_ == pytest.approx(ref.noise_variance_, rel=1e-10, abs=1e-12)
    np.testing.assert_allclose(
        ours.inverse_transform(ours.transform(X)),
        ref.inverse_transform(ref.transform(X)),
        atol=1e-8,
    )


def test_pca_components_equal_up_to_sign_on_wine(wine) -> None:  # type: ignore[no-untyped-def]
    X, _ = wine
    X = (X - X.mean(0)) / X.std(0)
    ours = decomposition.PCA(4).fit(X)
    ref = skd.PCA(4).fit(X)
    np.testing.assert_allclose(np.abs(ours.components_), np.abs(ref.components_), atol=1e-10)
    np.testing.assert_allclose(ours.get_covariance(), ref.get_covariance(), atol=1e-10)
