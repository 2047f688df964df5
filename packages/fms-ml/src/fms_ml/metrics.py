r"""Metrics for classification, regression and clustering.

Each function mirrors its scikit-learn namesake and is tested equal to it on random inputs.

Classification metrics start from the confusion matrix $C_{ij}$ = number of samples of true class
$i$ predicted as $j$. Per class $k$: precision $= C_{kk} / \sum_i C_{ik}$, recall
$= C_{kk} / \sum_j C_{kj}$, and $F_\beta = (1+\beta^2) P R / (\beta^2 P + R)$. Averages:
*micro* pools the counts, *macro* takes the plain mean over classes, *weighted* weights each
class by its support.

Every metric but the silhouette takes a `sample_weight` $s$, as in scikit-learn: every mean
becomes a weighted mean $\sum_i s_i \ell_i / \sum_i s_i$ (and $R^2$'s sums and $\bar y$ are
weighted), every count a sum of weights (the confusion matrix $C_{ij} = \sum_{y_n = i,\,
\hat y_n = j} s_n$, and from it precision, recall, $F_\beta$ and the support; the true- and
false-positive counts of the ROC curve), so a sample of integer weight $k$ counts as $k$ copies and
one of weight 0 is left out.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fms_ml._validation import (
    check_allocation,
    check_array,
    check_consistent_length,
    check_sample_weight,
)

__all__ = [
    "accuracy_score",
    "auc",
    "confusion_matrix",
    "euclidean_distances",
    "f1_score",
    "fbeta_score",
    "log_loss",
    "mean_absolute_error",
    "mean_squared_error",
    "precision_recall_fscore_support",
    "precision_score",
    "r2_score",
    "recall_score",
    "roc_auc_score",
    "roc_curve",
    "silhouette_samples",
    "silhouette_score",
]

Average = Literal["binary", "micro", "macro", "weighted"] | None


def _labels_pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[NDArray[Any], NDArray[Any]]:
    yt = check_array(y_true, "y_true", ensure_2d=False, dtype=None, ensure_finite=False)
    yp = check_array(y_pred, "y_pred", ensure_2d=False, dtype=None, ensure_finite=False)
    check_consistent_length(y_true=yt, y_pred=yp)
    return yt, yp


def _targets_pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[NDArray[np.float64], ...]:
    yt = check_array(y_true, "y_true", ensure_2d=False)
    yp = check_array(y_pred, "y_pred", ensure_2d=False)
    check_consistent_length(y_true=yt, y_pred=yp)
    return yt, yp


def _weights(sample_weight: ArrayLike | None, n: int) -> NDArray[np.float64] | None:
    """Checked weights, or None (then the plain mean is used, bit for bit as before)."""
    return None if sample_weight is None else check_sample_weight(sample_weight, n)


def accuracy_score(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    normalize: bool = True,
    sample_weight: ArrayLike | None = None,
) -> float:
    r"""Fraction (or, with `normalize=False`, number) of exactly correct predictions.

    With `sample_weight` $s$: $\sum_i s_i [y_i = \hat y_i] / \sum_i s_i$ (or the numerator alone).
    """
    yt, yp = _labels_pair(y_true, y_pred)
    sw = _weights(sample_weight, yt.shape[0])
    correct = yt == yp
    if sw is not None:
        return float(np.average(correct, weights=sw)) if normalize else float(correct @ sw)
    return float(np.average(correct)) if normalize else float(correct.sum())


def confusion_matrix(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    labels: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
) -> NDArray[Any]:
    r"""`(n_classes, n_classes)` counts: row = true label, column = predicted label.

    Labels are the sorted union of both arrays unless `labels` fixes their order. With
    `sample_weight` $s$ entry $(i, j)$ is $\sum_n s_n$ over the samples of true label $i$ predicted
    as $j$: int64 for integer (or boolean) weights, float64 otherwise, as in scikit-learn.
    """
    yt, yp = _labels_pair(y_true, y_pred)
    sw = _weights(sample_weight, yt.shape[0])
    lab = np.unique(np.concatenate([yt, yp])) if labels is None else np.asarray(labels)
    if lab.size == 0:
        raise ValueError("labels is empty; expected at least one label.")
    n = lab.size
    order = np.argsort(lab, kind="stable")
    sorted_lab = lab[order]

    def index(y: NDArray[Any]) -> NDArray[np.intp]:
        pos = np.clip(np.searchsorted(sorted_lab, y), 0, n - 1)
        found = sorted_lab[pos] == y
        out = np.where(found, order[pos], -1)
        return out.astype(np.intp)

    it, ip = index(yt), index(yp)
    keep = (it >= 0) & (ip >= 0)
    weights = None if sw is None else sw[keep]
    cm = np.bincount(it[keep] * n + ip[keep], weights=weights, minlength=n * n).reshape(n, n)
    integral = sw is None or np.asarray(sample_weight).dtype.kind in "iub"
    return cm.astype(np.int64 if integral else np.float64)


def _safe_div(num: NDArray[np.float64], den: NDArray[np.float64], zero_division: float) -> Any:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    return np.where(den == 0, zero_division, out)


def precision_recall_fscore_support(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    beta: float = 1.0,
    labels: ArrayLike | None = None,
    pos_label: Any = 1,
    average: Average = None,
    zero_division: float = 0.0,
    sample_weight: ArrayLike | None = None,
) -> tuple[Any, Any, Any, Any]:
    """Precision, recall, $F_\\beta$ and support, per class or averaged.

    Args:
        y_true: true labels.
        y_pred: predicted labels.
        beta: weight of recall in the F-score.
        labels: labels to include (default: all present, sorted).
        pos_label: the positive class when `average="binary"`.
        average: `None` (per class), `"binary"`, `"micro"`, `"macro"` or `"weighted"`.
        zero_division: value used where a ratio has a zero denominator (scikit-learn returns 0
            and warns).
        sample_weight: `(n_samples,)` weights; every count ($TP$, $FP$, $FN$, support) becomes
            a sum of weights.

    Returns:
        `(precision, recall, fbeta, support)`; `support` is `None` when averaged, and the
        summed weights (float) rather than counts when `sample_weight` is given.
    """
    if average not in (None, "binary", "micro", "macro", "weighted"):
        raise ValueError(
            f"average={average!r} is not supported; expected None, 'binary', 'micro', 'macro' "
            f"or 'weighted'."
        )
    yt, yp = _labels_pair(y_true, y_pred)
    present = np.unique(np.concatenate([yt, yp]))
    if average == "binary":
        if present.size > 2:
            raise ValueError(
                f"average='binary' needs at most 2 labels; got {present.size} "
                f"({present[:5].tolist()}...). Choose average='micro', 'macro' or 'weighted'."
            )
        if present.size == 2 and pos_label not in present:
            raise ValueError(
                f"pos_label={pos_label!r} is not a valid label; got {present.tolist()}."
            )
        lab = np.asarray([pos_label])
    else:
        lab = present if labels is None else np.asarray(labels)
    sw = _weights(sample_weight, yt.shape[0])
    all_labels = np.concatenate([lab, np.setdiff1d(present, lab)])
    cm = confusion_matrix(yt, yp, labels=all_labels, sample_weight=sw)
    k = lab.size
    tp = np.diag(cm)[:k].astype(np.float64)
    pred_pos = cm[:, :k].sum(axis=0).astype(np.float64)
    true_pos = cm[:k, :].sum(axis=1).astype(np.float64)
    if average == "micro":
        tp, pred_pos, true_pos = (np.array([a.sum()]) for a in (tp, pred_pos, true_pos))
    precision = _safe_div(tp, pred_pos, zero_division)
    recall = _safe_div(tp, true_pos, zero_division)
    b2 = beta * beta
    denom = b2 * true_pos + pred_pos  # = (1 + b2) tp + b2 fn + fp
    f = _safe_div((1 + b2) * tp, denom, zero_division)
    if average is None:
        return precision, recall, f, true_pos if sw is not None else true_pos.astype(np.int64)
    if average == "weighted":
        w = true_pos
        if w.sum() == 0:
            return zero_division, zero_division, zero_division, None
        return (
            float(np.average(precision, weights=w)),
            float(np.average(recall, weights=w)),
            float(np.average(f, weights=w)),
            None,
        )
    return float(np.mean(precision)), float(np.mean(recall)), float(np.mean(f)), None


def precision_score(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    pos_label: Any = 1,
    average: Average = "binary",
    sample_weight: ArrayLike | None = None,
) -> Any:
    """Precision $TP / (TP + FP)$; see `precision_recall_fscore_support`."""
    return precision_recall_fscore_support(
        y_true, y_pred, pos_label=pos_label, average=average, sample_weight=sample_weight
    )[0]


def recall_score(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    pos_label: Any = 1,
    average: Average = "binary",
    sample_weight: ArrayLike | None = None,
) -> Any:
    """Recall $TP / (TP + FN)$; see `precision_recall_fscore_support`."""
    return precision_recall_fscore_support(
        y_true, y_pred, pos_label=pos_label, average=average, sample_weight=sample_weight
    )[1]


def fbeta_score(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    beta: float,
    pos_label: Any = 1,
    average: Average = "binary",
    sample_weight: ArrayLike | None = None,
) -> Any:
    """$F_\\beta$ score; see `precision_recall_fscore_support`."""
    return precision_recall_fscore_support(
        y_true, y_pred, beta=beta, pos_label=pos_label, average=average, sample_weight=sample_weight
    )[2]


def f1_score(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    pos_label: Any = 1,
    average: Average = "binary",
    sample_weight: ArrayLike | None = None,
) -> Any:
    """$F_1 = 2PR/(P+R)$, the harmonic mean of precision and recall."""
    return fbeta_score(
        y_true, y_pred, beta=1.0, pos_label=pos_label, average=average, sample_weight=sample_weight
    )


def roc_curve(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    pos_label: Any = None,
    sample_weight: ArrayLike | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    r"""False- and true-positive rates at every distinct score threshold (highest first).

    With `sample_weight` $s$ the counts above a threshold $t$ are sums of weights,
    $TP(t) = \sum_{\text{pos},\, f_i \ge t} s_i$ and $FP(t)$ likewise; samples of weight 0 are
    dropped first, so their scores are not thresholds (scikit-learn's `_binary_clf_curve`).
    Every threshold is kept (scikit-learn's `drop_intermediate=False`).

    Returns:
        `(fpr, tpr, thresholds)`, starting at `(0, 0)` with threshold `inf`.
    """
    yt, _ = _labels_pair(y_true, y_score)
    s = check_array(y_score, "y_score", ensure_2d=False)
    sw = _weights(sample_weight, yt.shape[0])
    if sw is not None:
        nonzero = sw != 0
        yt, s, sw = yt[nonzero], s[nonzero], sw[nonzero]
    classes = np.unique(yt)
    if pos_label is None:
        if classes.size > 2 or not np.all(np.isin(classes, [0, 1, -1])):
            raise ValueError(f"y_true labels {classes.tolist()} are not {{0, 1}}; pass pos_label.")
        pos_label = 1
    pos = (yt == pos_label).astype(np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, pos = s[order], pos[order]
    distinct = np.where(np.diff(s))[0]
    idx = np.r_[distinct, pos.size - 1]
    if sw is None:
        tps = np.cumsum(pos)[idx]
        fps = 1 + idx - tps
    else:
        sw = sw[order]
        tps = np.cumsum(pos * sw)[idx]
        fps = np.cumsum((1 - pos) * sw)[idx]
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    thresholds = np.r_[np.inf, s[idx]]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full_like(fps, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full_like(tps, np.nan)
    return fpr, tpr, thresholds


def auc(x: ArrayLike, y: ArrayLike) -> float:
    """Area under a curve by the trapezoidal rule ($x$ monotone)."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    area = float(np.sum(np.diff(xa) * (ya[1:] + ya[:-1]) / 2.0))
    return -area if area < 0 else area


def roc_auc_score(
    y_true: ArrayLike,
    y_score: ArrayLike,
    *,
    average: Literal["macro", "weighted"] = "macro",
    sample_weight: ArrayLike | None = None,
) -> float:
    """Area under the ROC curve: $P(\\text{score of a random positive} > \\text{of a negative})$.

    Binary `y_true` with a 1-d `y_score`; or multiclass with a `(n_samples, n_classes)` score
    matrix (columns in sorted-label order), averaged one-vs-rest. With `sample_weight` each
    curve is the weighted `roc_curve` (a pair of samples counts $s_i s_j$ in the probability),
    and `average="weighted"` weights class $k$ by the summed weight of its samples.
    """
    yt = check_array(y_true, "y_true", ensure_2d=False, dtype=None, ensure_finite=False)
    s = np.asarray(y_score, dtype=np.float64)
    sw = _weights(sample_weight, yt.shape[0])
    classes = np.unique(yt)
    if classes.size < 2:
        raise ValueError("roc_auc_score needs both classes in y_true; got a single class.")
    if s.ndim == 1 or (s.ndim == 2 and s.shape[1] == 1 and classes.size == 2):
        fpr, tpr, _ = roc_curve(yt == classes[-1], s.ravel(), pos_label=True, sample_weight=sw)
        return auc(fpr, tpr)
    if s.ndim != 2 or s.shape[1] != classes.size:
        raise ValueError(
            f"y_score must have shape (n_samples, {classes.size}) for {classes.size} classes; "
            f"got {s.shape}."
        )
    scores = np.array(
        [roc_auc_score(yt == c, s[:, i], sample_weight=sw) for i, c in enumerate(classes)]
    )
    if average == "weighted":
        ones = np.ones(yt.shape[0]) if sw is None else sw
        return float(np.average(scores, weights=[ones[yt == c].sum() for c in classes]))
    return float(np.mean(scores))


def log_loss(
    y_true: ArrayLike,
    y_proba: ArrayLike,
    *,
    labels: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
) -> float:
    r"""Cross-entropy $-\frac1n \sum_i \log p_{i, y_i}$, probabilities clipped to $[\epsilon, 1-\epsilon]$.

    `y_proba` is `(n_samples, n_classes)` with columns in sorted-label order, or 1-d with the
    probability of the larger label in a binary problem. With `sample_weight` $s$ the mean is
    $-\sum_i s_i \log p_{i, y_i} / \sum_i s_i$.
    """
    yt = check_array(y_true, "y_true", ensure_2d=False, dtype=None, ensure_finite=False)
    p = check_array(y_proba, "y_proba", ensure_2d=False) if np.ndim(y_proba) == 1 else None
    p = np.column_stack([1 - p, p]) if p is not None else check_array(y_proba, "y_proba")
    check_consistent_length(y_true=yt, y_proba=p)
    sw = _weights(sample_weight, yt.shape[0])
    classes = np.unique(yt) if labels is None else np.unique(np.asarray(labels))
    if classes.size < 2:
        raise ValueError(f"y_true has one label ({classes.tolist()}); pass labels=[...].")
    if p.shape[1] != classes.size:
        raise ValueError(
            f"y_proba has {p.shape[1]} columns but there are {classes.size} labels "
            f"{classes.tolist()}; expected one column per label."
        )
    codes = np.searchsorted(classes, yt)
    eps = np.finfo(p.dtype).eps
    p = np.clip(p, eps, 1 - eps)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(codes)), codes] = 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(onehot > 0, onehot * np.log(p), 0.0)
    return float(np.average(-terms.sum(axis=1), weights=sw))


def mean_squared_error(
    y_true: ArrayLike, y_pred: ArrayLike, *, sample_weight: ArrayLike | None = None
) -> float:
    r"""$\frac1n \sum_i (y_i - \hat y_i)^2$; with `sample_weight` $s$, $\sum_i s_i (y_i - \hat y_i)^2 / \sum_i s_i$."""
    yt, yp = _targets_pair(y_true, y_pred)
    sw = _weights(sample_weight, yt.shape[0])
    return float(np.average((yt - yp) ** 2, axis=0, weights=sw))


def mean_absolute_error(
    y_true: ArrayLike, y_pred: ArrayLike, *, sample_weight: ArrayLike | None = None
) -> float:
    r"""$\frac1n \sum_i |y_i - \hat y_i|$; with `sample_weight` $s$, $\sum_i s_i |y_i - \hat y_i| / \sum_i s_i$."""
    yt, yp = _targets_pair(y_true, y_pred)
    sw = _weights(sample_weight, yt.shape[0])
    return float(np.average(np.abs(yt - yp), axis=0, weights=sw))


def r2_score(
    y_true: ArrayLike, y_pred: ArrayLike, *, sample_weight: ArrayLike | None = None
) -> float:
    r"""Coefficient of determination $R^2 = 1 - \frac{\sum_i (y_i - \hat y_i)^2}{\sum_i (y_i - \bar y)^2}$.

    As in scikit-learn, a constant `y_true` gives 1.0 for a perfect fit and 0.0 otherwise. With
    `sample_weight` $s$ both sums weight term $i$ by $s_i$ and $\bar y = \sum_i s_i y_i / \sum_i s_i$.
    """
    yt, yp = _targets_pair(y_true, y_pred)
    if yt.shape[0] < 2:
        raise ValueError(f"r2_score needs at least 2 samples; got {yt.shape[0]}.")
    sw = _weights(sample_weight, yt.shape[0])
    if sw is not None:
        num = float(sw @ (yt - yp) ** 2)
        den = float(sw @ (yt - np.average(yt, weights=sw)) ** 2)
        if den == 0:
            return 1.0 if num == 0 else 0.0
        return 1.0 - num / den
    num = ((yt - yp) ** 2).sum(axis=0, dtype=np.float64)
    den = ((yt - np.average(yt, axis=0)) ** 2).sum(axis=0, dtype=np.float64)
    if den == 0:
        return 1.0 if num == 0 else 0.0
    return float(1 - num / den)


def _squared_euclidean(
    A: NDArray[np.float64],
    B: NDArray[np.float64],
    A_sq: NDArray[np.float64] | None = None,
    B_sq: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    r"""Squared distances $\lVert a_i - b_j\rVert^2$, `(len(A), len(B))`, of validated arrays.

    The one distance kernel of the package (k-means, nearest neighbours, the RBF kernel and the
    silhouette all call it). `A_sq` and `B_sq`, the rows' squared norms, may be passed when the
    caller has them. See [`euclidean_distances`][fms_ml.metrics.euclidean_distances] for the
    expansion, the overflow check and the memory check.
    """
    a = np.einsum("ij,ij->i", A, A) if A_sq is None else A_sq
    b = np.einsum("ij,ij->i", B, B) if B_sq is None else B_sq
    # |2 a.b| <= |a|^2 + |b|^2, so every term is finite exactly when the largest norms' sum is
    if a.size and b.size and not np.isfinite(a.max() + b.max()):
        largest = max(float(np.abs(A).max()), float(np.abs(B).max()))
        raise ValueError(
            f"Squared Euclidean distances overflow float64: the inputs' largest |value| is "
            f"{largest:.3g}, and squares of values above about 1.3e154 are infinite. Rescale the "
            f"data, e.g. divide it by its largest magnitude, first."
        )
    check_allocation(
        (len(A), len(B)), "the distance matrix", "pass fewer rows at a time (in chunks)"
    )
    D = A @ B.T
    D *= -2.0
    D += a[:, None]
    D += b[None, :]
    return np.maximum(D, 0.0, out=D)  # rounding can leave tiny negatives


def euclidean_distances(
    X: ArrayLike, Y: ArrayLike | None = None, *, squared: bool = False
) -> NDArray[np.float64]:
    r"""Euclidean distances between the rows of `X` and of `Y` (`X` itself when `Y` is None).

    Expanded as

    $$
    \lVert x - y\rVert^2 = \lVert x\rVert^2 - 2\,x^\top y + \lVert y\rVert^2,
    $$

    one matrix product instead of an `(n_X, n_Y, n_features)` tensor of differences (scikit-learn
    does the same), clamped at 0 where rounding leaves a tiny negative; with `Y` None the
    diagonal is exactly 0. Equal to `sklearn.metrics.pairwise.euclidean_distances`.

    Args:
        X: `(n_X, n_features)`.
        Y: `(n_Y, n_features)`, or None for `X`.
        squared: return squared distances.

    Returns:
        `(n_X, n_Y)` distances.

    Raises:
        ValueError: the inputs differ in width, are not finite, or are so large (above about
            $1.3 \times 10^{154}$) that their squares overflow.
        MemoryError: the `(n_X, n_Y)` matrix is larger than the machine's memory.
    """
    Xa = check_array(X, "X")
    Ya = Xa if Y is None else check_array(Y, "Y")
    if Xa.shape[1] != Ya.shape[1]:
        raise ValueError(
            f"X and Y must have the same number of features; got X with {Xa.shape[1]} and Y "
            f"with {Ya.shape[1]}."
        )
    D = _squared_euclidean(Xa, Ya)
    if Y is None:
        np.fill_diagonal(D, 0.0)
    return D if squared else np.sqrt(D, out=D)


def silhouette_samples(X: ArrayLike, labels: ArrayLike) -> NDArray[np.float64]:
    r"""Silhouette $s_i = (b_i - a_i) / \max(a_i, b_i)$ of each sample (Euclidean distance).

    $a_i$ is the mean distance to the other members of $i$'s cluster, $b_i$ the smallest mean
    distance to another cluster; $s_i = 0$ for members of singleton clusters.
    """
    Xa = check_array(X, "X")
    lab = check_array(labels, "labels", ensure_2d=False, dtype=None, ensure_finite=False)
    check_consistent_length(X=Xa, labels=lab)
    classes, codes = np.unique(lab, return_inverse=True)
    k = classes.size
    if not 2 <= k <= Xa.shape[0] - 1:
        raise ValueError(
            f"Number of labels is {k}; valid values are 2 to n_samples - 1 ({Xa.shape[0] - 1})."
        )
    D = np.sqrt(_squared_euclidean(Xa, Xa))
    np.fill_diagonal(D, 0.0)
    onehot = np.zeros((Xa.shape[0], k))
    onehot[np.arange(Xa.shape[0]), codes] = 1.0
    sums = D @ onehot  # (n, k): total distance from i to each cluster
    counts = onehot.sum(0)
    own = counts[codes]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = sums[np.arange(len(codes)), codes] / (own - 1)
        means = sums / counts
    means[np.arange(len(codes)), codes] = np.inf
    b = means.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (b - a) / np.maximum(a, b)
    return np.nan_to_num(np.where(own > 1, s, 0.0))


def silhouette_score(X: ArrayLike, labels: ArrayLike) -> float:
    """Mean silhouette over all samples; see `silhouette_samples`."""
    return float(np.mean(silhouette_samples(X, labels)))
