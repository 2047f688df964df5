"""Learning-rate schedules, stepped like `torch.optim.lr_scheduler` (call `step()` after each update).

Each scheduler computes the rate in closed form from the step count $t$ and the base rate
$\\eta_0$ of each parameter group.
"""

from __future__ import annotations

import math
from typing import Any

from fms_dl.optim.optimizer import Optimizer

__all__ = ["ExponentialLR", "LRScheduler", "LinearWarmupCosineLR", "OneCycleLR", "StepLR"]


class LRScheduler:
    """Base class: remembers each group's `initial_lr` and sets `lr = self.lr_at(t, base)`."""

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{type(self).__name__}: expected an Optimizer, got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = -1
        self.step()

    def lr_at(self, t: int, base_lr: float) -> float:
        """The rate at step `t` for a group whose base rate is `base_lr`."""
        raise TypeError(f"{type(self).__name__} does not define lr_at")  # pragma: no cover

    def step(self) -> None:
        """Advance one step and write the new rates into the optimiser."""
        self.last_epoch += 1
        for g, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            g["lr"] = self.lr_at(self.last_epoch, base)
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The rates set by the last `step()`."""
        return list(self._last_lr)


class StepLR(LRScheduler):
    """$\\eta_t = \\eta_0 \\gamma^{\\lfloor t / s \\rfloor}$: decay by `gamma` every `step_size` steps."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        if step_size < 1:
            raise ValueError(f"StepLR: step_size must be >= 1, got {step_size}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def lr_at(self, t: int, base_lr: float) -> float:
        """Closed form."""
        return base_lr * self.gamma ** (t // self.step_size)


class ExponentialLR(LRScheduler):
    """$\\eta_t = \\eta_0 \\gamma^t$."""

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        self.gamma = gamma
        super().__init__(optimizer)

    def lr_at(self, t: int, base_lr: float) -> float:
        """Closed form."""
        return base_lr * self.gamma**t


class LinearWarmupCosineLR(LRScheduler):
    """Linear warm-up for `warmup_steps`, then cosine decay to `eta_min` at `total_steps`.

    $$\\eta_t = \\begin{cases} \\eta_0\\,(f + (1-f)\\,t/W) & t < W \\\\
    \\eta_\\min + \\tfrac12(\\eta_0 - \\eta_\\min)(1 + \\cos(\\pi \\tfrac{t - W}{T - W})) & W \\le t \\le T
    \\\\ \\eta_\\min & t > T\\end{cases}$$

    with start factor $f$ (`warmup_start_factor`). It equals PyTorch's
    `SequentialLR([LinearLR(f, 1, W), CosineAnnealingLR(T - W, eta_min)], [W])` for $t \\le T$
    and $f > 0$ (torch refuses $f = 0$). With the default $f = 0$ the rate is $\\eta_0 t/W$: 0 at
    step 0 and $\\eta_0$ at step $W$, the one warm-up convention of the project, shared with
    the torch toolkit's [cosine_with_warmup][fms_dl.torch.optim.cosine_with_warmup] (the tests
    check the two agree at every step).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        total_steps: int,
        eta_min: float = 0.0,
        warmup_start_factor: float = 0.0,
    ) -> None:
        if not 0 <= warmup_steps < total_steps:
            raise ValueError(
                f"LinearWarmupCosineLR: need 0 <= warmup_steps < total_steps, got {warmup_steps}, {total_steps}"
            )
        if not 0.0 <= warmup_start_factor <= 1.0:
            raise ValueError(
                f"LinearWarmupCosineLR: warmup_start_factor must be in [0, 1], got {warmup_start_factor}"
            )
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        self.eta_min, self.warmup_start_factor = eta_min, warmup_start_factor
        super().__init__(optimizer)

    def lr_at(self, t: int, base_lr: float) -> float:
        """Closed form."""
        w, f = self.warmup_steps, self.warmup_start_factor
        if t < w:
            return base_lr * (f + (1 - f) * t / w)
        if t > self.total_steps:
            return self.eta_min
        progress = (t - w) / (self.total_steps - w)
        return self.eta_min + 0.5 * (base_lr - self.eta_min) * (1 + math.cos(math.pi * progress))


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin, 2017), as `torch.optim.lr_scheduler.OneCycleLR`.

    The rate rises from `max_lr / div_factor` to `max_lr` over the first `pct_start` of the
    steps and anneals to `max_lr / (div_factor * final_div_factor)`; momentum (or Adam's
    $\\beta_1$) moves inversely between `max_momentum` and `base_momentum` if `cycle_momentum`.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float,
        total_steps: int,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"OneCycleLR: total_steps must be >= 1, got {total_steps}")
        if not 0 <= pct_start <= 1:
            raise ValueError(f"OneCycleLR: pct_start must be in [0, 1], got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}"
            )
        self.total_steps, self.anneal_strategy = total_steps, anneal_strategy
        self.cycle_momentum = cycle_momentum
        init_lr = max_lr / div_factor
        self.lrs = {"initial": init_lr, "max": max_lr, "min": init_lr / final_div_factor}
        if three_phase:
            self.phases: list[tuple[float, str, str, float, float]] = [
                (pct_start * total_steps - 1, "initial", "max", max_momentum, base_momentum),
                (2 * pct_start * total_steps - 2, "max", "initial", base_momentum, max_momentum),
                (total_steps - 1, "initial", "min", max_momentum, max_momentum),
            ]
        else:
            self.phases = [
                (pct_start * total_steps - 1, "initial", "max", max_momentum, base_momentum),
                (total_steps - 1, "max", "min", base_momentum, max_momentum),
            ]
        self._beta = False
        if cycle_momentum:
            group: dict[str, Any] = optimizer.param_groups[0]
            if "betas" in group:
                self._beta = True
            elif "momentum" not in group:
                raise ValueError(
                    "OneCycleLR: cycle_momentum needs an optimiser with momentum or betas"
                )
        for g in optimizer.param_groups:
            g["initial_lr"] = init_lr
        super().__init__(optimizer)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _at(self, t: int) -> tuple[float, float]:
        if t > self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {t} times but total_steps is {self.total_steps}")
        start = 0.0
        for i, (end_step, lr_a, lr_b, mom_a, mom_b) in enumerate(self.phases):
            if t <= end_step or i == len(self.phases) - 1:
                pct = (t - start) / (end_step - start)
                return self._anneal(self.lrs[lr_a], self.lrs[lr_b], pct), self._anneal(
                    mom_a, mom_b, pct
                )
            start = end_step
        raise AssertionError("unreachable")  # pragma: no cover

    def lr_at(self, t: int, base_lr: float) -> float:
        """The rate at step `t` (the same for every group)."""
        return self._at(t)[0]

    def step(self) -> None:
        """Advance one step: set the rate and, if cycling, the momentum."""
        super().step()
        if self.cycle_momentum:
            mom = self._at(self.last_epoch)[1]
            for g in self.optimizer.param_groups:
                if self._beta:
                    g["betas"] = (mom, *g["betas"][1:])
                else:
                    g["momentum"] = mom
