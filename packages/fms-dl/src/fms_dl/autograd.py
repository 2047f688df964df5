"""Gradient checking by central finite differences in float64.

For a function $f$ of inputs $x_1, \\dots, x_k$ with (tensor) output $y$, pick a fixed random
cotangent $v$ and the scalar $L = \\langle v, f(x) \\rangle$. Backpropagation gives
$\\partial L / \\partial x$ (a vector-Jacobian product, exactly what every backward rule computes).
Central differences estimate each entry independently,

$$\\frac{\\partial L}{\\partial x_j} \\approx \\frac{L(x + \\epsilon e_j) - L(x - \\epsilon e_j)}{2\\epsilon},$$

with truncation error $O(\\epsilon^2)$; in float64 with $\\epsilon = 10^{-6}$ the two agree to
about $10^{-8}$ for smooth functions. A random $v$ makes every row of the Jacobian count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fms_dl.engine import Array, Tensor, no_grad

__all__ = ["GradcheckError", "gradcheck", "numerical_grad"]


class GradcheckError(AssertionError):
    """Raised by `gradcheck` when the analytic and numerical gradients disagree."""


def _scalar(fn: Callable[..., Tensor], inputs: Sequence[Tensor], v: Array) -> float:
    with no_grad():
        out = fn(*inputs)
    return float(np.sum(out.data * v))


def numerical_grad(
    fn: Callable[..., Tensor], inputs: Sequence[Tensor], v: Array, eps: float = 1e-6
) -> list[Array]:
    """Central-difference gradient of $\\langle v, f(x)\\rangle$ with respect to each input."""
    grads = []
    for t in inputs:
        g = np.zeros_like(t.data)
        if not t.requires_grad:
            grads.append(g)
            continue
        flat = t.data.reshape(-1)
        gflat = g.reshape(-1)
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + eps
            plus = _scalar(fn, inputs, v)
            flat[j] = old - eps
            minus = _scalar(fn, inputs, v)
            flat[j] = old
            gflat[j] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Sequence[Tensor],
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    seed: int = 0,
) -> bool:
    """Check the backward rules behind `fn` against central finite differences.

    Args:
        fn: maps the input tensors to one output tensor.
        inputs: float64 tensors; those with `requires_grad=True` are checked.
        eps: the finite-difference step.
        atol: absolute tolerance.
        rtol: relative tolerance.
        seed: seed of the random cotangent $v$.

    Returns:
        True when every checked gradient satisfies `|analytic - numeric| <= atol + rtol * |numeric|`.

    Raises:
        TypeError: if a checked input is not float64 (float32 differences are too coarse).
        GradcheckError: naming the input, the worst entry and both values, on mismatch.
    """
    checked = [t for t in inputs if t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True")
    for i, t in enumerate(checked):
        if t.dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} must be float64, got {t.dtype}")
    out = fn(*inputs)
    v = np.random.default_rng(seed).standard_normal(out.shape)
    for t in checked:
        t.grad = None
    out.backward(v.astype(out.dtype))
    analytic = [
        t.grad.data.copy() if t.grad is not None else np.zeros_like(t.data) for t in checked
    ]
    numeric = numerical_grad(fn, inputs, v, eps)
    numeric = [g for g, t in zip(numeric, inputs, strict=True) if t.requires_grad]
    for i, (a, n) in enumerate(zip(analytic, numeric, strict=True)):
        err = np.abs(a - n) - (atol + rtol * np.abs(n))
        if err.size and err.max() > 0:
            j = int(np.argmax(err))
            raise GradcheckError(
                f"gradcheck: input {i} (shape {a.shape}) entry {np.unravel_index(j, a.shape)}: "
                f"analytic {a.reshape(-1)[j]:.10g} vs numerical {n.reshape(-1)[j]:.10g} "
                f"(atol={atol}, rtol={rtol})"
            )
    return True
