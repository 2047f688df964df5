r"""CART decision trees (Breiman et al., 1984), grown level by level with numpy.

A tree is greedy empirical-risk minimisation: each node takes the split $x_j \le t$ that most
reduces the weighted impurity of its children,

$$\Delta = N_t\, i(t) - N_L\, i(L) - N_R\, i(R),$$

with $i$ = Gini $1 - \sum_k p_k^2$, entropy $-\sum_k p_k \log p_k$, or squared error
$\frac1N \sum (y - \bar y)^2$. Thresholds are midpoints between consecutive distinct values.

**How the search is vectorised.** Every feature column is sorted once. The samples of all the
nodes at one depth live in one array per feature, each node a contiguous segment sorted by that
feature. One cumulative sum over the array gives, for every node and every feature at once, the
class counts (or target sums) left of every candidate threshold; subtracting each segment's start
value makes them per node. A segment-wise maximum then picks every node's best split, and a
stable partition by "goes left" (two more cumulative sums) builds the next level's segments, still
sorted. Features are stored as float32, as in scikit-learn, so thresholds fall in the same places.
So a whole level costs a handful of $O(n\,p\,K)$ array operations and there is no Python
loop over nodes or thresholds.

**Sample weights.** With `fit(X, y, sample_weight=s)` every count above becomes a sum of
weights: $N_t = \sum_{i \in t} s_i$, class proportions $p_k = \sum_{i \in t,\, y_i = k} s_i / N_t$,
and the weighted mean $\bar y_t = \sum_{i\in t} s_i y_i / N_t$ and variance
$\sum_{i\in t} s_i (y_i - \bar y_t)^2 / N_t$; a leaf predicts the weighted class proportions or the
weighted mean. Rows of weight 0 are dropped first. As in scikit-learn, `min_samples_split` and
`min_samples_leaf` still count rows (of positive weight), not weight, and
`min_impurity_decrease` is relative to the total weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fms_ml._validation import (
    check_random_state,
    check_sample_weight,
    check_X_y,
    compute_class_weight,
)
from fms_ml.base import BaseEstimator, ClassifierMixin, RegressorMixin

__all__ = ["DecisionTreeClassifier", "DecisionTreeRegressor", "Tree", "leaf_values"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]
_FEATURE_THRESHOLD = 1e-7  # two values closer than this are not split between (scikit-learn's)


@dataclass
class Tree:
    """The fitted tree as flat arrays (node 0 is the root; leaves have `children_left == -1`).

    Attributes:
        children_left, children_right: child node ids, `-1` at leaves.
        feature, threshold: the split `X[:, feature] <= threshold` goes left.
        value: `(n_nodes, n_outputs)`: class counts (classification) or mean target (regression),
            weighted by the sample weights when there are any.
        impurity, n_node_samples: impurity and training samples (rows) of each node.
        weighted_n_node_samples: the sum of the sample weights in each node (bootstrap counts for
            a forest's trees; `n_node_samples` when unweighted).
    """

    children_left: IntArray = field(default_factory=lambda: np.zeros(0, np.intp))
    children_right: IntArray = field(default_factory=lambda: np.zeros(0, np.intp))
    feature: IntArray = field(default_factory=lambda: np.zeros(0, np.intp))
    threshold: FloatArray = field(default_factory=lambda: np.zeros(0))
    value: FloatArray = field(default_factory=lambda: np.zeros((0, 1)))
    impurity: FloatArray = field(default_factory=lambda: np.zeros(0))
    n_node_samples: IntArray = field(default_factory=lambda: np.zeros(0, np.intp))
    weighted_n_node_samples: FloatArray = field(default_factory=lambda: np.zeros(0))
    max_depth: int = 0

    @property
    def node_count(self) -> int:
        """Number of nodes."""
        return len(self.feature)

    @property
    def n_leaves(self) -> int:
        """Number of leaves."""
        return int(np.sum(self.children_left == -1))

    def apply(self, X: NDArray[Any]) -> IntArray:
        """Leaf id reached by each row of `X`, descending all rows one level at a time."""
        X = np.asarray(X, dtype=np.float32)
        node = np.zeros(len(X), dtype=np.intp)
        rows = np.arange(len(X))
        for _ in range(self.max_depth + 1):
            inner = self.children_left[node[rows]] != -1
            rows = rows[inner]
            if rows.size == 0:
                break
            nd = node[rows]
            left = X[rows, self.feature[nd]] <= self.threshold[nd]
            node[rows] = np.where(left, self.children_left[nd], self.children_right[nd])
        return node


def _impurity(
    kind: str, counts: FloatArray, n: FloatArray, sq: FloatArray | None = None
) -> FloatArray:
    """Node impurity from class counts `(..., K)` (or target sums and sums of squares)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "gini":
            p = counts / n[..., None]
            return np.where(n > 0, 1.0 - (p * p).sum(-1), 0.0)
        if kind == "entropy":
            p = counts / n[..., None]
            logp = np.where(p > 0, np.log2(np.where(p > 0, p, 1.0)), 0.0)
            return np.where(n > 0, -(p * logp).sum(-1), 0.0)
        mean = counts[..., 0] / n
        assert sq is not None
        return np.where(n > 0, sq / n - mean * mean, 0.0)


def _grow(
    X: FloatArray,
    Y: FloatArray,
    kind: str,
    sample_weight: FloatArray | None = None,
    *,
    max_depth: int | None,
    min_samples_split: int,
    min_samples_leaf: int,
    min_impurity_decrease: float,
    max_features: int,
    rng: np.random.Generator,
    min_weight_leaf: float = 0.0,
) -> tuple[Tree, FloatArray]:
    """Grow one tree on `X` `(n, p)` and targets `Y` `(n, K)` (one-hot, or `(n, 1)` for regression).

    With `sample_weight`, rows of weight 0 are left out (as scikit-learn's splitter does, so they
    count towards no `min_samples_*` control) and the others are weighted.

    Returns the tree and the (unnormalised) impurity-decrease importance of each feature.
    """
    if sample_weight is None:
        roots, weights = [np.arange(len(X))], None
    else:
        rows = np.nonzero(sample_weight > 0)[0]
        roots, weights = [rows], [sample_weight[rows]]
    trees = _grow_many(
        X,
        Y,
        kind,
        roots,
        weights,
        max_depth=max_depth,
        min_samples_split=min_samples_split,
        min_samples_leaf=min_samples_leaf,
        min_impurity_decrease=min_impurity_decrease,
        max_features=max_features,
        rng=rng,
        min_weight_leaf=min_weight_leaf,
    )
    return trees[0]


def _grow_many(
    X: NDArray[Any],
    Y: FloatArray,
    kind: str,
    roots: list[IntArray],
    weights: list[FloatArray] | None = None,
    *,
    max_depth: int | None,
    min_samples_split: int,
    min_samples_leaf: int,
    min_impurity_decrease: float,
    max_features: int,
    rng: np.random.Generator,
    min_weight_leaf: float = 0.0,
) -> list[tuple[Tree, FloatArray]]:
    """Grow one tree per row-index array in `roots` (e.g. bootstrap samples), all at once.

    The trees' nodes share the level arrays (each root is one more segment), so a forest pays the
    per-level numpy overhead once, not once per tree. `weights` (one array per root, e.g. how
    often each row was drawn into a bootstrap sample) make every row count that many times, as
    scikit-learn's `sample_weight`: a bootstrap sample holds only about 63% distinct rows, so a
    weighted tree works on 37% fewer entries than one grown on the copied rows, and finds the
    same splits (the class counts, sums and sizes it compares are the same). `min_samples_split`
    and `min_samples_leaf` then count distinct rows, as in scikit-learn's forests, and
    `min_weight_leaf` is the smallest total weight of a child (`min_weight_fraction_leaf` times
    the total weight).
    """
    sizes = np.array([len(r) for r in roots])
    B = len(roots)
    rows_all = np.concatenate(roots)
    X = np.asarray(X, dtype=np.float32)[rows_all]  # scikit-learn's trees use float32 features too
    Y = Y[rows_all]
    n, p = X.shape
    w = None if weights is None else np.concatenate(weights).astype(np.float64)
    regression = kind == "squared_error"
    y2 = (Y[:, 0] ** 2) if regression else None
    if w is not None:  # weighted statistics: every sum below counts row i w_i times
        Y = Y * w[:, None]
        y2 = None if y2 is None else y2 * w
    depth_cap = np.iinfo(np.int64).max if max_depth is None else max_depth
    msl = max(1, min_samples_leaf)

    # node storage (lists grown level by level)
    left_l: list[int] = []
    right_l: list[int] = []
    feat_l: list[int] = []
    thr_l: list[float] = []
    val_l: list[Any] = []
    imp_l: list[float] = []
    nsamp_l: list[int] = []
    tree_l: list[int] = []
    depth_l: list[int] = []

    wnsamp_l: list[float] = []

    def new_nodes(
        tot: FloatArray,
        cnt: FloatArray,
        rows: IntArray,
        sq: FloatArray | None,
        tree_id: IntArray,
        dep: int,
    ) -> IntArray:
        ids = np.arange(len(feat_l), len(feat_l) + len(cnt))
        imp = _impurity(kind, tot, cnt, sq)
        m = len(cnt)
        tree_l.extend(tree_id.tolist())
        depth_l.extend([dep] * m)
        left_l.extend([-1] * m)
        right_l.extend([-1] * m)
        feat_l.extend([-2] * m)
        thr_l.extend([-2.0] * m)
        val_l.extend(list(tot / cnt[:, None] if regression else tot))
        imp_l.extend(imp.tolist())
        nsamp_l.extend(rows.tolist())
        wnsamp_l.extend(cnt.tolist())
        return ids

    # (p, N): row ids sorted per feature within each root's block, and the sorted values
    seg_start = np.r_[0, np.cumsum(sizes)[:-1]]
    seg_len = sizes
    itype = np.int32 if n < 2**31 else np.int64  # half the memory traffic of int64
    S = np.concatenate(
        [
            (np.argsort(X[a : a + m], axis=0, kind="stable") + a).T.astype(itype)
            for a, m in zip(seg_start.tolist(), sizes.tolist(), strict=True)
        ],
        axis=1,
    )
    # feature values are gathered from `XT` when a level needs them rather than carried along
    # (and re-partitioned) with `S`: each level then moves one `(p, N)` array, not two
    XT = np.ascontiguousarray(X.T)
    root_tot = np.add.reduceat(Y, seg_start)
    root_sq = None if y2 is None else np.add.reduceat(y2, seg_start)
    # seg_w: weighted size of each segment (its number of rows when unweighted)
    seg_w = seg_len.astype(np.float64) if w is None else np.add.reduceat(w, seg_start)
    root_w = seg_w.copy()  # per tree: the total that min_impurity_decrease is relative to
    seg_node = new_nodes(root_tot, seg_w, seg_len, root_sq, np.arange(B), 0)
    seg_tree = np.arange(B)
    seg_imp = np.asarray(imp_l)
    importances = np.zeros((B, p))
    depth = 0
    while seg_len.size:
        n_seg, N = seg_len.size, int(seg_len.sum())
        seg_of = np.repeat(np.arange(n_seg), seg_len)
        node_imp = seg_imp
        can_split = (
            (seg_len >= min_samples_split)
            & (seg_len >= 2 * msl)
            & (node_imp > 1e-7 if not regression else node_imp > 0.0)
            & (depth < depth_cap)
            & (seg_w >= 2.0 * min_weight_leaf)
        )
        if not can_split.any():
            break
        # candidate features: all, or `max_features` drawn per node (rows of the arrays below)
        if max_features < p:
            pick = np.argsort(rng.random((n_seg, p)), axis=1)[:, :max_features]  # (n_seg, F)
        if not can_split.all():
            # Nodes that cannot split (pure, too small, at max depth) are finished leaves: drop
            # their entries now, so that the search and the partition below touch only the
            # nodes that may still split. In a fully grown tree these are many at every level.
            S = S[:, can_split[seg_of]]
            seg_len, seg_node, seg_tree = (
                seg_len[can_split],
                seg_node[can_split],
                seg_tree[can_split],
            )
            seg_imp, seg_w = seg_imp[can_split], seg_w[can_split]
            if max_features < p:
                pick = pick[can_split]
            seg_start = np.r_[0, np.cumsum(seg_len)[:-1]]
            n_seg, N = seg_len.size, int(seg_len.sum())
            seg_of = np.repeat(np.arange(n_seg), seg_len)
            node_imp, can_split = seg_imp, np.ones(n_seg, dtype=bool)
        if max_features < p:
            feats = pick[seg_of].T  # (F, N): feature examined in row r at entry e
            cols = np.arange(N)[None, :]
            Sc = S[feats, cols]
            Xc = XT[feats, Sc]
        else:
            feats = None
            Sc, Xc = S, np.take_along_axis(XT, S, axis=1)
        F = Sc.shape[0]
        # cumulative statistics in every candidate column: (F, N, K)
        cum = np.cumsum(Y[Sc], axis=1)
        first = seg_start[seg_of]
        seg_base = cum[:, seg_start - 1]  # (F, n_seg, K): stats before each segment
        seg_base[:, seg_start == 0] = 0.0
        tot_seg = cum[:, seg_start + seg_len - 1] - seg_base
        left = cum - np.repeat(seg_base, seg_len, axis=1)
        right = np.repeat(tot_seg, seg_len, axis=1) - left
        n_left = (np.arange(N) - first + 1).astype(np.float64)  # rows left of each threshold
        n_right = seg_len[seg_of] - n_left
        if w is None:  # weighted sizes left and right: (1, N), or (F, N) with weights
            w_left, w_right = n_left[None], n_right[None]
        else:
            cw = np.cumsum(w[Sc], axis=1)
            cw_base = np.where(seg_start > 0, cw[:, seg_start - 1], 0.0)
            w_left = cw - np.repeat(cw_base, seg_len, axis=1)
            w_right = seg_w[seg_of][None] - w_left
        with np.errstate(divide="ignore", invalid="ignore"):
            if kind == "entropy":

                def plogp(c: FloatArray, m: FloatArray) -> FloatArray:
                    q = c / m[:, :, None]
                    return np.asarray(
                        np.where(c > 0, c * np.log(np.where(q > 0, q, 1.0)), 0.0).sum(-1)
                    )

                score = plogp(left, w_left) + plogp(right, w_right)
            else:
                # `einsum` forms the sums of squares without the `(F, N, K)` temporaries
                score = np.einsum("fnk,fnk->fn", left, left) / w_left
                score += np.einsum("fnk,fnk->fn", right, right) / w_right
        # valid thresholds: inside the segment, between distinct values, leaves big enough
        last_in_seg = n_left >= seg_len[seg_of]
        nxt = np.concatenate([Xc[:, 1:], np.full((F, 1), np.inf)], axis=1)
        valid = (~last_in_seg)[None] & (nxt > Xc + _FEATURE_THRESHOLD)
        valid &= (n_left >= msl)[None] & (n_right >= msl)[None] & can_split[seg_of][None]
        if min_weight_leaf > 0:
            valid &= (w_left >= min_weight_leaf) & (w_right >= min_weight_leaf)
        score = np.where(valid, score, -np.inf)
        best_r = np.argmax(score, axis=0)  # (N,) best candidate row at each position
        best_s = score[best_r, np.arange(N)]
        seg_max = np.maximum.reduceat(best_s, seg_start)
        cand = np.where((best_s == seg_max[seg_of]) & np.isfinite(best_s), np.arange(N), N)
        pos = np.minimum.reduceat(cand, seg_start)  # chosen split position per segment (N = none)
        has = pos < N
        posc = np.where(has, pos, seg_start)
        r = best_r[posc]
        f = r if feats is None else feats[r, posc]
        nl = n_left[posc]
        wl = w_left[r if w is not None else 0, posc]
        wr = seg_w - wl
        L = left[r, posc]
        R = right[r, posc]
        sq_l = sq_r = None
        if regression:
            csq = np.cumsum(y2[Sc], axis=1)  # type: ignore[index]
            prev_sq = np.concatenate([np.zeros((F, 1)), csq[:, :-1]], axis=1)
            sq_l = csq[r, posc] - prev_sq[r, seg_start]
            sq_tot = csq[r, seg_start + seg_len - 1] - prev_sq[r, seg_start]
            sq_r = sq_tot - sq_l
        imp_L = _impurity(kind, L, wl, sq_l)
        imp_R = _impurity(kind, R, wr, sq_r)
        decrease = seg_w * node_imp - wl * imp_L - wr * imp_R  # N_t i(t) - N_L i(L) - N_R i(R)
        rel = decrease / root_w[seg_tree]
        split = has & (rel >= min_impurity_decrease - 1e-12 if min_impurity_decrease > 0 else has)
        if not split.any():
            break
        # record the splits and create children
        sidx = np.nonzero(split)[0]
        xv = Xc[r[sidx], posc[sidx]]
        xn = Xc[r[sidx], posc[sidx] + 1]
        xv, xn = xv.astype(np.float64), xn.astype(np.float64)
        thr = xv / 2.0 + xn / 2.0
        thr = np.where((thr == xn) | ~np.isfinite(thr), xv, thr)
        tid = seg_tree[sidx]
        np.add.at(importances, (tid, f[sidx]), decrease[sidx])
        nl_s = nl[sidx].astype(np.intp)
        nr_s = seg_len[sidx] - nl_s
        lids = new_nodes(
            L[sidx], wl[sidx], nl_s, None if sq_l is None else sq_l[sidx], tid, depth + 1
        )
        rids = new_nodes(
            R[sidx], wr[sidx], nr_s, None if sq_r is None else sq_r[sidx], tid, depth + 1
        )
        for k, t in enumerate(sidx):
            nd = seg_node[t]
            feat_l[nd] = int(f[t])
            thr_l[nd] = float(thr[k])
            left_l[nd] = int(lids[k])
            right_l[nd] = int(rids[k])
        # stable partition of every column: left entries of each split segment, then right ones
        keep_seg = split
        go_left = np.zeros(n, dtype=bool)
        ent = np.nonzero(keep_seg[seg_of])[0]
        sof = seg_of[ent]
        go_left[S[f[sof], ent]] = ent <= pos[sof]
        keep = keep_seg[seg_of]
        S = S[:, keep]
        GL = go_left[S]  # (p, N')
        new_len_l = nl[sidx].astype(np.intp)
        new_len_r = (seg_len[sidx] - new_len_l).astype(np.intp)
        lens = np.empty(2 * sidx.size, dtype=np.intp)
        lens[0::2], lens[1::2] = new_len_l, new_len_r
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        kept_len = seg_len[sidx]
        seg_first = np.concatenate([[0], np.cumsum(kept_len)[:-1]])
        idx_in = np.arange(S.shape[1]) - np.repeat(seg_first, kept_len)  # position in segment
        cl = np.cumsum(GL, axis=1, dtype=np.int32)  # left entries so far, per column
        # left entries before each segment: every column holds the same samples in each
        # segment (only their order differs), so one column's count serves all `p` of them
        before = np.where(seg_first > 0, cl[0, seg_first - 1], 0)
        before_e = np.repeat(before, kept_len)
        # a left entry goes to (left child's start) + (left entries up to it in its segment) - 1,
        # a right one to (right child's start) + (its position) - (left entries up to it); the
        # per-entry constants are folded into two 1-D arrays so each column costs three passes
        off_l = (np.repeat(starts[0::2], kept_len) - 1 - before_e)[None]
        off_r = (np.repeat(starts[1::2], kept_len) + idx_in + before_e)[None]
        new_pos = np.where(GL, cl + off_l, off_r - cl)
        # scatter through flat indices: a 1-D fancy assignment is about 2x faster than the
        # equivalent 2-D one `S2[rows, new_pos] = S`
        new_pos += np.arange(0, p * S.shape[1], S.shape[1])[:, None]
        S2 = np.empty(S.shape, dtype=S.dtype)  # C order, so that `ravel` below is a view
        S2.ravel()[new_pos.ravel()] = S.ravel()
        S = S2
        seg_start, seg_len = starts, lens
        seg_w = np.empty(2 * sidx.size)
        seg_w[0::2], seg_w[1::2] = wl[sidx], wr[sidx]
        seg_node = np.empty(2 * sidx.size, dtype=np.intp)
        seg_node[0::2], seg_node[1::2] = lids, rids
        seg_tree = np.repeat(tid, 2)
        seg_imp = np.empty(2 * sidx.size)
        seg_imp[0::2], seg_imp[1::2] = imp_L[sidx], imp_R[sidx]
        depth += 1
    # split the shared node arrays into one Tree per root (node ids renumbered per tree)
    tree_of = np.asarray(tree_l, dtype=np.intp)
    left_a, right_a = np.asarray(left_l, dtype=np.intp), np.asarray(right_l, dtype=np.intp)
    feat_a, thr_a = np.asarray(feat_l, dtype=np.intp), np.asarray(thr_l, dtype=np.float64)
    val_a = np.asarray(val_l, dtype=np.float64).reshape(len(feat_l), -1)
    imp_a, nsamp_a = np.asarray(imp_l), np.asarray(nsamp_l, dtype=np.intp)
    wnsamp_a = np.asarray(wnsamp_l, dtype=np.float64)
    depth_a = np.asarray(depth_l)
    local = np.empty(len(tree_of), dtype=np.intp)
    out = []
    for b in range(B):
        ids = np.nonzero(tree_of == b)[0]
        local[ids] = np.arange(len(ids))
        lf, rt = left_a[ids], right_a[ids]
        tree = Tree(
            children_left=np.where(lf >= 0, local[np.maximum(lf, 0)], -1),
            children_right=np.where(rt >= 0, local[np.maximum(rt, 0)], -1),
            feature=feat_a[ids],
            threshold=thr_a[ids],
            value=val_a[ids],
            impurity=imp_a[ids],
            n_node_samples=nsamp_a[ids],
            weighted_n_node_samples=wnsamp_a[ids],
            max_depth=int(depth_a[ids].max()),
        )
        out.append((tree, importances[b]))
    return out


def leaf_values(trees: list[Tree], X: NDArray[Any], *, normalise: bool = False) -> FloatArray:
    """Leaf values of many trees at once: `(n_samples, n_trees, n_outputs)`.

    For shallow trees (boosting) the trees' node arrays are stacked end to end and every
    (sample, tree) pair descends one level per step, so the whole ensemble is traversed in
    `max_depth` vectorised steps instead of one traversal per tree; deep trees are traversed one
    at a time. With `normalise`, each leaf's value is divided by its sum
    (class counts to frequencies).
    """
    X = np.asarray(X, dtype=np.float32)
    if max(t.max_depth for t in trees) > 12:
        # deep trees (forests): per-tree traversal, where finished rows drop out at each level,
        # costs less than carrying every (sample, tree) pair through all the levels
        cols = []
        for t in trees:
            v = t.value[t.apply(X)]
            cols.append(v / v.sum(1, keepdims=True) if normalise else v)
        return np.stack(cols, axis=1)
    sizes = np.array([t.node_count for t in trees])
    offs = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    left = np.concatenate(
        [
            np.where(t.children_left >= 0, t.children_left + o, -1)
            for t, o in zip(trees, offs, strict=True)
        ]
    )
    right = np.concatenate(
        [
            np.where(t.children_right >= 0, t.children_right + o, -1)
            for t, o in zip(trees, offs, strict=True)
        ]
    )
    feat = np.maximum(np.concatenate([t.feature for t in trees]), 0)
    thr = np.concatenate([t.threshold for t in trees])
    val = np.concatenate([t.value for t in trees])
    if normalise:
        val = val / val.sum(1, keepdims=True)
    depth = max(t.max_depth for t in trees)
    T = len(trees)
    out = np.empty((len(X), T, val.shape[1]))
    block = max(1, (1 << 20) // T)
    for s in range(0, len(X), block):
        Xb = X[s : s + block]
        node = np.broadcast_to(offs, (len(Xb), T)).copy()
        for _ in range(depth):
            lf = left[node]
            inner = lf >= 0
            if not inner.any():
                break
            go_left = np.take_along_axis(Xb, feat[node], axis=1) <= thr[node]
            node = np.where(inner, np.where(go_left, lf, right[node]), node)
        out[s : s + block] = val[node]
    return out


def _resolve_max_features(max_features: Any, p: int, default: Any) -> int:
    mf = default if max_features is None else max_features
    if mf is None:
        return p
    if mf == "sqrt":
        return max(1, int(np.sqrt(p)))
    if mf == "log2":
        return max(1, int(np.log2(p)))
    if isinstance(mf, float):
        if not 0.0 < mf <= 1.0:
            raise ValueError(f"max_features as a float must lie in (0, 1]; got {mf}.")
        return max(1, int(mf * p))
    if isinstance(mf, int | np.integer) and 1 <= mf <= p:
        return int(mf)
    raise ValueError(
        f"max_features must be None, 'sqrt', 'log2', a float in (0, 1] or an int in [1, {p}]; got {mf!r}."
    )


class _BaseTree(BaseEstimator):
    tree_: Tree
    _criteria: tuple[str, ...] = ()

    def _check_params(self) -> None:
        if self.criterion not in self._criteria:  # type: ignore[attr-defined]
            raise ValueError(f"criterion must be one of {self._criteria}; got {self.criterion!r}.")  # type: ignore[attr-defined]
        if self.max_depth is not None and (self.max_depth < 1):  # type: ignore[attr-defined]
            raise ValueError(f"max_depth must be None or >= 1; got {self.max_depth}.")  # type: ignore[attr-defined]
        if self.min_samples_split < 2:  # type: ignore[attr-defined]
            raise ValueError(f"min_samples_split must be >= 2; got {self.min_samples_split}.")  # type: ignore[attr-defined]
        if self.min_samples_leaf < 1:  # type: ignore[attr-defined]
            raise ValueError(f"min_samples_leaf must be >= 1; got {self.min_samples_leaf}.")  # type: ignore[attr-defined]
        if self.min_impurity_decrease < 0:  # type: ignore[attr-defined]
            raise ValueError("min_impurity_decrease must be >= 0.")
        if not 0.0 <= self.min_weight_fraction_leaf <= 0.5:  # type: ignore[attr-defined]
            raise ValueError(
                "min_weight_fraction_leaf must lie in [0, 0.5]; got "
                f"{self.min_weight_fraction_leaf}."  # type: ignore[attr-defined]
            )

    def _fit_tree(
        self,
        X: FloatArray,
        Y: FloatArray,
        default_mf: Any,
        sample_weight: FloatArray | None = None,
    ) -> None:
        self._check_params()
        self.n_features_in_ = X.shape[1]
        self.max_features_ = _resolve_max_features(self.max_features, X.shape[1], default_mf)  # type: ignore[attr-defined]
        self.tree_, imp = _grow(
            X,
            Y,
            self.criterion,  # type: ignore[attr-defined]
            sample_weight,
            max_depth=self.max_depth,  # type: ignore[attr-defined]
            min_samples_split=int(self.min_samples_split),  # type: ignore[attr-defined]
            min_samples_leaf=int(self.min_samples_leaf),  # type: ignore[attr-defined]
            min_impurity_decrease=float(self.min_impurity_decrease),  # type: ignore[attr-defined]
            max_features=self.max_features_,
            rng=check_random_state(self.random_state),  # type: ignore[attr-defined]
            min_weight_leaf=float(self.min_weight_fraction_leaf)  # type: ignore[attr-defined]
            * (len(X) if sample_weight is None else float(sample_weight.sum())),
        )
        total = imp.sum()
        self.feature_importances_ = imp / total if total > 0 else imp

    def apply(self, X: ArrayLike) -> IntArray:
        """Index of the leaf each sample lands in."""
        Xa = self._validate_predict_input(X)
        return self.tree_.apply(Xa)

    def get_depth(self) -> int:
        """Depth of the fitted tree (a lone root has depth 0)."""
        return self.tree_.max_depth

    def get_n_leaves(self) -> int:
        """Number of leaves of the fitted tree."""
        return self.tree_.n_leaves


class DecisionTreeClassifier(ClassifierMixin, _BaseTree):
    """CART classification tree (Gini or entropy).

    Args:
        criterion: `"gini"`, `"entropy"` or `"log_loss"` (same as entropy).
        max_depth: depth limit (`None`: grow until pure or limited by the sample controls).
        min_samples_split: smallest node that may be split.
        min_samples_leaf: smallest allowed child.
        min_impurity_decrease: split only if $\\frac{N_t}{N}\\big(i(t) - \\frac{N_L}{N_t} i(L) - \\frac{N_R}{N_t} i(R)\\big)$ reaches it.
        max_features: features drawn at random per node (`None` = all; `"sqrt"`, `"log2"`, int, float).
        random_state: seed for the feature draws.
        min_weight_fraction_leaf: smallest allowed child as a fraction of the total sample weight
            (of `n_samples` when unweighted), as in scikit-learn.
        class_weight: `None`, `"balanced"` or a dict `{label: weight}`, multiplied into the
            sample weights. `"balanced"` weighs class $k$ by $n / (K n_k)$ with $n_k$ its number
            of samples (not their weights: scikit-learn's trees count them so).

    Attributes:
        classes_: the sorted class labels.
        n_classes_: number of classes.
        tree_: the fitted [`Tree`][fms_ml.tree.Tree].
        feature_importances_: normalised total impurity decrease per feature.
    """

    _criteria = ("gini", "entropy", "log_loss")

    def __init__(
        self,
        *,
        criterion: Literal["gini", "entropy", "log_loss"] = "gini",
        max_depth: int | None = None,
        min_samples_split: int = 2,
        min_samples_leaf: int = 1,
        min_impurity_decrease: float = 0.0,
        max_features: int | float | str | None = None,
        random_state: Any = None,
        min_weight_fraction_leaf: float = 0.0,
        class_weight: Literal["balanced"] | dict[Any, float] | None = None,
    ) -> None:
        self.criterion = criterion
        self.max_depth = max_depth
        self.min_samples_split = min_samples_split
        self.min_samples_leaf = min_samples_leaf
        self.min_weight_fraction_leaf = min_weight_fraction_leaf
        self.min_impurity_decrease = min_impurity_decrease
        self.max_features = max_features
        self.random_state = random_state
        self.class_weight = class_weight

    def fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> DecisionTreeClassifier:
        """Grow the tree; with `sample_weight`, on weighted class counts (see the module)."""
        Xa, ya = check_X_y(X, y)
        sw = None if sample_weight is None else check_sample_weight(sample_weight, len(Xa))
        codes = self._encode_labels(ya)
        self.n_classes_ = self.classes_.size
        if self.class_weight is not None:
            cw = compute_class_weight(self.class_weight, self.classes_, codes)[codes]
            sw = cw if sw is None else sw * cw
            if not (sw > 0).any():
                raise ValueError("class_weight times sample_weight is zero for every sample.")
        Y = np.zeros((len(codes), self.n_classes_))
        Y[np.arange(len(codes)), codes] = 1.0
        crit = self.criterion
        if crit == "log_loss":
            self.criterion = "entropy"
        try:
            self._fit_tree(Xa, Y, None, sw)
        finally:
            self.criterion = crit
        return self

    def predict_proba(self, X: ArrayLike) -> FloatArray:
        """Class frequencies of the training samples in each sample's leaf."""
        leaves = self.apply(X)
        v = self.tree_.value[leaves]
        return np.asarray(v / v.sum(1, keepdims=True))

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """Majority class of the leaf."""
        leaves = self.apply(X)
        return np.asarray(self.classes_[self.tree_.value[leaves].argmax(1)])


class DecisionTreeRegressor(RegressorMixin, _BaseTree):
    """CART regression tree (squared error); leaves predict the mean training target.

    Same controls as [`DecisionTreeClassifier`][fms_ml.tree.DecisionTreeClassifier].
    """

    _criteria = ("squared_error",)

    def __init__(
        self,
        *,
        criterion: Literal["squared_error"] = "squared_error",
        max_depth: int | None = None,
        min_samples_split: int = 2,
        min_samples_leaf: int = 1,
        min_impurity_decrease: float = 0.0,
        max_features: int | float | str | None = None,
        random_state: Any = None,
        min_weight_fraction_leaf: float = 0.0,
    ) -> None:
        self.criterion = criterion
        self.max_depth = max_depth
        self.min_samples_split = min_samples_split
        self.min_samples_leaf = min_samples_leaf
        self.min_weight_fraction_leaf = min_weight_fraction_leaf
        self.min_impurity_decrease = min_impurity_decrease
        self.max_features = max_features
        self.random_state = random_state

    def fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> DecisionTreeRegressor:
        """Grow the tree; with `sample_weight`, on weighted means and variances (see the module)."""
        Xa, ya = check_X_y(X, y, y_numeric=True)
        sw = None if sample_weight is None else check_sample_weight(sample_weight, len(Xa))
        self._fit_tree(Xa, ya.reshape(-1, 1), None, sw)
        return self

    def predict(self, X: ArrayLike) -> FloatArray:
        """Mean training target of each sample's leaf."""
        leaves = self.apply(X)
        return np.asarray(self.tree_.value[leaves, 0])
