r"""Support vector machines: a linear SVM solved in the primal, and kernel SVC solved by SMO.

**LinearSVC** solves liblinear's primal problem with the squared hinge loss,

$$\min_{\tilde w}\ \tfrac12 \lVert\tilde w\rVert_2^2 + C\sum_i \max(0,\ 1 - y_i \tilde w^\top \tilde x_i)^2,
\qquad \tilde x = (x, s),\ \tilde w = (w, b/s),$$

where $s$ = `intercept_scaling` (so the intercept *is* penalised, as in liblinear). The objective
is convex and once differentiable, so a generalised Newton method (Mangasarian, 2002) with the
Hessian $I + 2C\,\tilde X_A^\top \tilde X_A$ on the active set $A$ converges in a few steps.

**SVC** solves the kernel dual

$$\min_\alpha\ \tfrac12 \alpha^\top Q \alpha - \mathbf 1^\top\alpha \quad\text{s.t.}\quad 0 \le \alpha_i \le C,\ y^\top\alpha = 0,
\qquad Q_{ij} = y_i y_j k(x_i, x_j),$$

by sequential minimal optimisation (Platt, 1998) with libsvm's second-order working-set selection
(Fan, Chen & Lin, 2005): each step picks the maximal-violating pair, solves the two-variable
problem in closed form, clips it to the box, and updates the gradient with two kernel columns.
As in libsvm, variables stuck at a bound are periodically *shrunk* out of the search. Multiclass
problems are solved one-vs-one, as libsvm does.

**Weights.** `sample_weight` $s$ and `class_weight` $c$ give every sample its own $C$,
$C_i = C\, s_i\, c_{y_i}$, as in scikit-learn's liblinear and libsvm: the primal loss term of
sample $i$ is multiplied by $s_i c_{y_i}$, and in the dual its box becomes $0 \le \alpha_i \le C_i$.
A sample of weight 0 can then be no support vector and is left out, and integer weights act as
repeated rows in the primal (in the dual, $k$ copies of a row share one box of size $kC$, which
gives the same decision function).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fms_ml._optim import newton
from fms_ml._validation import (
    check_sample_weight,
    check_X_y,
    compute_class_weight,
    warn_not_converged,
)
from fms_ml.base import BaseEstimator, ClassifierMixin
from fms_ml.metrics import _squared_euclidean

__all__ = ["SVC", "LinearSVC", "kernel_matrix"]

FloatArray = NDArray[np.float64]


class LinearSVC(ClassifierMixin, BaseEstimator):
    """Linear SVM with the squared hinge loss (liblinear's default), one-vs-rest for $K > 2$.

    Args:
        C: inverse regularisation strength.
        fit_intercept: append the constant feature `intercept_scaling`.
        intercept_scaling: value of that feature (the intercept is regularised through it).
        tol: stop when the gradient norm falls below `tol` times its initial value.
        max_iter: Newton iterations cap.
        class_weight: `None`, `"balanced"` ($n / (K n_k)$ with $n_k$ the summed sample weight
            of class $k$) or a dict `{label: weight}`. As in liblinear, the binary problem
            weighs each sample by its class's weight; the one-vs-rest problem of class $k$
            weighs its positives by $c_k$ and leaves the rest at 1.

    Attributes:
        classes_: the sorted class labels.
        coef_: `(1, p)` for two classes, `(K, p)` otherwise.
        intercept_: `(1,)` or `(K,)`.
        n_iter_: Newton iterations of the longest one-vs-rest problem.
    """

    def __init__(
        self,
        *,
        C: float = 1.0,
        fit_intercept: bool = True,
        intercept_scaling: float = 1.0,
        tol: float = 1e-4,
        max_iter: int = 1000,
        class_weight: dict[Any, float] | Literal["balanced"] | None = None,
    ) -> None:
        self.C = C
        self.fit_intercept = fit_intercept
        self.intercept_scaling = intercept_scaling
        self.tol = tol
        self.max_iter = max_iter
        self.class_weight = class_weight

    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> LinearSVC:
        r"""Fit one primal problem per class (one for two classes).

        With `sample_weight` $s$ and class weights $c$ the loss of sample $i$ is multiplied by
        $s_i c_{y_i}$: $\tfrac12\lVert\tilde w\rVert^2 + \sum_i C_i \max(0, 1 - y_i \tilde w^\top
        \tilde x_i)^2$ with $C_i = C s_i c_{y_i}$ (liblinear's per-instance $C$).
        """
        if self.C <= 0:
            raise ValueError(f"C must be positive; got {self.C}.")
        Xa, ya = check_X_y(X, y)
        codes = self._encode_labels(ya)
        self.n_features_in_ = Xa.shape[1]
        Xt = np.c_[Xa, np.full(len(Xa), self.intercept_scaling)] if self.fit_intercept else Xa
        K = self.classes_.size
        sw = None if sample_weight is None else check_sample_weight(sample_weight, len(codes))
        cw = compute_class_weight(self.class_weight, self.classes_, codes, sw)
        self.class_weight_ = cw
        base = float(self.C) * (np.ones(len(codes)) if sw is None else sw)
        W, iters, all_converged = [], [], True
        for k in [1] if K == 2 else range(K):
            yk = np.where(codes == k, 1.0, -1.0)
            # liblinear: binary Cp, Cn = C c_1, C c_0; one-vs-rest Cp, Cn = C c_k, C
            Ck = base * (cw[codes] if K == 2 else np.where(codes == k, cw[k], 1.0))

            def fun(
                w: FloatArray, yk: FloatArray = yk, Ck: FloatArray = Ck
            ) -> tuple[float, FloatArray]:
                m = 1.0 - yk * (Xt @ w)
                act = m > 0
                f = 0.5 * float(w @ w) + float(Ck[act] @ m[act] ** 2)
                g = w - 2.0 * (Xt[act].T @ (Ck[act] * yk[act] * m[act]))
                return f, g

            def hess(w: FloatArray, yk: FloatArray = yk, Ck: FloatArray = Ck) -> FloatArray:
                act = (1.0 - yk * (Xt @ w)) > 0
                Xa_ = Xt[act]
                return np.eye(Xt.shape[1]) + 2.0 * ((Xa_.T * Ck[act]) @ Xa_)

            w0 = np.zeros(Xt.shape[1])
            g0 = np.max(np.abs(fun(w0)[1]))
            w, n_iter, converged = newton(fun, hess, w0, tol=self.tol * g0, max_iter=self.max_iter)
            W.append(w)
            iters.append(n_iter)
            all_converged = all_converged and converged
        self.n_iter_ = max(iters)  # the longest of the one-vs-rest problems, as liblinear's
        if not all_converged:
            warn_not_converged(self, self.max_iter)
        Wa = np.asarray(W)
        if self.fit_intercept:
            self.coef_ = Wa[:, :-1]
            self.intercept_ = Wa[:, -1] * self.intercept_scaling
        else:
            self.coef_, self.intercept_ = Wa, np.zeros(len(Wa))
        return self

    def decision_function(self, X: ArrayLike) -> FloatArray:
        """$Xw + b$: `(n_samples,)` binary, `(n_samples, K)` otherwise."""
        Xa = self._validate_predict_input(X)
        Z = Xa @ self.coef_.T + self.intercept_
        return Z[:, 0] if Z.shape[1] == 1 else Z

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """Class with the largest score."""
        Z = self.decision_function(X)
        idx = (Z > 0).astype(np.intp) if Z.ndim == 1 else Z.argmax(axis=1)
        return np.asarray(self.classes_[idx])


# ------------------------------------------------------------------------------------------------
# Kernels and SMO
# ------------------------------------------------------------------------------------------------
def kernel_matrix(
    A: FloatArray,
    B: FloatArray,
    kernel: str,
    gamma: float,
    degree: int,
    coef0: float,
    B_sq: FloatArray | None = None,
) -> FloatArray:
    r"""Kernel matrix $k(a_i, b_j)$, shape `(len(A), len(B))`.

    linear $a^\top b$; rbf $\exp(-\gamma\lVert a - b\rVert^2)$; poly $(\gamma a^\top b + c_0)^d$;
    sigmoid $\tanh(\gamma a^\top b + c_0)$. `B_sq`, the squared norms of the rows of `B`, may be
    passed when many kernel columns against the same `B` are computed (SMO): recomputing them for
    each column would cost as much as the column itself.
    """
    if kernel == "linear":
        return A @ B.T
    if kernel == "rbf":
        d = _squared_euclidean(A, B, B_sq=B_sq)
        d *= -gamma
        return np.exp(d, out=d)
    if kernel == "poly":
        return (gamma * (A @ B.T) + coef0) ** degree
    if kernel == "sigmoid":
        return np.tanh(gamma * (A @ B.T) + coef0)
    raise ValueError(f"kernel must be 'linear', 'rbf', 'poly' or 'sigmoid'; got {kernel!r}.")


class _KernelColumns:
    """Columns of the kernel matrix on demand, all precomputed when the matrix is small."""

    def __init__(self, X: FloatArray, kern: Any, cache_mb: float) -> None:
        self.X, self.kern = X, kern
        n = len(X)
        # SMO touches a few thousand columns at most, so a full matrix pays only for small n
        self.full = kern(X, X) if n <= 2000 and n * n * 8 <= cache_mb * 2**20 else None
        self.cache: dict[int, FloatArray] = {}
        self.X_sq = np.einsum("ij,ij->i", X, X)
        self.capacity = max(2, int(cache_mb * 2**20 // (8 * n)))

    def diag(self) -> FloatArray:
        if self.full is not None:
            return np.diag(self.full).copy()
        # k(x_i, x_i) in blocks: the diagonal of small kernel matrices
        out = np.empty(len(self.X))
        for s in range(0, len(self.X), 256):
            blk = self.X[s : s + 256]
            out[s : s + 256] = np.diag(self.kern(blk, blk))
        return out

    def __getitem__(self, i: int) -> FloatArray:
        if self.full is not None:
            return np.asarray(self.full[i])
        col = self.cache.get(i)
        if col is None:
            if len(self.cache) >= self.capacity:
                self.cache.pop(next(iter(self.cache)))
            col = self.kern(self.X[i : i + 1], self.X, self.X_sq)[0]
            self.cache[i] = col
        return col


def _smo(
    cols: _KernelColumns, y: FloatArray, C: float | FloatArray, tol: float, max_iter: int
) -> tuple[FloatArray, float, int]:
    """libsvm's SMO with second-order working-set selection and shrinking.

    `C` is one box for all variables, or one per variable ($0 \\le \\alpha_i \\le C_i$: libsvm's
    `get_C(i)`, which is how sample and class weights enter).

    The gradient is kept for all variables, but the working-set search runs over an *active set*:
    every `min(n, 1000)` steps, variables stuck at a bound that cannot be selected under the
    current violation bounds are set aside (libsvm's `be_shrunk` rule). When the active problem is
    solved, the set is restored and the full optimality condition is checked again.

    Returns:
        `(alpha, rho, n_iter)`.
    """
    n = len(y)
    Cv = np.broadcast_to(np.asarray(C, dtype=np.float64), (n,))
    Cv_l = Cv.tolist()
    alpha = np.zeros(n)
    mG = y.copy()  # -y * G, where G = Q alpha - 1 is the gradient of the dual
    QD = cols.diag()
    QD_A = QD
    QD_l, y_l = QD.tolist(), y.tolist()
    tau = 1e-12
    pos = y > 0
    up = pos.copy()  # y=+1 & alpha<C  or  y=-1 & alpha>0  (at alpha = 0: the positives)
    low = ~pos  # y=+1 & alpha>0  or  y=-1 & alpha<C  (at alpha = 0: the negatives)
    active = np.arange(n)
    shrink_every = min(n, 1000)
    counter = shrink_every
    it = 0
    limit = max_iter if max_iter > 0 else max(10_000_000, 100 * n)
    while it < limit:
        if counter == 0:
            counter = shrink_every
            mA, uA, lA = mG[active], up[active], low[active]
            g1 = mA[uA].max(initial=-np.inf)  # max over I_up of -y G
            g2 = (-mA[lA]).max(initial=-np.inf)  # max over I_low of y G
            aA, yA = alpha[active], pos[active]
            at_ub, at_lb = aA >= Cv[active], aA <= 0
            # libsvm's be_shrunk, written with mG = -y G
            shrink = (at_ub & yA & (mA > g1)) | (at_ub & ~yA & (-mA > g2))
            shrink |= (at_lb & yA & (-mA > g2)) | (at_lb & ~yA & (mA > g1))
            active = active[~shrink]
            QD_A = QD[active]
        counter -= 1
        # Each step is a few dozen numpy calls on vectors of the active size; at the sizes SVC
        # is used for, their fixed overhead dominates, so the loop avoids needless ones: no
        # gathers while nothing is shrunk, scalars read as Python floats (numpy scalar
        # arithmetic is several times slower), and `QD_A` (the diagonal on the active set)
        # updated only when that set changes.
        full = active.size == n
        mA = mG if full else mG[active]
        cand = np.where(up if full else up[active], mA, -np.inf)
        ii = int(np.argmax(cand))
        gmax = float(cand[ii])
        lowv = np.where(low if full else low[active], mA, np.inf)
        gmax2 = -float(lowv.min())
        if gmax + gmax2 < tol or not math.isfinite(gmax):
            if full:
                break
            active, QD_A = np.arange(n), QD  # unshrink and check the whole problem
            counter = shrink_every
            continue
        i = int(active[ii])
        Ki = cols[i]
        QDi = QD_l[i]
        # second-order choice of j among violating t in I_low: maximise b_t^2 / a_t with
        # b_t = gmax - (-y_t G_t) > 0 and a_t = K_ii + K_tt - 2 K_it (clipped to tau when <= 0);
        # b is -inf outside I_low, so clipping b at 0 also removes those (libsvm minimises
        # -b^2/a, the same choice, ties included)
        aqA = QDi + QD_A - 2.0 * (Ki if full else Ki[active])
        aqA = np.where(aqA > 0, aqA, tau)
        bA = gmax - lowv
        np.maximum(bA, 0.0, out=bA)
        bA *= bA
        bA /= aqA
        j = int(active[int(np.argmax(bA))])
        Kj = cols[j]
        yi, yj = y_l[i], y_l[j]
        Gi, Gj = -yi * float(mG[i]), -yj * float(mG[j])
        Ci, Cj = Cv_l[i], Cv_l[j]
        ai_old, aj_old = float(alpha[i]), float(alpha[j])
        Qij = yi * yj * float(Ki[j])
        if yi != yj:
            quad = QDi + QD_l[j] + 2.0 * Qij
            quad = quad if quad > 0 else tau
            delta = (-Gi - Gj) / quad
            diff = ai_old - aj_old
            ai, aj = ai_old + delta, aj_old + delta
            if diff > 0:
                if aj < 0:
                    aj, ai = 0.0, diff
            elif ai < 0:
                ai, aj = 0.0, -diff
            if diff > Ci - Cj:
                if ai > Ci:
                    ai, aj = Ci, Ci - diff
            elif aj > Cj:
                aj, ai = Cj, Cj + diff
        else:
            quad = QDi + QD_l[j] - 2.0 * Qij
            quad = quad if quad > 0 else tau
            delta = (Gi - Gj) / quad
            s = ai_old + aj_old
            ai, aj = ai_old - delta, aj_old + delta
            if s > Ci:
                if ai > Ci:
                    ai, aj = Ci, s - Ci
            elif aj < 0:
                aj, ai = 0.0, s
            if s > Cj:
                if aj > Cj:
                    aj, ai = Cj, s - Cj
            elif ai < 0:
                ai, aj = 0.0, s
        alpha[i], alpha[j] = ai, aj
        # G += Q_i dai + Q_j daj with Q_t = y_t y K_t, so -y G moves by -(y_t K_t da_t)
        mG -= (yi * (ai - ai_old)) * Ki + (yj * (aj - aj_old)) * Kj
        for t, at in ((i, ai), (j, aj)):
            if y_l[t] > 0:
                up[t], low[t] = at < Cv_l[t], at > 0
            else:
                up[t], low[t] = at > 0, at < Cv_l[t]
        it += 1
    G = -y * mG
    # rho, as libsvm's calculate_rho
    yG = y * G
    at_ub, at_lb = alpha >= Cv, alpha <= 0
    free = ~at_ub & ~at_lb
    if free.any():
        rho = float(yG[free].mean())
    else:
        ub_mask = (at_ub & (y < 0)) | (at_lb & (y > 0))
        lb_mask = (at_ub & (y > 0)) | (at_lb & (y < 0))
        ub = yG[ub_mask].min() if ub_mask.any() else np.inf
        lb = yG[lb_mask].max() if lb_mask.any() else -np.inf
        rho = float((ub + lb) / 2)
    return alpha, rho, it


class SVC(ClassifierMixin, BaseEstimator):
    r"""Kernel support vector classifier trained by SMO (libsvm's algorithm), one-vs-one.

    Decision function of a binary problem: $f(x) = \sum_{i \in SV} \alpha_i y_i k(x_i, x) - \rho$.

    Args:
        C: box constraint (inverse regularisation).
        kernel: `"linear"`, `"rbf"`, `"poly"` or `"sigmoid"`.
        degree: polynomial degree.
        gamma: `"scale"` ($1 / (p \operatorname{Var}(X))$), `"auto"` ($1/p$) or a float.
        coef0: independent term of poly/sigmoid kernels.
        tol: stop when the maximal KKT violation falls below `tol`.
        max_iter: SMO iterations cap per binary problem (`-1`: none).
        cache_size: kernel-column cache in MB (the whole kernel matrix is computed up front for at most
            2 000 samples, when it fits).
        decision_function_shape: `"ovr"` (scikit-learn's default transform of one-vs-one
            votes) or `"ovo"`.
        class_weight: `None`, `"balanced"` ($n / (K n_k)$ with $n_k$ the number of rows of
            class $k$, sample weights not counted, as in scikit-learn's SVC) or a dict
            `{label: weight}`: class $k$'s box is $C c_k$ in every pair it is part of.

    Attributes:
        classes_: the sorted class labels.
        support_: indices of the support vectors, grouped by class.
        support_vectors_: the support vectors.
        n_support_: support vectors per class.
        dual_coef_: binary problems only: `(1, n_SV)` values of $y_i\alpha_i$ (scikit-learn's sign).
        intercept_: one per pair of classes.
        n_iter_: SMO iterations per pair of classes.
    """

    def __init__(
        self,
        *,
        C: float = 1.0,
        kernel: Literal["linear", "rbf", "poly", "sigmoid"] = "rbf",
        degree: int = 3,
        gamma: float | Literal["scale", "auto"] = "scale",
        coef0: float = 0.0,
        tol: float = 1e-3,
        max_iter: int = -1,
        cache_size: float = 200.0,
        decision_function_shape: Literal["ovr", "ovo"] = "ovr",
        class_weight: dict[Any, float] | Literal["balanced"] | None = None,
    ) -> None:
        self.C = C
        self.kernel = kernel
        self.degree = degree
        self.gamma = gamma
        self.coef0 = coef0
        self.tol = tol
        self.max_iter = max_iter
        self.cache_size = cache_size
        self.decision_function_shape = decision_function_shape
        self.class_weight = class_weight

    def _kern(self, A: FloatArray, B: FloatArray, B_sq: FloatArray | None = None) -> FloatArray:
        return kernel_matrix(A, B, self.kernel, self._gamma, self.degree, self.coef0, B_sq)

    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None) -> SVC:
        r"""Solve one SMO problem per pair of classes.

        With `sample_weight` $s$ and class weights $c$ sample $i$'s box is $C_i = C s_i c_{y_i}$;
        samples with $C_i = 0$ are left out (libsvm's `remove_zero_weight`).
        """
        if self.C <= 0:
            raise ValueError(f"C must be positive; got {self.C}.")
        if self.kernel not in ("linear", "rbf", "poly", "sigmoid"):
            raise ValueError(
                f"kernel must be 'linear', 'rbf', 'poly' or 'sigmoid'; got {self.kernel!r}."
            )
        Xa, ya = check_X_y(X, y)
        codes = self._encode_labels(ya)
        self.n_features_in_ = Xa.shape[1]
        p = Xa.shape[1]
        if self.gamma == "scale":
            var = Xa.var()
            self._gamma = 1.0 / (p * var) if var > 0 else 1.0
        elif self.gamma == "auto":
            self._gamma = 1.0 / p
        else:
            if float(self.gamma) <= 0:
                raise ValueError(f"gamma must be 'scale', 'auto' or positive; got {self.gamma!r}.")
            self._gamma = float(self.gamma)
        K = self.classes_.size
        cw = compute_class_weight(self.class_weight, self.classes_, codes)
        self.class_weight_ = cw
        Cs = float(self.C) * cw[codes]
        if sample_weight is not None:
            Cs = Cs * check_sample_weight(sample_weight, len(codes))
            if np.unique(codes[Cs > 0]).size < 2:  # scikit-learn's libsvm refuses it too
                raise ValueError(
                    "Invalid input: all samples with positive weight belong to the same class "
                    f"({self.classes_[codes[Cs > 0][0]]!r}); SVC needs two classes to separate."
                )
        self._pairs: list[tuple[int, int, NDArray[np.intp], FloatArray, float]] = []
        sv_mask = np.zeros(len(Xa), dtype=bool)
        iters = []
        for a in range(K):
            for b in range(a + 1, K):
                idx = np.nonzero(((codes == a) | (codes == b)) & (Cs > 0))[0]
                yy = np.where(codes[idx] == a, 1.0, -1.0)
                cols = _KernelColumns(Xa[idx], self._kern, self.cache_size)
                C_pair = (
                    float(self.C)
                    if self.class_weight is None and sample_weight is None
                    else Cs[idx]
                )
                alpha, rho, it = _smo(cols, yy, C_pair, self.tol, self.max_iter)
                sv = alpha > 0
                self._pairs.append((a, b, idx[sv], alpha[sv] * yy[sv], rho))
                sv_mask[idx[sv]] = True
                iters.append(it)
        self.n_iter_ = np.asarray(iters)
        if self.max_iter > 0 and self.n_iter_.max() >= self.max_iter:
            warn_not_converged(self, self.max_iter, " (SMO terminated early)")
        self.support_ = np.nonzero(sv_mask)[0]
        order = np.argsort(codes[self.support_], kind="stable")
        self.support_ = self.support_[order]
        self.support_vectors_ = Xa[self.support_]
        self.n_support_ = np.bincount(codes[self.support_], minlength=K).astype(np.int32)
        self.intercept_ = np.array([-rho for *_, rho in self._pairs])
        if K == 2:
            _, _, sv_idx, coef, _ = self._pairs[0]
            pos = {s: k for k, s in enumerate(sv_idx)}
            self.dual_coef_ = -np.array([[coef[pos[s]] for s in self.support_]])
            self.intercept_ = -self.intercept_  # scikit-learn's binary sign: positive = classes_[1]
        self._X_fit = Xa
        return self

    def _ovo_decision(self, Xa: FloatArray) -> FloatArray:
        Ksv = self._kern(Xa, self.support_vectors_)
        col = {s: k for k, s in enumerate(self.support_)}
        out = np.empty((len(Xa), len(self._pairs)))
        for m, (_, _, sv_idx, coef, rho) in enumerate(self._pairs):
            cols = [col[s] for s in sv_idx]
            out[:, m] = Ksv[:, cols] @ coef - rho
        return out

    def decision_function(self, X: ArrayLike) -> FloatArray:
        """Binary: `(n_samples,)`, positive for `classes_[1]`. Multiclass: see `decision_function_shape`."""
        Xa = self._validate_predict_input(X)
        dec = self._ovo_decision(Xa)
        K = self.classes_.size
        if K == 2:
            return -dec[:, 0]
        if self.decision_function_shape == "ovo":
            return dec
        return _ovr_decision_function(dec < 0, -dec, K)

    def predict(self, X: ArrayLike) -> NDArray[Any]:
        """Majority vote over the one-vs-one classifiers (ties to the smaller class index)."""
        Xa = self._validate_predict_input(X)
        dec = self._ovo_decision(Xa)
        K = self.classes_.size
        votes = np.zeros((len(Xa), K), dtype=np.int64)
        for m, (a, b, *_) in enumerate(self._pairs):
            win_a = dec[:, m] > 0
            votes[win_a, a] += 1
            votes[~win_a, b] += 1
        return np.asarray(self.classes_[votes.argmax(axis=1)])


def _ovr_decision_function(
    predictions: NDArray[np.bool_], confidences: FloatArray, K: int
) -> FloatArray:
    """scikit-learn's map from one-vs-one votes and confidences to one score per class."""
    n = len(predictions)
    votes = np.zeros((n, K))
    conf = np.zeros((n, K))
    k = 0
    for i in range(K):
        for j in range(i + 1, K):
            conf[:, i] -= confidences[:, k]
            conf[:, j] += confidences[:, k]
            votes[predictions[:, k] == 0, i] += 1
            votes[predictions[:, k] == 1, j] += 1
            k += 1
    return np.asarray(votes + conf / (3 * (np.abs(conf) + 1)))
