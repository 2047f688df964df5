r"""k-nearest neighbours: classification by vote, regression by average, exact search.

Prediction needs the $k$ training points closest to each query. Two exact searches:

* **brute**: all distances at once, $\lVert x - z\rVert^2 = \lVert x\rVert^2 - 2x^\top z + \lVert z\rVert^2$
  (one matrix product per block of queries), then `numpy.argpartition` for the $k$ smallest;
  $O(nm d)$ work, best in high dimension.
* **kd_tree**: a k-d tree (Bentley, 1975) over the training points with leaves of `leaf_size`
  points. Queries run as a batch: each query first searches its own leaf, which bounds its $k$-th
  distance $r$; only leaves whose bounding box lies within $r$ of the query are then scanned.
  In low dimension this visits a small fraction of the leaves.

In numpy every visited leaf costs a few vectorised calls, so leaves here are large
(`leaf_size=1024` by default, against scikit-learn's 30 for its compiled tree): fewer, bigger
blocks of distances. `algorithm="auto"` picks the tree for $d \le 4$ and at least 10 000
training points, where it measured faster than brute force.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fms_ml._validation import check_array, check_n_features, check_X_y
from fms_ml.base import BaseEstimator, ClassifierMixin, RegressorMixin
from fms_ml.metrics import _squared_euclidean

__all__ = ["KDTree", "KNeighborsClassifier", "KNeighborsRegressor", "NearestNeighbors"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


def _k_smallest(D: FloatArray, k: int) -> tuple[FloatArray, IntArray]:
    """Indices of the k smallest entries per row, sorted by (distance, index)."""
    if k < D.shape[1]:
        part = np.argpartition(D, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(D.shape[1]), D.shape).copy()
    d = np.take_along_axis(D, part, axis=1)
    order = np.lexsort((part, d), axis=1) if d.size else np.zeros_like(part)
    return np.take_along_axis(d, order, axis=1), np.take_along_axis(part, order, axis=1)


class KDTree:
    """A k-d tree for exact Euclidean k-nearest-neighbour queries, searched in batches.

    Built by recursive median splits on the widest dimension until nodes hold at most
    `leaf_size` points; each leaf keeps the bounding box of its points.
    """

    def __init__(self, X: ArrayLike, leaf_size: int = 1024) -> None:
        self.data = check_array(X, "X")
        if leaf_size < 1:
            raise ValueError(f"leaf_size must be >= 1; got {leaf_size}.")
        self.leaf_size = int(leaf_size)
        n = len(self.data)
        leaves: list[IntArray] = []
        stack = [np.arange(n)]
        while stack:
            idx = stack.pop()
            if len(idx) <= self.leaf_size:
                leaves.append(idx)
                continue
            pts = self.data[idx]
            dim = int(np.argmax(pts.max(0) - pts.min(0)))
            half = len(idx) // 2
            part = np.argpartition(pts[:, dim], half)
            stack += [idx[part[half:]], idx[part[:half]]]
        self.leaf_ptr = np.cumsum([0] + [len(leaf) for leaf in leaves])
        self.order = np.concatenate(leaves)
        self.sorted_data = self.data[self.order]
        self.sorted_sq = np.einsum("ij,ij->i", self.sorted_data, self.sorted_data)
        self.lo = np.array([self.data[leaf].min(0) for leaf in leaves])
        self.hi = np.array([self.data[leaf].max(0) for leaf in leaves])
        self.n_leaves = len(leaves)

    def query(self, X: ArrayLike, k: int = 1) -> tuple[FloatArray, IntArray]:
        """Distances and indices of the `k` nearest points, each `(n_queries, k)`, sorted."""
        Q = check_array(X, "X")
        if Q.shape[1] != self.data.shape[1]:
            raise ValueError(f"X has {Q.shape[1]} features; the tree has {self.data.shape[1]}.")
        if not 1 <= k <= len(self.data):
            raise ValueError(f"k must lie in [1, {len(self.data)}]; got {k}.")
        out_d = np.empty((len(Q), k))
        out_i = np.empty((len(Q), k), dtype=np.intp)
        for s in range(0, len(Q), 1024):
            out_d[s : s + 1024], out_i[s : s + 1024] = self._query_block(Q[s : s + 1024], k)
        return np.sqrt(out_d), out_i

    def _scan(
        self, leaf: int, rows: IntArray, q: FloatArray, best_d: FloatArray, best_i: IntArray
    ) -> None:
        """Merge the points of `leaf` into the running k-best lists of query `rows`."""
        lo, hi = self.leaf_ptr[leaf], self.leaf_ptr[leaf + 1]
        D = _squared_euclidean(q[rows], self.sorted_data[lo:hi], B_sq=self.sorted_sq[lo:hi])
        cand_d = np.concatenate([best_d[rows], D], axis=1)
        cand_i = np.concatenate([best_i[rows], np.broadcast_to(self.order[lo:hi], D.shape)], axis=1)
        d, j = _k_smallest(cand_d, best_d.shape[1])
        best_d[rows] = d
        best_i[rows] = np.take_along_axis(cand_i, j, axis=1)

    def _query_block(self, q: FloatArray, k: int) -> tuple[FloatArray, IntArray]:
        m = len(q)
        # squared distance from each query to each leaf's bounding box: (m, n_leaves)
        box = np.zeros((m, self.n_leaves))
        for dim in range(q.shape[1]):
            g = np.maximum(self.lo[None, :, dim] - q[:, None, dim], 0.0)
            g += np.maximum(q[:, None, dim] - self.hi[None, :, dim], 0.0)
            box += g * g
        order = np.argsort(box, axis=1, kind="stable")
        best_d = np.full((m, k), np.inf)
        best_i = np.full((m, k), -1, dtype=np.intp)
        visited = np.zeros((m, self.n_leaves), dtype=bool)
        # phase 1: nearest boxes first, until every query holds k candidates (bounds its k-th distance)
        rank = 0
        while True:
            need = np.nonzero(np.isinf(best_d[:, -1]))[0]
            if need.size == 0 or rank >= self.n_leaves:
                break
            leaves = order[need, rank]
            for leaf in np.unique(leaves):
                rows = need[leaves == leaf]
                self._scan(int(leaf), rows, q, best_d, best_i)
                visited[rows, leaf] = True
            rank += 1
        # phase 2: every unvisited leaf whose box is closer than a query's current k-th distance
        cand = (box <= best_d[:, -1:]) & ~visited
        for leaf in np.nonzero(cand.any(0))[0]:
            rows = np.nonzero(cand[:, leaf])[0]
            rows = rows[box[rows, leaf] <= best_d[rows, -1]]
            if rows.size:
                self._scan(int(leaf), rows, q, best_d, best_i)
        return best_d, best_i


class NearestNeighbors(BaseEstimator):
    """Unsupervised k-nearest-neighbour search (the engine under the kNN estimators).

    Args:
        n_neighbors: default $k$ for queries.
        algorithm: `"auto"`, `"brute"` or `"kd_tree"`.
        leaf_size: most points per k-d tree leaf (large by default; see the module notes).
    """

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        algorithm: Literal["auto", "brute", "kd_tree"] = "auto",
        leaf_size: int = 1024,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.algorithm = algorithm
        self.leaf_size = leaf_size

    def _fit_X(self, Xa: FloatArray) -> None:
        if not isinstance(self.n_neighbors, int | np.integer) or self.n_neighbors < 1:
            raise ValueError(f"n_neighbors must be a positive int; got {self.n_neighbors!r}.")
        if self.algorithm not in ("auto", "brute", "kd_tree"):
            raise ValueError(
                f"algorithm must be 'auto', 'brute' or 'kd_tree'; got {self.algorithm!r}."
            )
        self.n_features_in_ = Xa.shape[1]
        self._fit_X_ = Xa
        self.n_samples_fit_ = len(Xa)
        algo = self.algorithm
        if algo == "auto":
            algo = "kd_tree" if Xa.shape[1] <= 4 and len(Xa) >= 10_000 else "brute"
        self.effective_algorithm_ = algo
        self._tree = KDTree(Xa, self.leaf_size) if algo == "kd_tree" else None
        # squared norms for the brute-force distances; `einsum` sums the products row by row
        # without first materialising `Xa * Xa` (4x faster than `(Xa * Xa).sum(1)` on 1e5 rows)
        self._sq = np.einsum("ij,ij->i", Xa, Xa)

    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> NearestNeighbors:
        """Store (and index) the training points."""
        self._fit_X(check_array(X))
        return self

    def kneighbors(
        self,
        X: ArrayLike | None = None,
        n_neighbors: int | None = None,
        return_distance: bool = True,
    ) -> Any:
        """Distances and indices of the nearest training points, `(n_queries, k)` each.

        With `X=None`, queries are the training points and each point is not its own neighbour.
        """
        k = self.n_neighbors if n_neighbors is None else n_neighbors
        self_query = X is None
        if self_query:
            self._validate_predict_input(np.zeros((1, getattr(self, "n_features_in_", 1))))
            Q = self._fit_X_
            k += 1
        else:
            Q = self._validate_predict_input(X)  # type: ignore[arg-type]
        if k > self.n_samples_fit_:
            raise ValueError(
                f"n_neighbors={k - int(self_query)} must be <= the number of training samples "
                f"({self.n_samples_fit_ - int(self_query)})."
            )
        if self._tree is not None:
            dist, ind = self._tree.query(Q, k)
        else:
            dist = np.empty((len(Q), k))
            ind = np.empty((len(Q), k), dtype=np.intp)
            block = max(1, int(2**19 // max(1, self.n_samples_fit_)))  # ~4 MB distance blocks
            for s in range(0, len(Q), block):
                D = _squared_euclidean(Q[s : s + block], self._fit_X_, B_sq=self._sq)
                d, i = _k_smallest(D, k)
                dist[s : s + block], ind[s : s + block] = np.sqrt(d), i
        if self_query:
            # drop each point itself (it may tie with a duplicate: drop the occurrence of its index)
            is_self = ind == np.arange(len(Q))[:, None]
            drop = np.where(is_self.any(1), is_self.argmax(1), k - 1)
            keep = np.ones_like(ind, dtype=bool)
            keep[np.arange(len(Q)), drop] = False
            dist = dist[keep].reshape(len(Q), k - 1)
            ind = ind[keep].reshape(len(Q), k - 1)
        return (dist, ind) if return_distance else ind


def _weights(dist: FloatArray, weights: str) -> FloatArray:
    if weights == "uniform":
        return np.ones_like(dist)
    with np.errstate(divide="ignore"):
        w = 1.0 / dist
    zero = np.isinf(w)
    rows = zero.any(1)
    w[rows] = zero[rows].astype(float)  # exact matches take all the weight
    return w


class KNeighborsClassifier(ClassifierMixin, NearestNeighbors):
    r"""Classify by a (distance-weighted) vote among the $k$ nearest training points.

    $p(c \mid x) = \sum_{j \in N_k(x)} w_j [y_j = c] / \sum_j w_j$ with $w_j = 1$ (`"uniform"`)
    or $1/d_j$ (`"distance"`); ties go to the smallest class, as in scikit-learn.
    """

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        weights: Literal["uniform", "distance"] = "uniform",
        algorithm: Literal["auto", "brute", "kd_tree"] = "auto",
        leaf_size: int = 1024,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.algorithm = algorithm
        self.leaf_size = leaf_size

    def fit(self, X: ArrayLike, y: ArrayLike) -> KNeighborsClassifier:  # type: ignore[override]
        """Store the training set."""
        if self.weights not in ("uniform", "distance"):
            raise ValueError(f"weights must be 'uniform' or 'distance'; got {self.weights!r}.")
        Xa, ya = check_X_y(X, y)
        self._y = self._encode_labels(ya)
        self._fit_X(Xa)
        return self

    def predict_proba(self, X: ArrayLike) -> FloatArray:
        """Weighted class frequencies among the neighbours, `(n_samples, n_classes)`."""
        dist, ind = self.kneighbors(X)
        w = _weights(dist, self.weights)
        K = self.classes_.size
        P = np.zeros((len(ind), K))
        rows = np.repeat(np.arange(len(ind)), ind.shape[1])
        np.add.at(P, (rows, self._y[ind].ravel()), w.ravel())
        return np.asarray(P / P.sum(1, keepdims=True))

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """The class with the largest (weighted) vote."""
        proba = self.predict_proba(X)
        return np.asarray(self.classes_[proba.argmax(1)])


class KNeighborsRegressor(RegressorMixin, NearestNeighbors):
    """Predict the (distance-weighted) mean target of the $k$ nearest training points."""

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        weights: Literal["uniform", "distance"] = "uniform",
        algorithm: Literal["auto", "brute", "kd_tree"] = "auto",
        leaf_size: int = 1024,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.algorithm = algorithm
        self.leaf_size = leaf_size

    def fit(self, X: ArrayLike, y: ArrayLike) -> KNeighborsRegressor:  # type: ignore[override]
        """Store the training set."""
        if self.weights not in ("uniform", "distance"):
            raise ValueError(f"weights must be 'uniform' or 'distance'; got {self.weights!r}.")
        Xa, ya = check_X_y(X, y, y_numeric=True)
        self._y = ya
        self._fit_X(Xa)
        return self

    def predict(self, X: ArrayLike) -> FloatArray:
        """Weighted mean of the neighbours' targets."""
        dist, ind = self.kneighbors(X)
        w = _weights(dist, self.weights)
        return np.asarray((w * self._y[ind]).sum(1) / w.sum(1))


_ = check_n_features  # re-exported validation helper used through BaseEstimator
