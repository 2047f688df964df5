r"""Optimisers written from scratch as `torch.optim.Optimizer` subclasses, schedules as functions.

Every optimiser here reads the gradient $g_t$ of each parameter $\theta$ and updates $\theta$ in
place. The state each keeps (moments, momentum buffers, step counts) lives in `self.state[p]`
exactly as in torch, so `state_dict()`/`load_state_dict()`, parameter groups and the
[checkpoint][fms_dl.torch.checkpoint] module all work unchanged.

Each `step` has two paths that compute the same thing:

* `foreach=True` (default): the update is applied to whole lists of tensors at once with torch's
  `torch._foreach_*` kernels, grouped by device and dtype. This is how `torch.optim` reaches its
  speed: one kernel launch (or one tight C++ loop on CPU) per operation for all parameters,
  instead of one per parameter.
* `foreach=False`: a plain loop over parameters that reads like the equations. It is the
  reference the reader should start from; the tests check both against `torch.optim`.

Schedules are plain functions `step -> lr` (no state, nothing to checkpoint): the trainer
calls `set_lr(optimizer, schedule(step))` before each step.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

import torch
from torch import Tensor

__all__ = [
    "SGD",
    "AdamW",
    "Lion",
    "clip_grad_norm",
    "constant",
    "cosine_with_warmup",
    "exponential",
    "one_cycle",
    "set_lr",
    "step_decay",
]

Params: TypeAlias = Iterable[Tensor] | Iterable[dict[str, Any]]


def _check_nonneg(name: str, value: float, owner: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0.0:
        raise ValueError(f"{owner}: {name} must be a number >= 0, got {value!r}")


def _check_beta(name: str, value: float, owner: str) -> None:
    if not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"{owner}: {name} must be in [0, 1), got {value!r}")


def _grouped(
    group: dict[str, Any], owner: str
) -> dict[tuple[torch.device, torch.dtype], list[Tensor]]:
    """Parameters of a group that have a gradient, bucketed by (device, dtype) for `_foreach_*`."""
    buckets: dict[tuple[torch.device, torch.dtype], list[Tensor]] = defaultdict(list)
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise TypeError(f"{owner}: sparse gradients are not supported (parameter {p.shape})")
        buckets[(p.device, p.dtype)].append(p)
    return buckets


class AdamW(torch.optim.Optimizer):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019).

    For each parameter, with $g_t = \nabla_\theta L(\theta_{t-1})$ and $t$ counting from 1:

    $$
    \begin{aligned}
    \theta &\leftarrow \theta\,(1 - \eta\lambda) \\
    m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
    v_t &= \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 \\
    \theta &\leftarrow \theta - \frac{\eta}{1-\beta_1^t}\,
        \frac{m_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}
    \end{aligned}
    $$

    The decay $\theta(1-\eta\lambda)$ is applied to the weights directly rather than added to
    the gradient (which is L2 regularisation, and which Adam would rescale by
    $1/\sqrt{v_t}$, decaying rarely-updated weights the most). The bias corrections undo the
    zero initialisation of $m$ and $v$. Matches `torch.optim.AdamW` (the tests check 100 steps
    within 1e-6 in float64).

    Args:
        params: Parameters or parameter-group dicts (as for any torch optimiser).
        lr: Learning rate $\eta$.
        betas: $(\beta_1, \beta_2)$, the decay rates of the first and second moments.
        eps: $\epsilon$, added to the denominator for numerical stability.
        weight_decay: $\lambda$, the decoupled weight decay coefficient.
        foreach: Use the multi-tensor `torch._foreach_*` path (fast) or the per-parameter loop.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        foreach: bool = True,
    ) -> None:
        _check_nonneg("lr", lr, "AdamW")
        _check_beta("betas[0]", betas[0], "AdamW")
        _check_beta("betas[1]", betas[1], "AdamW")
        _check_nonneg("eps", eps, "AdamW")
        _check_nonneg("weight_decay", weight_decay, "AdamW")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Apply one update to every parameter that has a gradient.

        Args:
            closure: Optional callable that re-evaluates the model and returns the loss.

        Returns:
            The closure's loss, or `None`.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            eps, wd = group["eps"], group["weight_decay"]
            for params in _grouped(group, "AdamW").values():
                grads = [p.grad for p in params]
                for p in params:
                    st = self.state[p]
                    if not st:
                        st["step"] = 0
                        st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                        st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["step"] += 1
                steps = [self.state[p]["step"] for p in params]
                ms = [self.state[p]["exp_avg"] for p in params]
                vs = [self.state[p]["exp_avg_sq"] for p in params]
                if group["foreach"]:
                    _adamw_foreach(params, grads, ms, vs, steps, lr, beta1, beta2, eps, wd)  # type: ignore[arg-type]
                else:
                    for p, g, m, v, t in zip(params, grads, ms, vs, steps, strict=True):
                        assert g is not None
                        p.mul_(1.0 - lr * wd)
                        m.lerp_(g, 1.0 - beta1)
                        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                        denom = (v.sqrt() / math.sqrt(1.0 - beta2**t)).add_(eps)
                        p.addcdiv_(m, denom, value=-lr / (1.0 - beta1**t))
        return loss


def _adamw_foreach(
    params: list[Tensor],
    grads: list[Tensor],
    ms: list[Tensor],
    vs: list[Tensor],
    steps: list[int],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    wd: float,
) -> None:
    r"""The AdamW update on lists of same-device, same-dtype tensors (see `AdamW`).

    With $c_t = \sqrt{1-\beta_2^t}$ the step is rewritten as in Kingma & Ba (2015, sec. 2):

    $$
    \frac{\eta}{1-\beta_1^t}\,\frac{m_t}{\sqrt{v_t}/c_t + \epsilon}
      = \frac{\eta\, c_t}{1-\beta_1^t}\,\frac{m_t}{\sqrt{v_t} + \epsilon c_t},
    $$

    which is the same number up to rounding but saves one pass over the second moments (seven
    element-wise passes instead of torch's eight).
    """
    if wd != 0.0:
        torch._foreach_mul_(params, 1.0 - lr * wd)
    torch._foreach_lerp_(ms, grads, 1.0 - beta1)
    torch._foreach_mul_(vs, beta2)
    torch._foreach_addcmul_(vs, grads, grads, 1.0 - beta2)
    c2 = [math.sqrt(1.0 - beta2**t) for t in steps]
    denom = torch._foreach_sqrt(vs)
    torch._foreach_add_(denom, [eps * c for c in c2])
    step_sizes = [-lr * c / (1.0 - beta1**t) for c, t in zip(c2, steps, strict=True)]
    torch._foreach_addcdiv_(params, ms, denom, step_sizes)


class SGD(torch.optim.Optimizer):
    r"""Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay.

    With $d_t = g_t + \lambda\theta$ (weight decay here is L2: added to the gradient),

    $$
    b_t = \begin{cases} d_1 & t = 1 \\ \mu\, b_{t-1} + (1-\tau)\, d_t & t > 1\end{cases}
    \qquad
    \theta \leftarrow \theta - \eta \cdot \begin{cases}
        d_t + \mu\, b_t & \text{Nesterov} \\ b_t & \text{otherwise}\end{cases}
    $$

    ($\mu$ momentum, $\tau$ dampening; with $\mu = 0$ it is plain $\theta \leftarrow \theta -
    \eta d_t$.) This is the formulation of `torch.optim.SGD` (Sutskever et al., 2013), which the
    tests follow for 100 steps within 1e-6 in float64.

    Args:
        params: Parameters or parameter-group dicts.
        lr: Learning rate $\eta$.
        momentum: $\mu$.
        dampening: $\tau$.
        weight_decay: $\lambda$ (L2 penalty coefficient).
        nesterov: Use Nesterov momentum (requires `momentum > 0` and `dampening == 0`).
        foreach: Use the multi-tensor path or the per-parameter loop.
    """

    def __init__(
        self,
        params: Params,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        foreach: bool = True,
    ) -> None:
        _check_nonneg("lr", lr, "SGD")
        _check_nonneg("momentum", momentum, "SGD")
        _check_nonneg("dampening", dampening, "SGD")
        _check_nonneg("weight_decay", weight_decay, "SGD")
        if nesterov and (momentum <= 0.0 or dampening != 0.0):
            raise ValueError(
                "SGD: nesterov=True requires momentum > 0 and dampening == 0, "
                f"got momentum={momentum!r}, dampening={dampening!r}"
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Apply one update to every parameter that has a gradient (see the class docstring)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu, tau = group["lr"], group["momentum"], group["dampening"]
            wd, nesterov = group["weight_decay"], group["nesterov"]
            for params in _grouped(group, "SGD").values():
                grads: list[Tensor] = [p.grad for p in params]  # type: ignore[misc]
                if group["foreach"]:
                    _sgd_foreach(self.state, params, grads, lr, mu, tau, wd, nesterov)
                    continue
                for p, g in zip(params, grads, strict=True):
                    d = g.add(p, alpha=wd) if wd != 0.0 else g
                    if mu != 0.0:
                        st = self.state[p]
                        if "momentum_buffer" not in st:
                            buf = st["momentum_buffer"] = d.detach().clone()
                        else:
                            buf = st["momentum_buffer"]
                            buf.mul_(mu).add_(d, alpha=1.0 - tau)
                        d = d.add(buf, alpha=mu) if nesterov else buf
                    p.add_(d, alpha=-lr)
        return loss


def _sgd_foreach(
    state: dict[Tensor, dict[str, Any]],
    params: list[Tensor],
    grads: list[Tensor],
    lr: float,
    mu: float,
    tau: float,
    wd: float,
    nesterov: bool,
) -> None:
    """The SGD update on lists of same-device, same-dtype tensors (see `SGD`)."""
    d = torch._foreach_add(grads, params, alpha=wd) if wd != 0.0 else grads
    if mu != 0.0:
        fresh = {i for i, p in enumerate(params) if "momentum_buffer" not in state[p]}
        for i in fresh:  # the first step: b_1 = d_1
            state[params[i]]["momentum_buffer"] = d[i].detach().clone()
        old = [i for i in range(len(params)) if i not in fresh]
        if old:
            bufs_old = [state[params[i]]["momentum_buffer"] for i in old]
            torch._foreach_mul_(bufs_old, mu)
            torch._foreach_add_(bufs_old, [d[i] for i in old], alpha=1.0 - tau)
        bufs = [state[p]["momentum_buffer"] for p in params]
        d = torch._foreach_add(d, bufs, alpha=mu) if nesterov else bufs
    torch._foreach_add_(params, d, alpha=-lr)


class Lion(torch.optim.Optimizer):
    r"""Lion, EvoLved Sign Momentum (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms").

    $$
    \begin{aligned}
    u_t &= \operatorname{sign}\big(\beta_1 m_{t-1} + (1-\beta_1)\, g_t\big) \\
    \theta &\leftarrow \theta\,(1-\eta\lambda) - \eta\, u_t \\
    m_t &= \beta_2 m_{t-1} + (1-\beta_2)\, g_t
    \end{aligned}
    $$

    Every coordinate moves by exactly $\pm\eta$ (or 0), so the update has the norm of a sign
    vector: Lion wants a learning rate 3-10x smaller than AdamW's and a weight decay 3-10x larger
    (the product $\eta\lambda$ is what matters). It keeps one moment instead of two, half of
    AdamW's optimiser memory. The update direction interpolates with $\beta_1$, the tracked
    momentum with $\beta_2$.

    Args:
        params: Parameters or parameter-group dicts.
        lr: Learning rate $\eta$.
        betas: $(\beta_1, \beta_2)$.
        weight_decay: $\lambda$ (decoupled, as in AdamW).
        foreach: Use the multi-tensor path or the per-parameter loop.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        foreach: bool = True,
    ) -> None:
        _check_nonneg("lr", lr, "Lion")
        _check_beta("betas[0]", betas[0], "Lion")
        _check_beta("betas[1]", betas[1], "Lion")
        _check_nonneg("weight_decay", weight_decay, "Lion")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "weight_decay": weight_decay,
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Apply one update to every parameter that has a gradient (see the class docstring)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            for params in _grouped(group, "Lion").values():
                grads: list[Tensor] = [p.grad for p in params]  # type: ignore[misc]
                for p in params:
                    if not self.state[p]:
                        self.state[p]["exp_avg"] = torch.zeros_like(p)
                ms = [self.state[p]["exp_avg"] for p in params]
                if group["foreach"]:
                    update = torch._foreach_lerp(ms, grads, 1.0 - beta1)
                    torch._foreach_sign_(update)
                    if wd != 0.0:
                        torch._foreach_mul_(params, 1.0 - lr * wd)
                    torch._foreach_add_(params, update, alpha=-lr)
                    torch._foreach_lerp_(ms, grads, 1.0 - beta2)
                    continue
                for p, g, m in zip(params, grads, ms, strict=True):
                    u = m.lerp(g, 1.0 - beta1).sign_()
                    p.mul_(1.0 - lr * wd)
                    p.add_(u, alpha=-lr)
                    m.lerp_(g, 1.0 - beta2)
        return loss


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules: pure functions of the optimiser step (0-based).
# ---------------------------------------------------------------------------------------------


def _check_step(step: int, owner: str) -> None:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"{owner}: step must be an int >= 0, got {step!r}")


def constant(step: int, *, lr: float) -> float:
    """The same learning rate at every step."""
    _check_step(step, "constant")
    return lr


def cosine_with_warmup(
    step: int, *, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0
) -> float:
    r"""Linear warm-up to `max_lr`, then half a cosine down to `min_lr` (Loshchilov & Hutter, 2017).

    $$
    \eta(s) = \begin{cases}
      \eta_{\max}\,\dfrac{s}{W} & s < W \\[4pt]
      \eta_{\min} + \tfrac12(\eta_{\max}-\eta_{\min})\left(1 + \cos\dfrac{\pi (s - W)}{T - W}\right)
        & W \le s \le T \\[4pt]
      \eta_{\min} & s > T
    \end{cases}
    $$

    The warm-up is a straight line from 0 at step 0 to $\eta_{\max}$ at step $W$, where the
    cosine takes over (the two pieces meet, so the curve is continuous). This is the convention
    of the numpy [LinearWarmupCosineLR][fms_dl.optim.lr_scheduler.LinearWarmupCosineLR] (with
    its default start factor 0), of Hugging Face's `get_cosine_schedule_with_warmup` and of
    torch's `SequentialLR([LinearLR(start_factor=f, total_iters=W), CosineAnnealingLR(T_max=T-W,
    eta_min=min_lr)], milestones=[W])` in the limit $f \to 0$ (torch refuses $f = 0$ itself).
    The first update therefore runs at learning rate 0: AdamW's moments see one gradient before
    the weights move, which is the point of a warm-up. With `warmup_steps=0` it is plain
    `CosineAnnealingLR`.

    Args:
        step: The optimiser step $s$ (0-based).
        max_lr: Peak learning rate $\eta_{\max}$.
        warmup_steps: $W \ge 0$.
        total_steps: $T > W$: the step at which the cosine reaches `min_lr`.
        min_lr: Final learning rate $\eta_{\min}$.

    Raises:
        ValueError: `step` is negative or not an int, or not `0 <= warmup_steps < total_steps`.
    """
    _check_step(step, "cosine_with_warmup")
    if warmup_steps < 0 or total_steps <= warmup_steps:
        raise ValueError(
            "cosine_with_warmup: need 0 <= warmup_steps < total_steps, got "
            f"warmup_steps={warmup_steps!r}, total_steps={total_steps!r}"
        )
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return min_lr + (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress)) / 2.0


def step_decay(step: int, *, lr: float, step_size: int, gamma: float = 0.1) -> float:
    r"""Multiply the learning rate by `gamma` every `step_size` steps: $\eta\,\gamma^{\lfloor s/k \rfloor}$.

    Equal to `torch.optim.lr_scheduler.StepLR(step_size=k, gamma=gamma)`.
    """
    _check_step(step, "step_decay")
    if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size <= 0:
        raise ValueError(f"step_decay: step_size must be an int > 0, got {step_size!r}")
    return lr * gamma ** (step // step_size)


def exponential(step: int, *, lr: float, gamma: float) -> float:
    r"""Decay by `gamma` every step: $\eta\,\gamma^{s}$. Equal to `ExponentialLR(gamma=gamma)`."""
    _check_step(step, "exponential")
    if not gamma > 0.0:
        raise ValueError(f"exponential: gamma must be > 0, got {gamma!r}")
    return lr * gamma**step


def one_cycle(
    step: int,
    *,
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal_strategy: str = "cos",
    three_phase: bool = False,
) -> float:
    r"""The 1cycle policy (Smith & Topin, 2019): up from `max_lr/div_factor` to `max_lr`, then down.

    Phase 1 anneals from $\eta_0 = \eta_{\max}/d$ to $\eta_{\max}$ over the first
    `pct_start` of the steps; phase 2 anneals to $\eta_0/f$ by step `total_steps - 1`. With
    `three_phase=True` the second phase returns to $\eta_0$ symmetrically and a third anneals to
    $\eta_0/f$. Cosine annealing from $a$ to $b$ at fraction $x$ is
    $b + \tfrac12(a-b)(1+\cos\pi x)$. Equal to `torch.optim.lr_scheduler.OneCycleLR` (learning
    rate only; the momentum cycling of that class is not reproduced).

    Args:
        step: Optimiser step in $[0, T)$.
        max_lr: Peak learning rate.
        total_steps: $T$, the length of the cycle.
        pct_start: Fraction of the cycle spent increasing.
        div_factor: $d$: the initial learning rate is `max_lr / div_factor`.
        final_div_factor: $f$: the final learning rate is `max_lr / div_factor / final_div_factor`.
        anneal_strategy: `"cos"` or `"linear"`.
        three_phase: Use the three-phase variant.
    """
    _check_step(step, "one_cycle")
    if step >= total_steps:
        raise ValueError(f"one_cycle: step must be < total_steps={total_steps}, got {step}")
    if not 0.0 < pct_start < 1.0:
        raise ValueError(f"one_cycle: pct_start must be in (0, 1), got {pct_start!r}")
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(
            f"one_cycle: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}"
        )
    initial = max_lr / div_factor
    final = initial / final_div_factor
    if three_phase:
        phases = [
            (float(pct_start * total_steps) - 1, initial, max_lr),
            (float(2 * pct_start * total_steps) - 2, max_lr, initial),
            (total_steps - 1.0, initial, final),
        ]
    else:
        phases = [
            (float(pct_start * total_steps) - 1, initial, max_lr),
            (total_steps - 1.0, max_lr, final),
        ]
    start_step = 0.0
    for i, (end_step, lr_from, lr_to) in enumerate(phases):
        if step <= end_step or i == len(phases) - 1:
            pct = (step - start_step) / (end_step - start_step)
            if anneal_strategy == "cos":
                return lr_to + (lr_from - lr_to) / 2.0 * (math.cos(math.pi * pct) + 1)
            return (lr_to - lr_from) * pct + lr_from
        start_step = end_step
    raise AssertionError("unreachable: the last phase always returns")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group.

    A group holding an `lr_scale` entry gets `lr * lr_scale` (e.g. a smaller rate for embeddings).
    """
    for group in optimizer.param_groups:
        value = lr * group.get("lr_scale", 1.0)
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


def clip_grad_norm(
    parameters: Tensor | Iterable[Tensor], max_norm: float, *, error_if_nonfinite: bool = False
) -> Tensor:
    r"""Rescale gradients in place so that their global L2 norm is at most `max_norm`.

    $$
    \|g\| = \sqrt{\textstyle\sum_i \|g_i\|_2^2}, \qquad
    g_i \leftarrow g_i \cdot \min\!\left(1, \frac{c}{\|g\| + 10^{-6}}\right)
    $$

    The norm is taken over *all* gradients together, so clipping changes the step's length but
    never its direction. Equal to `torch.nn.utils.clip_grad_norm_` (same kernels, so bitwise).

    Args:
        parameters: A tensor or an iterable of tensors whose `.grad` is clipped (those without a
            gradient are ignored).
        max_norm: $c > 0$.
        error_if_nonfinite: Raise if the total norm is NaN or infinite.

    Returns:
        The total norm before clipping, a 0-d tensor (0 if no parameter has a gradient).

    Raises:
        ValueError: `max_norm` is not positive, or the norm is non-finite and
            `error_if_nonfinite` is set.
    """
    if not max_norm > 0.0:
        raise ValueError(f"clip_grad_norm: max_norm must be > 0, got {max_norm!r}")
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    buckets: dict[tuple[torch.device, torch.dtype], list[Tensor]] = defaultdict(list)
    for g in grads:
        buckets[(g.device, g.dtype)].append(g)
    first = grads[0].device
    norms: list[Tensor] = []
    for bucket in buckets.values():
        norms.extend(n.to(first) for n in torch._foreach_norm(bucket, 2.0))
    total: Tensor = torch.linalg.vector_norm(torch.stack(norms), 2.0)
    if error_if_nonfinite and not torch.isfinite(total):
        raise ValueError(f"clip_grad_norm: the total gradient norm is {total.item()}")
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for (device, _), bucket in buckets.items():
        torch._foreach_mul_(bucket, coef.to(device))
    return total
