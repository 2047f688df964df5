"""Adagrad (Duchi, Hazan & Singer, 2011): per-coordinate steps shrinking with the summed squares."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from fms_dl.engine import Array, Tensor
from fms_dl.optim.optimizer import Optimizer

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    """Adagrad, as `torch.optim.Adagrad`.

    $$s_t = s_{t-1} + g_t^2,\\qquad \\theta_t = \\theta_{t-1} - \\frac{\\eta}{1 + (t-1)\\,\\delta}
    \\frac{g_t}{\\sqrt{s_t} + \\epsilon}$$

    with learning-rate decay $\\delta$.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        if lr < 0 or lr_decay < 0 or weight_decay < 0 or eps < 0:
            raise ValueError("Adagrad: lr, lr_decay, weight_decay and eps must be >= 0")
        super().__init__(
            params,
            {
                "lr": lr,
                "lr_decay": lr_decay,
                "weight_decay": weight_decay,
                "initial_accumulator_value": initial_accumulator_value,
                "eps": eps,
            },
        )

    def _update(self, p: Tensor, grad: Array, state: dict[str, Any], group: dict[str, Any]) -> None:
        if not state:
            state["step"] = 0
            state["sum"] = np.full_like(p.data, group["initial_accumulator_value"])
        state["step"] += 1
        if group["weight_decay"]:
            grad = grad + group["weight_decay"] * p.data
        clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        state["sum"] += grad * grad
        p.data -= clr * grad / (np.sqrt(state["sum"]) + group["eps"])
