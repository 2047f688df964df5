"""Optimisers and schedules against `torch.optim` (the reference users trust).

Tolerances: optimiser trajectories within 1e-6 (float64, 100 steps; observed ~1e-15),
schedules within 1e-12 relative, `clip_grad_norm` bitwise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fms_dl.torch import optim as fo


def _problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)
    x = torch.randn(32, 5, generator=g, dtype=torch.float64)
    y = torch.randn(32, 3, generator=g, dtype=torch.float64)
    return model, x, y


def _trajectory(make_opt, steps: int = 100, seed: int = 0) -> list[torch.Tensor]:
    model, x, y = _problem(seed)
    opt = make_opt(model.parameters())
    for i in range(steps):
        opt.zero_grad()
        # a different mini-batch each step so the gradient direction keeps changing
        idx = torch.arange(i % 4, 32, 4)
        loss = ((model(x[idx]) - y[idx]) ** 2).mean()
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def _assert_close(ours: list[torch.Tensor], ref: list[torch.Tensor], tol: float = 1e-6) -> None:
    for a, b in zip(ours, ref, strict=True):
        assert (a - b).abs().max().item() < tol


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 1e-2},
        {"lr": 3e-2, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.1},
        {"lr": 1e-2, "weight_decay": 0.0},
    ],
)
def test_adamw_follows_torch_adamw_for_100_steps_within_1e_6_float64(kwargs, foreach):
    ours = _trajectory(lambda p: fo.AdamW(p, foreach=foreach, **kwargs))
    ref = _trajectory(lambda p: torch.optim.AdamW(p, foreach=False, **kwargs))
    _assert_close(ours, ref)
    start = _trajectory(lambda p: fo.AdamW(p, lr=0.0), steps=1)
    assert any((a - b).abs().max() > 1e-3 for a, b in zip(ours, start, strict=True))


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 0.05},
        {"lr": 0.05, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01},
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    ],
)
def test_sgd_follows_torch_sgd_for_100_steps_within_1e_6_float64(kwargs, foreach):
    ours = _trajectory(lambda p: fo.SGD(p, foreach=foreach, **kwargs))
    ref = _trajectory(lambda p: torch.optim.SGD(p, foreach=False, **kwargs))
    _assert_close(ours, ref)


def _reference_lion(params, lr, betas, weight_decay):
    """Lion as written in Chen et al. (2023), Algorithm 2, one tensor at a time."""
    params = list(params)
    state = [torch.zeros_like(p) for p in params]
    beta1, beta2 = betas

    class _Ref:
        def zero_grad(self):
            for p in params:
                p.grad = None

        @torch.no_grad()
        def step(self):
            for p, m in zip(params, state, strict=True):
                g = p.grad
                if g is None:
                    continue
                c = beta1 * m + (1 - beta1) * g
                p.data = p.data - lr * (torch.sign(c) + weight_decay * p.data)
                m.copy_(beta2 * m + (1 - beta2) * g)

    return _Ref()


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_lion_follows_the_paper_formula_for_100_steps_within_1e_6_float64(foreach, weight_decay):
    kwargs = {"lr": 3e-3, "betas": (0.9, 0.99), "weight_decay": weight_decay}
    ours = _trajectory(lambda p: fo.Lion(p, foreach=foreach, **kwargs))
    ref = _trajectory(lambda p: _reference_lion(p, **kwargs))
    _assert_close(ours, ref)


def test_param_groups_with_different_hyperparameters_and_missing_grads():
    """Groups keep their own lr/weight decay; a parameter without a gradient is left alone."""
    torch.manual_seed(0)
    a, b, frozen = (torch.randn(4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    for cls, ref_cls in [(fo.AdamW, torch.optim.AdamW), (fo.SGD, torch.optim.SGD)]:
        p1 = [t.detach().clone().requires_grad_() for t in (a, b, frozen)]
        p2 = [t.detach().clone().requires_grad_() for t in (a, b, frozen)]
        groups = lambda ps: [  # noqa: E731
            {"params": [ps[0]], "lr": 0.1, "weight_decay": 0.0},
            {"params": [ps[1], ps[2]], "lr": 0.01, "weight_decay": 0.1},
        ]
        o1, o2 = cls(groups(p1), lr=1.0), ref_cls(groups(p2), lr=1.0)
        for _ in range(5):
            for ps, o in ((p1, o1), (p2, o2)):
                o.zero_grad()
                (ps[0].sin().sum() + ps[1].cos().sum()).backward()
                o.step()
        _assert_close(p1, p2)
        assert torch.equal(p1[2], frozen.detach())


def test_closure_is_evaluated_and_its_loss_returned():
    w = torch.ones(3, requires_grad=True)
    opt = fo.AdamW([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: fo.AdamW(p, lr=-1.0), "AdamW: lr must be"),
        (
            lambda p: fo.AdamW(p, betas=(1.0, 0.9)),
            r"AdamW: betas\[0\] must be in \[0, 1\), got 1.0",
        ),
        (lambda p: fo.AdamW(p, weight_decay=-0.1), "AdamW: weight_decay"),
        (lambda p: fo.SGD(p, lr=0.1, nesterov=True), "nesterov=True requires momentum > 0"),
        (lambda p: fo.SGD(p, lr=0.1, momentum=-0.5), "SGD: momentum must be"),
        (lambda p: fo.Lion(p, betas=(0.9, 1.5)), r"Lion: betas\[1\]"),
    ],
)
def test_bad_hyperparameters_raise_naming_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make([torch.zeros(2, requires_grad=True)])


def test_sparse_gradient_is_rejected():
    emb = nn.Embedding(5, 2, sparse=True)
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(TypeError, match="sparse gradients"):
        fo.AdamW(emb.parameters()).step()


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------


def _torch_lrs(make_sched, steps: int, lr: float = 1.0) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make_sched(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _close(ours: list[float], ref: list[float]) -> None:
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref, strict=True):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-15)


def _cosine_formula(s: int, max_lr: float, warmup: int, total: int, min_lr: float) -> float:
    """The documented schedule, written out: max*s/W in the warm-up, then half a cosine."""
    if s < warmup:
        return max_lr * s / warmup
    if s > total:
        return min_lr
    return min_lr + 0.5 * (max_lr - min_lr) * (
        1 + math.cos(math.pi * (s - warmup) / (total - warmup))
    )


@pytest.mark.parametrize(("warmup", "total", "min_lr"), [(5, 40, 0.0), (1, 30, 0.1), (10, 11, 0.2)])
def test_cosine_with_warmup_equals_torch_linear_then_cosine_annealing(warmup, total, min_lr):
    """Equal (1e-12 relative) to torch's LinearLR + CosineAnnealingLR in the limit start_factor -> 0.

    torch refuses `start_factor=0`, but its warm-up is linear in the factor f,
    lr(s) = max * (f + (1 - f) s / W), so lr(s) - f * max * (1 - s / W) is the f = 0 curve exactly.
    """
    lr, f = 1.0, 0.25
    lr_sched = torch.optim.lr_scheduler

    def make(opt):
        parts = [
            lr_sched.LinearLR(opt, start_factor=f, total_iters=warmup),
            lr_sched.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=min_lr),
        ]
        return lr_sched.SequentialLR(opt, parts, milestones=[warmup])

    torch_lrs = _torch_lrs(make, total + 1, lr)
    ref = [v - f * lr * (1 - s / warmup) if s < warmup else v for s, v in enumerate(torch_lrs)]
    ours = [
        fo.cosine_with_warmup(s, max_lr=lr, warmup_steps=warmup, total_steps=total, min_lr=min_lr)
        for s in range(total + 1)
    ]
    _close(ours, ref)
    _close(ours, [_cosine_formula(s, lr, warmup, total, min_lr) for s in range(total + 1)])
    assert ours[0] == 0.0  # step 0 runs at lr 0
    assert ours[warmup] == lr  # the peak is reached at step W, where the cosine starts
    assert ours[total] == pytest.approx(min_lr)
    assert (
        fo.cosine_with_warmup(
            total + 5, max_lr=lr, warmup_steps=warmup, total_steps=total, min_lr=min_lr
        )
        == min_lr
    )


@pytest.mark.parametrize(("warmup", "total", "min_lr"), [(0, 20, 0.05), (4, 30, 0.0), (7, 9, 0.1)])
def test_cosine_with_warmup_equals_the_numpy_linear_warmup_cosine_lr(warmup, total, min_lr):
    """The torch toolkit's schedule and the numpy engine's scheduler are one convention (1e-12)."""
    from fms_dl import optim as np_optim
    from fms_dl.nn import Parameter

    opt = np_optim.SGD([Parameter(np.zeros(1))], lr=0.3)
    sched = np_optim.lr_scheduler.LinearWarmupCosineLR(opt, warmup, total, eta_min=min_lr)
    numpy_lrs = []
    for _ in range(total + 4):  # past T too: both hold min_lr
        numpy_lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    ours = [
        fo.cosine_with_warmup(s, max_lr=0.3, warmup_steps=warmup, total_steps=total, min_lr=min_lr)
        for s in range(total + 4)
    ]
    _close(ours, numpy_lrs)
    _close(ours, [_cosine_formula(s, 0.3, warmup, total, min_lr) for s in range(total + 4)])


def test_cosine_without_warmup_equals_cosine_annealing_lr():
    ref = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=25, eta_min=0.01), 26, 0.5
    )
    ours = [
        fo.cosine_with_warmup(s, max_lr=0.5, warmup_steps=0, total_steps=25, min_lr=0.01)
        for s in range(26)
    ]
    _close(ours, ref)


def test_step_decay_equals_step_lr():
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.3), 50, 0.2)
    _close([fo.step_decay(s, lr=0.2, step_size=7, gamma=0.3) for s in range(50)], ref)


def test_exponential_equals_exponential_lr():
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.93), 60, 0.2)
    _close([fo.exponential(s, lr=0.2, gamma=0.93) for s in range(60)], ref)


def test_constant_equals_lambda_lr_of_one():
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0), 10, 0.3)
    _close([fo.constant(s, lr=0.3) for s in range(10)], ref)


@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_equals_one_cycle_lr(strategy, three_phase):
    total = 57
    kwargs = {
        "max_lr": 0.4,
        "total_steps": total,
        "pct_start": 0.25,
        "div_factor": 10.0,
        "final_div_factor": 100.0,
        "anneal_strategy": strategy,
        "three_phase": three_phase,
    }

    def make(opt):
        return torch.optim.lr_scheduler.OneCycleLR(opt, cycle_momentum=False, **kwargs)

    ref = _torch_lrs(make, total)
    _close([fo.one_cycle(s, **kwargs) for s in range(total)], ref)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: fo.cosine_with_warmup(-1, max_lr=1, warmup_steps=1, total_steps=5),
            "step must be an int >= 0, got -1",
        ),
        (
            lambda: fo.cosine_with_warmup(0, max_lr=1, warmup_steps=5, total_steps=5),
            "warmup_steps=5, total_steps=5",
        ),
        (lambda: fo.step_decay(0, lr=1, step_size=0), "step_size must be an int > 0, got 0"),
        (lambda: fo.exponential(0, lr=1, gamma=0.0), "gamma must be > 0"),
        (
            lambda: fo.one_cycle(10, max_lr=1, total_steps=10),
            "step must be < total_steps=10, got 10",
        ),
        (
            lambda: fo.one_cycle(0, max_lr=1, total_steps=10, anneal_strategy="exp"),
            "anneal_strategy",
        ),
    ],
)
def test_bad_schedule_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_set_lr_sets_every_group_and_honours_lr_scale():
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = fo.AdamW([{"params": [a]}, {"params": [b], "lr_scale": 0.1}])
    fo.set_lr(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.5, pytest.approx(0.05)]


# ---------------------------------------------------------------------------------------------
# Gradient clipping
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 1e6])
def test_clip_grad_norm_equals_torch_clip_grad_norm_bitwise(max_norm):
    torch.manual_seed(0)
    shapes = [(3, 4), (7,), (2, 2, 2), (1,)]
    ours = [torch.randn(s, requires_grad=True) for s in shapes]
    ref = [t.detach().clone().requires_grad_() for t in ours]
    frozen = torch.randn(3, requires_grad=True)  # no gradient: ignored by both
    for ps in (ours, ref):
        sum((p**3).sum() for p in ps).backward()
    n1 = fo.clip_grad_norm([*ours, frozen], max_norm)
    n2 = torch.nn.utils.clip_grad_norm_([*ref, frozen], max_norm)
    assert torch.equal(n1, n2)
    for a, b in zip(ours, ref, strict=True):
        assert torch.equal(a.grad, b.grad)
    total_after = math.sqrt(sum(float((p.grad**2).sum()) for p in ours))
    assert total_after <= max_norm * (1 + 1e-5) or total_after == pytest.approx(float(n1))


def test_clip_grad_norm_edge_cases():
    p = torch.zeros(2, requires_grad=True)
    assert fo.clip_grad_norm([p], 1.0).item() == 0.0  # no gradients at all
    p.grad = torch.tensor([3.0, 4.0])
    assert fo.clip_grad_norm(p, 1.0).item() == pytest.approx(5.0)  # a single tensor is accepted
    assert p.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="max_norm must be > 0, got 0"):
        fo.clip_grad_norm([p], 0)
    p.grad = torch.tensor([float("inf"), 1.0])
    with pytest.raises(ValueError, match="total gradient norm is inf"):
        fo.clip_grad_norm([p], 1.0, error_if_nonfinite=True)


@pytest.mark.parametrize("name", ["SGD", "AdamW", "Lion"])
def test_parameters_that_start_receiving_gradients_late_match_torch(name):
    """A parameter without a gradient for the first steps gets fresh state when it starts
    (mixed fresh and existing state inside one foreach call), as in torch; within 1e-6."""
    torch.manual_seed(0)
    a0, b0 = torch.randn(3, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    ours = [a0.clone().requires_grad_(), b0.clone().requires_grad_()]
    ref = [a0.clone().requires_grad_(), b0.clone().requires_grad_()]
    if name == "SGD":
        o1, o2 = fo.SGD(ours, lr=0.1, momentum=0.9), torch.optim.SGD(ref, lr=0.1, momentum=0.9)
    elif name == "AdamW":
        o1, o2 = fo.AdamW(ours, lr=0.1), torch.optim.AdamW(ref, lr=0.1)
    else:
        o1, o2 = (
            fo.Lion(ours, lr=0.1),
            _reference_lion(ref, lr=0.1, betas=(0.9, 0.99), weight_decay=0.0),
        )
    for step in range(6):
        for ps, o in ((ours, o1), (ref, o2)):
            o.zero_grad()
            loss = ps[0].sin().sum() + (ps[1].cos().sum() if step >= 3 else 0.0)
            loss.backward()
            o.step()
    _assert_close(ours, ref)
    assert not torch.equal(ours[1], b0)
