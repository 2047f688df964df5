"""RMSprop (Tieleman & Hinton, 2012): divide by a running root-mean-square of the gradient."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from fms_dl.engine import Array, Tensor
from fms_dl.optim.optimizer import Optimizer

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """RMSprop, as `torch.optim.RMSprop`.

    $$v_t = \\alpha v_{t-1} + (1-\\alpha) g_t^2,\\qquad \\theta_t = \\theta_{t-1} - \\eta\\,
    \\frac{g_t}{\\sqrt{v_t - \\bar g_t^2 \\,[\\text{centered}]} + \\epsilon}$$

    with optional momentum on the normalised step.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        if lr < 0 or eps < 0 or momentum < 0 or weight_decay < 0 or not 0 <= alpha <= 1:
            raise ValueError(
                "RMSprop: lr, eps, momentum, weight_decay must be >= 0 and alpha in [0, 1]"
            )
        super().__init__(
            params,
            {
                "lr": lr,
                "alpha": alpha,
                "eps": eps,
                "weight_decay": weight_decay,
                "momentum": momentum,
                "centered": centered,
            },
        )

    def _update(self, p: Tensor, grad: Array, state: dict[str, Any], group: dict[str, Any]) -> None:
        if not state:
            state["square_avg"] = np.zeros_like(p.data)
            if group["momentum"] > 0:
                state["momentum_buffer"] = np.zeros_like(p.data)
            if group["centered"]:
                state["grad_avg"] = np.zeros_like(p.data)
        alpha = group["alpha"]
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        sq = state["square_avg"]
        sq *= alpha
        sq += (1 - alpha) * grad * grad
        if group["centered"]:
            ga = state["grad_avg"]
            ga += (1 - alpha) * (grad - ga)
            avg = np.sqrt(sq - ga * ga) + group["eps"]
        else:
            avg = np.sqrt(sq) + group["eps"]
        if group["momentum"] > 0:
            buf = state["momentum_buffer"]
            buf *= group["momentum"]
            buf += grad / avg
            p.data -= group["lr"] * buf
        else:
            p.data -= group["lr"] * grad / avg
