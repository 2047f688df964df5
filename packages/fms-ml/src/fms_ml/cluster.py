r"""Clustering: k-means (Lloyd's algorithm with k-means++ seeding) and DBSCAN.

**k-means** minimises the inertia $\sum_i \min_k \lVert x_i - \mu_k\rVert^2$ by alternating an
assignment step (each point to its nearest centre) and an update step (each centre to the mean of
its points); neither step can increase the inertia, so it converges to a local minimum. The
k-means++ seeding (Arthur & Vassilvitskii, 2007) draws each new centre with probability
proportional to $D(x)^2$, the squared distance to the nearest centre so far (greedily, the best of
$2 + \lfloor\ln k\rfloor$ draws, as scikit-learn), which is $O(\log k)$-competitive in expectation.

**DBSCAN** (Ester et al., 1996): points with at least `min_samples` neighbours within `eps`
(itself included) are *core*; clusters are the connected components of core points under the
`eps`-neighbour relation, plus the non-core points they reach; the rest is noise (label `-1`).

**Sample weights** (scikit-learn's semantics) count row $i$ as $w_i$ points: k-means minimises
$\sum_i w_i \min_k \lVert x_i - \mu_k\rVert^2$ (weighted means, seeding in proportion to $w_i$),
and DBSCAN counts the summed weight of a neighbourhood instead of its size.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fms_ml._validation import check_array, check_random_state, check_sample_weight
from fms_ml.base import BaseEstimator, ClusterMixin, TransformerMixin
from fms_ml.metrics import _squared_euclidean

__all__ = ["DBSCAN", "KMeans", "kmeans_plusplus"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


def _draw_first(rng: np.random.Generator, w: FloatArray) -> int:
    r"""One index drawn with probability $w_i / \sum_j w_j$ (uniform weights: `integers(n)`)."""
    if np.all(w == w[0]):  # the same distribution; keeps the unweighted random stream
        return int(rng.integers(len(w)))
    return int(np.searchsorted(np.cumsum(w), rng.random() * w.sum(), side="right"))


def kmeans_plusplus(
    X: ArrayLike,
    n_clusters: int,
    *,
    sample_weight: ArrayLike | None = None,
    random_state: Any = None,
) -> tuple[FloatArray, IntArray]:
    r"""Greedy k-means++ seeding; returns `(centers, indices)` of the chosen points.

    With weights $w$ (scikit-learn's semantics), the first centre is drawn with probability
    $\propto w_i$ and each later candidate with probability $\propto w_i D(x_i)^2$; the greedy
    choice among the candidates minimises the weighted potential $\sum_i w_i D(x_i)^2$. A row of
    weight 0 is never drawn.
    """
    Xa = check_array(X)
    rng = check_random_state(random_state)
    n = len(Xa)
    if not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters={n_clusters} must lie in [1, n_samples={n}].")
    w = check_sample_weight(sample_weight, n)
    x_sq = (Xa * Xa).sum(1)
    n_trials = 2 + int(np.log(n_clusters))
    idx = np.empty(n_clusters, dtype=np.intp)
    idx[0] = _draw_first(rng, w)
    closest = _squared_euclidean(Xa[idx[:1]], Xa, B_sq=x_sq)[0]
    mass = w * closest
    pot = mass.sum()
    for c in range(1, n_clusters):
        # side="right" and the clip to the last row with mass: a row whose weight (or distance)
        # is 0 adds nothing to the cumulative sum, so it can never be the first to exceed a draw
        pos = np.flatnonzero(mass > 0)
        last = int(pos[-1]) if pos.size else int(np.flatnonzero(w > 0)[-1])
        cand = np.searchsorted(np.cumsum(mass), rng.random(n_trials) * pot, side="right")
        cand = np.minimum(cand, last)
        d = np.minimum(closest, _squared_euclidean(Xa[cand], Xa, x_sq[cand], x_sq))
        pots = (d * w).sum(1)
        best = int(np.argmin(pots))
        idx[c], closest, pot = cand[best], d[best], pots[best]
        mass = w * closest
    return Xa[idx].copy(), idx


def _assign(X: FloatArray, centers: FloatArray, x_sq: FloatArray) -> tuple[IntArray, FloatArray]:
    labels = np.empty(len(X), dtype=np.intp)
    mind = np.empty(len(X))
    block = max(1, 2**19 // max(1, len(centers)))
    c_sq = (centers * centers).sum(1)
    for s in range(0, len(X), block):
        D = _squared_euclidean(X[s : s + block], centers, x_sq[s : s + block], c_sq)
        labels[s : s + block] = D.argmin(1)
        mind[s : s + block] = D[np.arange(len(D)), labels[s : s + block]]
    return labels, mind


def _update(
    X: FloatArray, w: FloatArray, labels: IntArray, centers: FloatArray, mind: FloatArray
) -> FloatArray:
    r"""Weighted means $\mu_k = \sum_{i \in k} w_i x_i / \sum_{i \in k} w_i$.

    A cluster of zero total weight is *empty* and, as in scikit-learn, takes over the farthest
    point from its centre (of positive weight here), which leaves its old cluster; a cluster still
    empty sits on the heaviest cluster's centre.
    """
    k = centers.shape[0]
    weight = np.bincount(labels, weights=w, minlength=k)
    onehot = np.zeros((k, len(X)))
    onehot[labels, np.arange(len(X))] = w
    sums = onehot @ X
    empty = np.flatnonzero(weight == 0)
    far_d = np.where(w > 0, mind, -1.0)
    if empty.size and far_d.max() > 0:
        far = np.argsort(-far_d, kind="stable")[: empty.size]
        for j, i in zip(empty, far, strict=True):
            sums[labels[i]] -= w[i] * X[i]
            sums[j] = w[i] * X[i]
            weight[labels[i]] -= w[i]
            weight[j] = w[i]
    new = np.empty_like(centers)
    full = weight > 0
    new[full] = sums[full] / weight[full, None]
    new[~full] = new[int(np.argmax(weight))]
    return new


class KMeans(ClusterMixin, TransformerMixin, BaseEstimator):
    """k-means clustering by Lloyd's algorithm.

    Args:
        n_clusters: $k$.
        init: `"k-means++"`, `"random"` ($k$ distinct samples) or an array of initial centres.
        n_init: restarts, keeping the lowest inertia; `"auto"` = 1 for k-means++ or an array,
            10 for random (scikit-learn's rule).
        max_iter: Lloyd iterations per run.
        tol: stop when the squared centre shift falls below `tol` times the mean feature variance.
        random_state: seed for the initialisations.

    Attributes:
        cluster_centers_: `(n_clusters, n_features)` centres of the best run.
        labels_: cluster index of each training sample.
        inertia_: sum of squared distances to the nearest centre (weighted by
            `sample_weight`).
        n_iter_: Lloyd iterations of the best run.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: Literal["k-means++", "random"] | ArrayLike = "k-means++",
        n_init: int | Literal["auto"] = "auto",
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: Any = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def _lloyd(
        self, X: FloatArray, w: FloatArray, centers: FloatArray, x_sq: FloatArray, tol: float
    ) -> tuple[FloatArray, IntArray, float, int]:
        labels_old = np.full(len(X), -1, dtype=np.intp)
        strict = False
        it = 0
        for it in range(1, self.max_iter + 1):  # noqa: B007
            labels, mind = _assign(X, centers, x_sq)
            new = _update(X, w, labels, centers, mind)
            shift = float(((new - centers) ** 2).sum())
            centers = new
            if np.array_equal(labels, labels_old):
                strict = True
                break
            if shift <= tol:
                break
            labels_old = labels
        if not strict:
            labels, mind = _assign(X, centers, x_sq)
        else:
            _, mind = _assign(X, centers, x_sq)
        return centers, labels, float((w * mind).sum()), it

    def fit(
        self, X: ArrayLike, y: ArrayLike | None = None, sample_weight: ArrayLike | None = None
    ) -> KMeans:
        r"""Run `n_init` initialisations of Lloyd's algorithm and keep the best.

        Args:
            X: `(n_samples, n_features)` data.
            y: ignored.
            sample_weight: `(n_samples,)` weights $w_i$: the fit minimises the weighted inertia
                $\sum_i w_i \min_k \lVert x_i - \mu_k\rVert^2$, so centres are weighted means and
                the seeding draws in proportion to the weights (an `init` array is used as given).
                The tolerance stays the unweighted mean feature variance, as in scikit-learn.
        """
        Xa = check_array(X)
        n, p = Xa.shape
        self.n_features_in_ = p
        w = check_sample_weight(sample_weight, n)
        if not isinstance(self.n_clusters, int | np.integer) or not 1 <= self.n_clusters <= n:
            raise ValueError(
                f"n_clusters={self.n_clusters!r} must be an int in [1, n_samples={n}]."
            )
        rng = check_random_state(self.random_state)
        is_array = not isinstance(self.init, str)
        is_random = isinstance(self.init, str) and self.init == "random"
        if isinstance(self.init, str) and self.init not in ("k-means++", "random"):
            raise ValueError(f"init must be 'k-means++', 'random' or an array; got {self.init!r}.")
        n_init = self.n_init
        if n_init == "auto":
            n_init = 10 if isinstance(self.init, str) and self.init == "random" else 1
        if is_array:
            init_c = check_array(self.init, "init")
            if init_c.shape != (self.n_clusters, p):
                raise ValueError(
                    f"init has shape {init_c.shape}; expected ({self.n_clusters}, {p})."
                )
            n_init = 1
        if int(n_init) < 1:
            raise ValueError(f"n_init must be >= 1 or 'auto'; got {self.n_init!r}.")
        if is_random and np.count_nonzero(w) < self.n_clusters:
            raise ValueError(
                f"init='random' draws n_clusters={self.n_clusters} distinct samples of positive "
                f"weight; sample_weight has only {np.count_nonzero(w)} positive entries."
            )
        tol = self.tol * float(np.mean(Xa.var(axis=0)))
        # centre the data for accuracy (as scikit-learn); centres are shifted back at the end
        mean = Xa.mean(0)
        Xc = Xa - mean
        x_sq = (Xc * Xc).sum(1)
        best: tuple[FloatArray, IntArray, float, int] | None = None
        for _ in range(int(n_init)):
            if is_array:
                c0 = init_c - mean
            elif self.init == "k-means++":
                c0, _ = kmeans_plusplus(Xc, self.n_clusters, sample_weight=w, random_state=rng)
            elif np.all(w == w[0]):
                c0 = Xc[rng.choice(n, self.n_clusters, replace=False)]
            else:
                c0 = Xc[rng.choice(n, self.n_clusters, replace=False, p=w / w.sum())]
            run = self._lloyd(Xc, w, c0, x_sq, tol)
            if best is None or run[2] < best[2]:
                best = run
        assert best is not None
        centers, self.labels_, self.inertia_, self.n_iter_ = best
        self.cluster_centers_ = centers + mean
        return self

    def fit_predict(
        self, X: ArrayLike, y: ArrayLike | None = None, sample_weight: ArrayLike | None = None
    ) -> IntArray:
        """Fit (with `sample_weight`, if given) and return `labels_`."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def fit_transform(
        self, X: ArrayLike, y: ArrayLike | None = None, sample_weight: ArrayLike | None = None
    ) -> FloatArray:
        """Fit (with `sample_weight`, if given) and return the distances to the centres."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def predict(self, X: ArrayLike) -> IntArray:
        """Index of the nearest centre."""
        Xa = self._validate_predict_input(X)
        return _assign(Xa, self.cluster_centers_, (Xa * Xa).sum(1))[0]

    def transform(self, X: ArrayLike) -> FloatArray:
        """Euclidean distance to every centre, `(n_samples, n_clusters)`."""
        Xa = self._validate_predict_input(X)
        return np.sqrt(_squared_euclidean(Xa, self.cluster_centers_))

    def score(
        self, X: ArrayLike, y: ArrayLike | None = None, sample_weight: ArrayLike | None = None
    ) -> float:
        """Negative (weighted) inertia of `X` under the fitted centres."""
        Xa = self._validate_predict_input(X)
        w = check_sample_weight(sample_weight, len(Xa))
        return -float((w * _assign(Xa, self.cluster_centers_, (Xa * Xa).sum(1))[1]).sum())


class DBSCAN(ClusterMixin, BaseEstimator):
    """Density-based clustering with noise (Euclidean distance).

    A point is core when its `eps`-neighbourhood (itself included) holds at least `min_samples`
    points, or, with `sample_weight`, at least `min_samples` in summed weight.
    The clusters are the connected components of the core points, found by vectorised
    minimum-label propagation with pointer jumping (no Python loop over points); they are numbered
    by their first core point and each border point joins the lowest-numbered cluster among its
    core neighbours, which is exactly what scikit-learn's depth-first expansion produces.

    Attributes:
        labels_: cluster of each sample, `-1` for noise.
        core_sample_indices_: indices of the core samples.
        components_: the core samples themselves.
    """

    def __init__(self, eps: float = 0.5, *, min_samples: int = 5) -> None:
        self.eps = eps
        self.min_samples = min_samples

    def fit(
        self, X: ArrayLike, y: ArrayLike | None = None, sample_weight: ArrayLike | None = None
    ) -> DBSCAN:
        r"""Find core points and expand clusters from them.

        Args:
            X: `(n_samples, n_features)` data.
            y: ignored.
            sample_weight: `(n_samples,)` weights $w_i$ (scikit-learn's semantics): point $i$ is
                core when $\sum_{j \in N_\varepsilon(i)} w_j \ge$ `min_samples`, itself
                included, so a row of integer weight $k$ acts as $k$ copies of it and a row of
                weight at least `min_samples` is core on its own. A row of weight 0 still counts
                as a point (it can be core through its neighbours' weight, and a border point).
                Unlike scikit-learn, negative weights are rejected.
        """
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0; got {self.eps}.")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1; got {self.min_samples}.")
        Xa = check_array(X)
        n = len(Xa)
        self.n_features_in_ = Xa.shape[1]
        w = None if sample_weight is None else check_sample_weight(sample_weight, n)
        x_sq = (Xa * Xa).sum(1)
        eps2 = self.eps * self.eps
        # The eps-neighbour graph in CSR form: the neighbours of i are nbr[ptr[i]:ptr[i + 1]].
        # Every point is its own neighbour, so no row is empty and `ptr[:-1]` can be handed to
        # `ufunc.reduceat` as is. Blocks of rows keep the distance matrix small, and only the
        # column indices within eps are kept (rows are implicit).
        counts = np.empty(n, dtype=np.intp)
        cols_l = []
        block = max(1, 2**19 // n)
        for s in range(0, n, block):
            D = _squared_euclidean(Xa[s : s + block], Xa, x_sq[s : s + block], x_sq)
            mask = eps2 >= D
            mask[np.arange(len(D)), np.arange(s, s + len(D))] = True  # rounding must not drop i
            counts[s : s + len(D)] = mask.sum(axis=1)
            # flat indices of the True entries, then the column as flat index mod n: two cheap
            # 1-D passes, about 3x faster than the row-and-column pair of a 2-D `np.nonzero`
            cols_l.append(np.flatnonzero(mask) % n)
        nbr = np.concatenate(cols_l)
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        if w is None:
            core = counts >= self.min_samples
        else:  # the summed weight of each neighbourhood, itself included
            core = np.add.reduceat(w[nbr], starts) >= self.min_samples
        # Clusters = connected components of the core points. Every core point takes the smallest
        # label among its core neighbours (non-core points show the sentinel `n`, larger than any
        # label, so they never win), then follows its label's own label (pointer jumping); repeat
        # until nothing changes. Each round is one gather and one `minimum.reduceat` over the
        # edges, and the rounds needed grow with the log of a cluster's diameter, not its size.
        comp = np.arange(n)
        while True:
            shown = np.where(core, comp, n)
            new = np.where(core, np.minimum(comp, np.minimum.reduceat(shown[nbr], starts)), comp)
            new = new[new]
            if np.array_equal(new, comp):
                break
            comp = new
        big = np.iinfo(np.intp).max
        labels = np.full(n, -1, dtype=np.intp)
        roots = np.unique(comp[core])  # sorted: numbered by their first core point, as sklearn
        labels[core] = np.searchsorted(roots, comp[core])
        # a border point joins the lowest-numbered cluster among its core neighbours (the first
        # one scikit-learn's depth-first expansion reaches)
        border_lab = np.minimum.reduceat(np.where(core, labels, big)[nbr], starts)
        is_border = ~core & (border_lab < big)
        labels[is_border] = border_lab[is_border]
        self.labels_ = labels
        self.core_sample_indices_ = np.nonzero(core)[0]
        self.components_ = Xa[core].copy()
        return self

    def fit_predict(
        self, X: ArrayLike, y: ArrayLike | None = None, sample_weight: ArrayLike | None = None
    ) -> IntArray:
        """Fit (with `sample_weight`, if given) and return `labels_`."""
        return self.fit(X, sample_weight=sample_weight).labels_
