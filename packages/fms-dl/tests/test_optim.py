"""Optimisers follow torch.optim's trajectory for 100 steps within 1e-6 (float64); schedulers
equal torch's LR schedulers step by step (within 1e-12 relative); clipping equals torch's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import fms_dl
from fms_dl import nn, optim
from fms_dl.optim import lr_scheduler as ours_sched

CASES: dict[str, tuple[Callable[..., Any], Callable[..., Any], dict[str, Any]]] = {
    "sgd": (optim.SGD, torch.optim.SGD, {"lr": 0.05}),
    "sgd_momentum_wd": (
        optim.SGD,
        torch.optim.SGD,
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01, "dampening": 0.1},
    ),
    "sgd_nesterov": (optim.SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    "adagrad": (
        optim.Adagrad,
        torch.optim.Adagrad,
        {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.01, "initial_accumulator_value": 0.1},
    ),
    "rmsprop": (optim.RMSprop, torch.optim.RMSprop, {"lr": 0.01}),
    "rmsprop_centered_momentum": (
        optim.RMSprop,
        torch.optim.RMSprop,
        {"lr": 0.005, "momentum": 0.8, "centered": True, "weight_decay": 0.01},
    ),
    "adam": (optim.Adam, torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.01}),
    "adam_amsgrad": (
        optim.Adam,
        torch.optim.Adam,
        {"lr": 0.01, "amsgrad": True, "betas": (0.8, 0.99)},
    ),
    "adamw": (optim.AdamW, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
}


def _models(h: Any) -> tuple[nn.Module, torch.nn.Module]:
    fms_dl.manual_seed(0)
    ours = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    theirs = torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
    ).double()
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    return ours, theirs


@pytest.mark.parametrize("name", sorted(CASES))
def test_optimizer_trajectory_matches_torch(h: Any, name: str) -> None:
    """100 steps on the same regression problem from the same start: parameters within 1e-6."""
    ours_cls, torch_cls, kw = CASES[name]
    ours, theirs = _models(h)
    opt_o, opt_t = ours_cls(ours.parameters(), **kw), torch_cls(theirs.parameters(), **kw)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 5)), rng.standard_normal((32, 3))
    xo, yo, xt, yt = fms_dl.Tensor(x), fms_dl.Tensor(y), torch.tensor(x), torch.tensor(y)
    for _ in range(100):
        opt_o.zero_grad()
        opt_t.zero_grad()
        nn.functional.mse_loss(ours(xo), yo).backward()
        torch.nn.functional.mse_loss(theirs(xt), yt).backward()
        opt_o.step()
        opt_t.step()
    for (n, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        h.close(p, q, 1e-6, f"{name}: {n} after 100 steps")


def test_param_groups_and_missing_grads(h: Any) -> None:
    """Per-group learning rates work, and parameters without a gradient are left alone."""
    ours, theirs = _models(h)
    po, pt = list(ours.parameters()), list(theirs.parameters())
    opt_o = optim.SGD([{"params": po[:2]}, {"params": po[2:], "lr": 0.5}], lr=0.1, momentum=0.5)
    opt_t = torch.optim.SGD(
        [{"params": pt[:2]}, {"params": pt[2:], "lr": 0.5}], lr=0.1, momentum=0.5
    )
    x = np.random.default_rng(1).standard_normal((4, 5))
    for _ in range(3):
        opt_o.zero_grad()
        opt_t.zero_grad()
        ours(fms_dl.Tensor(x)).sum().backward()
        theirs(torch.tensor(x)).sum().backward()
        po[3].grad = None
        pt[3].grad = None
        opt_o.step()
        opt_t.step()
    for p, q in zip(po, pt, strict=True):
        h.close(p, q, 1e-9, "param")


def _torch_lrs(
    make: Callable[[torch.optim.Optimizer], Any], steps: int, opt_kw: dict[str, Any] | None = None
) -> list[tuple[float, float]]:
    opt = torch.optim.SGD(
        [torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9, **(opt_kw or {})
    )
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
        opt.step()
        sched.step()
    return out


def _our_lrs(make: Callable[[optim.Optimizer], Any], steps: int) -> list[tuple[float, float]]:
    opt = optim.SGD([fms_dl.Tensor(np.zeros(1), requires_grad=True)], lr=0.1, momentum=0.9)
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
        opt.step()
        sched.step()
    return out


SCHEDULES: dict[str, tuple[Callable[..., Any], Callable[..., Any], int]] = {
    "step": (
        lambda o: ours_sched.StepLR(o, 7, 0.5),
        lambda o: torch.optim.lr_scheduler.StepLR(o, 7, 0.5),
        40,
    ),
    "exponential": (
        lambda o: ours_sched.ExponentialLR(o, 0.93),
        lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.93),
        40,
    ),
    "warmup_cosine": (
        lambda o: ours_sched.LinearWarmupCosineLR(o, 10, 50, eta_min=1e-3, warmup_start_factor=0.1),
        lambda o: torch.optim.lr_scheduler.SequentialLR(
            o,
            [
                torch.optim.lr_scheduler.LinearLR(o, 0.1, 1.0, total_iters=10),
                torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=40, eta_min=1e-3),
            ],
            milestones=[10],
        ),
        51,
    ),
    "one_cycle": (
        lambda o: ours_sched.OneCycleLR(o, 1.0, 60),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, 1.0, 60),
        60,
    ),
    "one_cycle_three_phase_linear": (
        lambda o: ours_sched.OneCycleLR(
            o, 0.5, 45, pct_start=0.25, anneal_strategy="linear", three_phase=True
        ),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, 0.5, 45, pct_start=0.25, anneal_strategy="linear", three_phase=True
        ),
        45,
    ),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_scheduler_matches_torch(name: str) -> None:
    """Learning rate (and cycled momentum) equal torch's at every step (relative 1e-12)."""
    ours_make, torch_make, steps = SCHEDULES[name]
    ours, theirs = _our_lrs(ours_make, steps), _torch_lrs(torch_make, steps)
    np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=1e-12, atol=1e-15)


def test_one_cycle_cycles_adam_beta1() -> None:
    """With Adam, OneCycleLR moves beta1 like torch does."""
    po = fms_dl.Tensor(np.zeros(1), requires_grad=True)
    pt = torch.zeros(1, requires_grad=True)
    oo, ot = optim.Adam([po], lr=0.1), torch.optim.Adam([pt], lr=0.1)
    so, st = ours_sched.OneCycleLR(oo, 0.3, 20), torch.optim.lr_scheduler.OneCycleLR(ot, 0.3, 20)
    for _ in range(19):
        assert oo.param_groups[0]["betas"][0] == pytest.approx(
            ot.param_groups[0]["betas"][0], rel=1e-12
        )
        assert oo.param_groups[0]["lr"] == pytest.approx(ot.param_groups[0]["lr"], rel=1e-12)
        ot.step()
        so.step()
        st.step()


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.1, 100.0])
def test_clip_grad_norm_matches_torch(h: Any, norm_type: float, max_norm: float) -> None:
    """Global-norm clipping returns torch's total norm and leaves torch's gradients (1e-12)."""
    ours, theirs = _models(h)
    x = np.random.default_rng(0).standard_normal((4, 5))
    ours(fms_dl.Tensor(x)).sum().backward()
    theirs(torch.tensor(x)).sum().backward()
    no = optim.clip_grad_norm_(ours.parameters(), max_norm, norm_type)
    nt = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm, norm_type)
    assert float(no.item()) == pytest.approx(float(nt), rel=1e-12)
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        h.close(p.grad, q.grad, 1e-12, "clipped grad")


def test_optimizer_bad_input() -> None:
    p = fms_dl.Tensor(np.zeros(2), requires_grad=True)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        optim.Adam([p], lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam([p], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="two groups"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(TypeError, match="dtype"):
        optim.SGD([fms_dl.Tensor(np.zeros(2, dtype=np.int64))], lr=0.1)
    with pytest.raises(ValueError, match="warmup_steps"):
        ours_sched.LinearWarmupCosineLR(optim.SGD([p], lr=0.1), 10, 5)
    with pytest.raises(ValueError, match="momentum"):
        ours_sched.OneCycleLR(optim.Adagrad([p]), 0.1, 10)


@pytest.mark.parametrize(
    "name", ["sgd_momentum_wd", "adagrad", "rmsprop_centered_momentum", "adam_amsgrad", "adamw"]
)
def test_save_and_resume_is_bitwise_identical(h: Any, name: str, tmp_path: Any) -> None:
    """Train 5 steps, save model and optimiser (safetensors), train 5 more; a fresh model and
    optimiser loaded from the files and trained the same 5 steps end bit-for-bit equal."""
    ours_cls, _, kw = CASES[name]
    rng = np.random.default_rng(0)
    x, y = fms_dl.Tensor(rng.standard_normal((16, 5))), fms_dl.Tensor(rng.standard_normal((16, 3)))

    def make() -> tuple[nn.Module, optim.Optimizer]:
        fms_dl.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        return model, ours_cls(model.parameters(), **kw)

    def train(model: nn.Module, opt: optim.Optimizer, steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()

    model, opt = make()
    train(model, opt, 5)
    nn.save_model(model, tmp_path / "model.safetensors")
    optim.save_optimizer(opt, tmp_path / "opt.safetensors")
    train(model, opt, 5)

    fms_dl.manual_seed(123)
    model2 = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    opt2 = ours_cls(model2.parameters(), **kw)
    nn.load_model(model2, tmp_path / "model.safetensors")
    optim.load_optimizer(opt2, tmp_path / "opt.safetensors")
    train(model2, opt2, 5)
    for (n, p), (_, q) in zip(model.named_parameters(), model2.named_parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data, err_msg=n)


def test_load_optimizer_rejects_mismatches(tmp_path: Any) -> None:
    fms_dl.manual_seed(0)
    a = nn.Linear(3, 2)
    opt = optim.Adam(a.parameters())
    a(fms_dl.randn(4, 3)).sum().backward()
    opt.step()
    optim.save_optimizer(opt, tmp_path / "adam.safetensors")
    with pytest.raises(ValueError, match="holds Adam state, not SGD"):
        optim.load_optimizer(optim.SGD(a.parameters(), lr=0.1), tmp_path / "adam.safetensors")
    bigger = nn.Linear(4, 2)
    with pytest.raises(
        ValueError, match=r"state 'exp_avg' of parameter 0 has shape \(2, 3\), expected \(2, 4\)"
    ):
        optim.load_optimizer(optim.Adam(bigger.parameters()), tmp_path / "adam.safetensors")
    with pytest.raises(ValueError, match="group 0 has 2 parameters, expected 1"):
        optim.load_optimizer(optim.Adam([a.weight]), tmp_path / "adam.safetensors")
    nn.save_model(a, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="holds no optimiser state"):
        optim.load_optimizer(opt, tmp_path / "model.safetensors")
