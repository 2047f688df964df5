"""Gradient utilities: global-norm clipping."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from fms_dl.engine import Tensor

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(
    parameters: Iterable[Tensor], max_norm: float, norm_type: float = 2.0
) -> Tensor:
    """Scale all gradients together so that their global norm is at most `max_norm`.

    With $\\|g\\| = (\\sum_p \\|g_p\\|^q)^{1/q}$ over every parameter's gradient, each gradient is
    multiplied by $\\min(1, \\text{max\\_norm} / (\\|g\\| + 10^{-6}))$, exactly as
    `torch.nn.utils.clip_grad_norm_`. The direction of the update is kept; only its length shrinks.

    Returns:
        The global norm before clipping, as a 0-d tensor.
    """
    if max_norm <= 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be positive, got {max_norm}")
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return Tensor(np.array(0.0, dtype=np.float32))
    if norm_type == float("inf"):
        total = max(float(np.abs(g.data).max()) for g in grads)
    else:
        total = float(
            sum(float(np.sum(np.abs(g.data) ** norm_type)) for g in grads) ** (1.0 / norm_type)
        )
    coef = min(1.0, max_norm / (total + 1e-6))
    if coef < 1.0:
        for g in grads:
            g.data = g.data * np.asarray(coef, dtype=g.dtype)
    return Tensor(np.array(total, dtype=grads[0].dtype))
