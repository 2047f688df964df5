"""Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from fms_dl.engine import Array, Tensor
from fms_dl.optim.optimizer import Optimizer

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """Adam, as `torch.optim.Adam` (weight decay is an L2 term added to the gradient).

    $$m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t,\\quad v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2,$$

    $$\\theta_t = \\theta_{t-1} - \\frac{\\eta}{1-\\beta_1^t}\\,
    \\frac{m_t}{\\sqrt{v_t}/\\sqrt{1-\\beta_2^t} + \\epsilon}.$$

    The bias corrections undo the zero initialisation of $m$ and $v$. With `amsgrad`, $v_t$ in
    the denominator is replaced by its running maximum (Reddi et al., 2018).
    """

    _decoupled = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        name = type(self).__name__
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(
                f"{name}: lr, eps and weight_decay must be >= 0, got {lr}, {eps}, {weight_decay}"
            )
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"{name}: betas must be in [0, 1), got {betas}")
        super().__init__(
            params,
            {
                "lr": lr,
                "betas": betas,
                "eps": eps,
                "weight_decay": weight_decay,
                "amsgrad": amsgrad,
            },
        )

    def _update(self, p: Tensor, grad: Array, state: dict[str, Any], group: dict[str, Any]) -> None:
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(p.data)
            state["exp_avg_sq"] = np.zeros_like(p.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = np.zeros_like(p.data)
        state["step"] += 1
        t = state["step"]
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if wd:
            if self._decoupled:
                p.data *= 1 - lr * wd
            else:
                grad = grad + wd * p.data
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m += (1 - b1) * (grad - m)
        v *= b2
        v += (1 - b2) * grad * grad
        if group["amsgrad"]:
            np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
            v = state["max_exp_avg_sq"]
        step_size = lr / (1 - b1**t)
        denom = np.sqrt(v) / math.sqrt(1 - b2**t) + eps
        p.data -= step_size * m / denom


class AdamW(Adam):
    """AdamW, as `torch.optim.AdamW`: weight decay *decoupled* from the adaptive step.

    Before the Adam step, $\\theta \\leftarrow \\theta(1 - \\eta\\lambda)$; the decay is not divided
    by $\\sqrt{v}$, so every weight decays at the same rate (unlike L2 in Adam).
    """

    _decoupled = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)
