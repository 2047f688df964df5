r"""Synthetic dataset generators (no downloads): blobs, classification, regression, moons, circles.

Each generator is seeded by `random_state` and returns `(X, y)` as numpy arrays. The
distributions follow scikit-learn's generators of the same name (not their exact random streams).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fms_ml._validation import check_random_state

__all__ = ["make_blobs", "make_circles", "make_classification", "make_moons", "make_regression"]

FloatArray = NDArray[np.float64]


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}.")


def make_blobs(
    n_samples: int = 100,
    n_features: int = 2,
    *,
    centers: int | ArrayLike = 3,
    cluster_std: float = 1.0,
    center_box: tuple[float, float] = (-10.0, 10.0),
    random_state: Any = None,
) -> tuple[FloatArray, NDArray[np.int64]]:
    """Isotropic Gaussian clusters: `centers` uniform in `center_box`, spread `cluster_std`."""
    _positive("n_samples", n_samples)
    rng = check_random_state(random_state)
    if isinstance(centers, int | np.integer):
        _positive("centers", int(centers))
        C = rng.uniform(*center_box, size=(int(centers), n_features))
    else:
        C = np.asarray(centers, dtype=float)
        n_features = C.shape[1]
    k = C.shape[0]
    sizes = np.full(k, n_samples // k)
    sizes[: n_samples % k] += 1
    y = np.repeat(np.arange(k), sizes)
    X = C[y] + rng.normal(scale=cluster_std, size=(n_samples, n_features))
    perm = rng.permutation(n_samples)
    return X[perm], y[perm]


def make_classification(
    n_samples: int = 100,
    n_features: int = 20,
    *,
    n_informative: int = 2,
    n_redundant: int = 2,
    n_classes: int = 2,
    n_clusters_per_class: int = 2,
    class_sep: float = 1.0,
    flip_y: float = 0.01,
    random_state: Any = None,
) -> tuple[FloatArray, NDArray[np.int64]]:
    """Guyon's (2003) design, as in scikit-learn: Gaussian clusters on hypercube vertices.

    Informative features hold `n_classes * n_clusters_per_class` clusters centred on vertices of
    a hypercube of side `2 * class_sep`, each with a random covariance; redundant features are
    random linear combinations of the informative ones; the rest is noise. A fraction `flip_y`
    of labels is reassigned at random.
    """
    _positive("n_samples", n_samples)
    if n_informative + n_redundant > n_features:
        raise ValueError(
            f"n_informative + n_redundant = {n_informative + n_redundant} exceeds n_features = "
            f"{n_features}."
        )
    n_clusters = n_classes * n_clusters_per_class
    if n_clusters > 2**n_informative:
        raise ValueError(
            f"n_classes * n_clusters_per_class = {n_clusters} must be <= 2**n_informative = "
            f"{2**n_informative}."
        )
    rng = check_random_state(random_state)
    vertices = rng.permutation(2**n_informative)[:n_clusters]
    bits = ((vertices[:, None] >> np.arange(n_informative)) & 1).astype(float)
    centroids = (2 * bits - 1) * class_sep
    sizes = np.full(n_clusters, n_samples // n_clusters)
    sizes[: n_samples % n_clusters] += 1
    cluster = np.repeat(np.arange(n_clusters), sizes)
    y = cluster % n_classes
    Xi = rng.normal(size=(n_samples, n_informative))
    for k in range(n_clusters):
        A = 2 * rng.random((n_informative, n_informative)) - 1
        Xi[cluster == k] = Xi[cluster == k] @ A + centroids[k]
    B = 2 * rng.random((n_informative, n_redundant)) - 1
    noise = rng.normal(size=(n_samples, n_features - n_informative - n_redundant))
    X = np.hstack([Xi, Xi @ B, noise])
    flip = rng.random(n_samples) < flip_y
    y[flip] = rng.integers(0, n_classes, flip.sum())
    perm = rng.permutation(n_samples)
    return X[perm], y[perm]


def make_regression(
    n_samples: int = 100,
    n_features: int = 100,
    *,
    n_informative: int = 10,
    noise: float = 0.0,
    bias: float = 0.0,
    coef: bool = False,
    random_state: Any = None,
) -> tuple[FloatArray, ...]:
    r"""Linear model $y = X w + b + \varepsilon$ on Gaussian $X$, `n_informative` non-zero weights.

    Returns:
        `(X, y)`, or `(X, y, w)` with `coef=True`.
    """
    _positive("n_samples", n_samples)
    _positive("n_features", n_features)
    rng = check_random_state(random_state)
    n_informative = min(n_informative, n_features)
    X = rng.normal(size=(n_samples, n_features))
    w = np.zeros(n_features)
    w[:n_informative] = 100 * rng.random(n_informative)
    y = X @ w + bias
    if noise > 0:
        y += rng.normal(scale=noise, size=n_samples)
    perm = rng.permutation(n_features)
    X, w = X[:, perm], w[perm]
    return (X, y, w) if coef else (X, y)


def make_moons(
    n_samples: int = 100, *, noise: float = 0.0, random_state: Any = None
) -> tuple[FloatArray, NDArray[np.int64]]:
    """Two interleaving half circles (a non-linearly separable toy problem)."""
    _positive("n_samples", n_samples)
    rng = check_random_state(random_state)
    n_out = n_samples // 2
    n_in = n_samples - n_out
    t_out, t_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n_in)
    X = np.vstack(
        [np.c_[np.cos(t_out), np.sin(t_out)], np.c_[1 - np.cos(t_in), 1 - np.sin(t_in) - 0.5]]
    )
    y = np.r_[np.zeros(n_out, dtype=np.int64), np.ones(n_in, dtype=np.int64)]
    if noise > 0:
        X += rng.normal(scale=noise, size=X.shape)
    perm = rng.permutation(n_samples)
    return X[perm], y[perm]


def make_circles(
    n_samples: int = 100, *, noise: float = 0.0, factor: float = 0.8, random_state: Any = None
) -> tuple[FloatArray, NDArray[np.int64]]:
    """A large circle containing a smaller one (radius ratio `factor`)."""
    _positive("n_samples", n_samples)
    if not 0 <= factor < 1:
        raise ValueError(f"factor must lie in [0, 1); got {factor}.")
    rng = check_random_state(random_state)
    n_out = n_samples // 2
    n_in = n_samples - n_out
    t_out = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    t_in = np.linspace(0, 2 * np.pi, n_in, endpoint=False)
    X = np.vstack([np.c_[np.cos(t_out), np.sin(t_out)], factor * np.c_[np.cos(t_in), np.sin(t_in)]])
    y = np.r_[np.zeros(n_out, dtype=np.int64), np.ones(n_in, dtype=np.int64)]
    if noise > 0:
        X += rng.normal(scale=noise, size=X.shape)
    perm = rng.permutation(n_samples)
    return X[perm], y[perm]
