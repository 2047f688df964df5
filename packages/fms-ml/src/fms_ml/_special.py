r"""The logistic link functions, written so that no input overflows.

Shared by the models whose scores pass through a logistic or softmax link (logistic regression,
SGD's log loss, the calibrators):

* $\log(1 + e^z)$ as `logaddexp(0, z)`, which never forms $e^z$ for large $z$;
* $\sigma(z) = 1 / (1 + e^{-z})$ evaluated as $e^z / (1 + e^z)$ where $z < 0$, so the exponential
  taken is always of a non-positive number;
* softmax after subtracting each row's maximum, which leaves it unchanged
  ($e^{z_k - m} / \sum_j e^{z_j - m} = e^{z_k} / \sum_j e^{z_j}$) and keeps every exponent $\le 0$.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__: list[str] = []  # private helpers

FloatArray = NDArray[np.float64]


def _log1pexp(z: FloatArray) -> FloatArray:
    r"""$\log(1 + e^z)$ without overflow."""
    return np.logaddexp(0.0, z)


def _sigmoid(z: FloatArray) -> FloatArray:
    r"""$\sigma(z) = 1 / (1 + e^{-z})$ without overflow."""
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _softmax(Z: FloatArray) -> FloatArray:
    r"""Row-wise softmax of a `(n, K)` score matrix, computed in place on a shifted copy."""
    Z = Z - Z.max(axis=1, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=1, keepdims=True)
    return Z
