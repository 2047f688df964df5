"""Stochastic gradient descent with momentum (Polyak) and Nesterov momentum."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from fms_dl.engine import Array, Tensor
from fms_dl.optim.optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    """SGD, step for step as `torch.optim.SGD`.

    With weight decay $\\lambda$, momentum $\\mu$ and dampening $\\tau$:

    $$g \\leftarrow g + \\lambda\\theta,\\quad b \\leftarrow \\mu b + (1-\\tau) g \\ (b_1 = g),\\quad
    \\theta \\leftarrow \\theta - \\eta\\,(g + \\mu b \\text{ if Nesterov else } b).$$
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(
                f"SGD: lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}"
            )
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: nesterov momentum requires momentum > 0 and dampening = 0")
        super().__init__(
            params,
            {
                "lr": lr,
                "momentum": momentum,
                "dampening": dampening,
                "weight_decay": weight_decay,
                "nesterov": nesterov,
            },
        )

    def _update(self, p: Tensor, grad: Array, state: dict[str, Any], group: dict[str, Any]) -> None:
        d_p = grad
        if group["weight_decay"]:
            d_p = d_p + group["weight_decay"] * p.data
        mu = group["momentum"]
        if mu:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.array(d_p, copy=True)
            else:
                buf *= mu
                damp = group["dampening"]
                buf += d_p if damp == 0 else (1 - damp) * d_p
            d_p = d_p + mu * buf if group["nesterov"] else buf
        step = state.get("scratch")
        if step is None or step.shape != d_p.shape or step.dtype != d_p.dtype:
            step = state["scratch"] = np.empty_like(d_p)
        np.multiply(d_p, group["lr"], out=step)  # no temporaries on the hot path
        p.data -= step
