"""Experiments for the training-toolkit chapter: the schedules, and optimisers x schedules on digits.

    python packages/fms-dl/experiments/training_toolkit.py [--seeds 5] [--steps 300]

1. `docs/figures/fms-dl/torch_schedules.png`: the learning-rate schedules of
   `fms_dl.torch.optim` over 1000 steps.
2. `docs/figures/fms-dl/torch_optimizers.png` and a markdown table on stdout: a small MLP
   with dropout (64-256-10) trained with the `Trainer` on scikit-learn's digits (1147 train,
   200 validation, 450 test images, standardised) by AdamW with a constant learning rate and
   with warm-up + cosine decay, SGD with Nesterov momentum and Lion, each at four peak
   learning rates, over several seeds. Reported: mean validation loss, and test loss and
   accuracy with 95% Student-t intervals (`fms_ml.experiment.t_ci`); each family's learning
   rate is chosen on the validation loss. The seed sets the weights, dropout masks and batch
   order; the split is fixed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from sklearn.datasets import load_digits  # type: ignore[import-untyped]
from torch import nn

from fms_dl.torch import (
    SGD,
    AdamW,
    Callback,
    Lion,
    Trainer,
    TrainerConfig,
    constant,
    cosine_with_warmup,
    exponential,
    one_cycle,
    seed_everything,
    step_decay,
)
from fms_ml.experiment import t_ci

matplotlib.use("Agg")
import matplotlib.pyplot as plt

FIGURES = Path(__file__).resolve().parents[3] / "docs" / "figures" / "fms-dl"


def schedules_figure() -> Path:
    steps = np.arange(1000)
    curves = {
        "cosine_with_warmup (W=100, min_lr=0.1)": [
            cosine_with_warmup(int(s), max_lr=1.0, warmup_steps=100, total_steps=1000, min_lr=0.1)
            for s in steps
        ],
        "one_cycle (pct_start=0.3)": [
            one_cycle(int(s), max_lr=1.0, total_steps=1000) for s in steps
        ],
        "step_decay (k=300, gamma=0.3)": [
            step_decay(int(s), lr=1.0, step_size=300, gamma=0.3) for s in steps
        ],
        "exponential (gamma=0.997)": [exponential(int(s), lr=1.0, gamma=0.997) for s in steps],
        "constant": [constant(int(s), lr=1.0) for s in steps],
    }
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for name, lrs in curves.items():
        ax.plot(steps, lrs, label=name)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("learning rate / peak")
    ax.set_title("Learning-rate schedules of fms_dl.torch.optim")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = FIGURES / "torch_schedules.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def digits() -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_val, y_val, x_test, y_test): 1147 / 200 / 450 images, fixed split."""
    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm].astype(np.float32), y[perm]
    n_train, n_val = 1147, 200
    mean, std = x[:n_train].mean(0), x[:n_train].std(0) + 1e-6
    x = (x - mean) / std
    t = torch.from_numpy
    cut = n_train + n_val
    return (
        t(x[:n_train]),
        t(y[:n_train]),
        t(x[n_train:cut]),
        t(y[n_train:cut]),
        t(x[cut:]),
        t(y[cut:]),
    )


MakeOpt = Callable[[list[nn.Parameter], float], torch.optim.Optimizer]
# name -> (optimiser given params and peak lr, schedule given peak lr, grid of peak lrs)
Setup = tuple[MakeOpt, Callable[[float], Callable[[int], float]], list[float]]


def setups(steps: int) -> dict[str, Setup]:
    """Each optimiser at four peak learning rates a factor ~3 apart (the second is the usual
    default of its family); Lion's weight decay is 10x AdamW's, as its authors advise."""
    warm = steps // 10

    def cos(peak: float) -> Callable[[int], float]:
        return lambda s: cosine_with_warmup(
            s, max_lr=peak, warmup_steps=warm, total_steps=steps, min_lr=peak / 10
        )

    def flat(peak: float) -> Callable[[int], float]:
        return lambda s: constant(s, lr=peak)

    return {
        "AdamW, constant lr": (
            lambda p, lr: AdamW(p, lr=lr, weight_decay=0.05),
            flat,
            [1e-3, 3e-3, 1e-2, 3e-2],
        ),
        "AdamW, warm-up + cosine": (
            lambda p, lr: AdamW(p, lr=lr, weight_decay=0.05),
            cos,
            [1e-3, 3e-3, 1e-2, 3e-2],
        ),
        "SGD Nesterov, warm-up + cosine": (
            lambda p, lr: SGD(p, lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4),
            cos,
            [0.01, 0.03, 0.1, 0.3],
        ),
        "Lion, warm-up + cosine": (
            lambda p, lr: Lion(p, lr=lr, weight_decay=0.5),
            cos,
            [1e-4, 3e-4, 1e-3, 3e-3],
        ),
    }


class Curve(Callback):
    def __init__(self) -> None:
        self.points: list[tuple[int, float]] = []

    def on_eval(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        self.points.append((step, metrics["test_loss"]))


def run(
    make_opt: MakeOpt,
    schedule: Callable[[int], float],
    lr: float,
    seed: int,
    steps: int,
    data: tuple[torch.Tensor, ...],
) -> dict[str, Any]:
    x_tr, y_tr, x_va, y_va, x_te, y_te = data
    seed_everything(seed)
    model = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Dropout(0.2), nn.Linear(256, 10))
    order = np.random.default_rng(seed)
    epochs = [order.permutation(len(x_tr)) for _ in range(steps * 64 // len(x_tr) + 2)]
    flat = np.concatenate(epochs)

    def batch_fn(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(flat[64 * i : 64 * i + 64])
        return x_tr[idx], y_tr[idx]

    def loss_fn(m: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(m(b[0]), b[1])

    def eval_fn(m: nn.Module) -> dict[str, float]:
        out = {}
        for split, (xs, ys) in {"val": (x_va, y_va), "test": (x_te, y_te)}.items():
            logits = m(xs)
            out[f"{split}_loss"] = float(nn.functional.cross_entropy(logits, ys))
            out[f"{split}_accuracy"] = float((logits.argmax(1) == ys).float().mean())
        return out

    curve = Curve()
    config = TrainerConfig(
        max_steps=steps, eval_every=max(1, steps // 30), progress=False, device="cpu"
    )
    final = Trainer(
        model,
        make_opt(list(model.parameters()), lr),
        config,
        batch_fn=batch_fn,
        loss_fn=loss_fn,
        lr_schedule=schedule,
        eval_fn=eval_fn,
        callbacks=[curve],
    ).fit()
    return {"final": final, "curve": curve.points}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    FIGURES.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    print(f"wrote {schedules_figure()}")

    data = digits()
    fig, (ax_lr, ax_curve) = plt.subplots(1, 2, figsize=(11, 4))
    print(f"\nDigits MLP, {args.steps} steps of batch 64, {args.seeds} seeds, 95% t intervals\n")
    print("| optimiser, schedule | peak lr | val loss | test loss | test accuracy |")
    print("|---|---:|---|---|---|")
    for name, (make_opt, schedule, grid) in setups(args.steps).items():
        finals, results = [], []
        for lr in grid:
            runs = [
                run(make_opt, schedule(lr), lr, seed, args.steps, data)
                for seed in range(args.seeds)
            ]
            val = t_ci([r["final"]["eval_val_loss"] for r in runs])
            loss = t_ci([r["final"]["eval_test_loss"] for r in runs])
            acc = t_ci([100 * r["final"]["eval_test_accuracy"] for r in runs])
            finals.append(loss)
            results.append((lr, val, loss, acc, runs))
        best = min(range(len(grid)), key=lambda i: results[i][1].estimate)  # chosen on val
        for i, (lr, val, loss, acc, _runs) in enumerate(results):
            mark = " **(chosen on val)**" if i == best else ""
            print(
                f"| {name} | {lr:g}{mark} | {val.estimate:.3f} "
                f"| {loss.estimate:.3f} [{loss.low:.3f}, {loss.high:.3f}] "
                f"| {acc.estimate:.1f}% [{acc.low:.1f}, {acc.high:.1f}] |"
            )
        lr, _, _, _, runs = results[best]
        steps = np.array([s for s, _ in runs[0]["curve"]])
        curves = np.array([[v for _, v in r["curve"]] for r in runs])
        cis = [t_ci(curves[:, j]) for j in range(curves.shape[1])]
        ax_curve.plot(steps, [c.estimate for c in cis], label=f"{name}, lr {lr:g}")
        ax_curve.fill_between(steps, [c.low for c in cis], [c.high for c in cis], alpha=0.25)
        rel = np.array(grid) / grid[1]
        ax_lr.errorbar(
            rel,
            [c.estimate for c in finals],
            yerr=[[c.estimate - c.low for c in finals], [c.high - c.estimate for c in finals]],
            marker="o",
            capsize=3,
            label=f"{name} (x1 = {grid[1]:g})",
        )
    ax_lr.set_xscale("log")
    ax_lr.set_yscale("log")
    ax_lr.set_xlabel("peak lr / the family's default")
    ax_lr.set_ylabel(f"test cross-entropy after {args.steps} steps")
    ax_lr.set_title("Learning-rate sensitivity (95% CI)")
    ax_lr.legend(fontsize=7)
    ax_lr.grid(alpha=0.3)
    ax_curve.set_xlabel("optimiser step")
    ax_curve.set_ylabel("test cross-entropy")
    ax_curve.set_yscale("log")
    ax_curve.set_title(f"At the lr chosen on val: mean of {args.seeds} seeds, 95% CI")
    ax_curve.legend(fontsize=7)
    ax_curve.grid(alpha=0.3)
    fig.tight_layout()
    out = FIGURES / "torch_optimizers.png"
    fig.savefig(out, dpi=100)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
