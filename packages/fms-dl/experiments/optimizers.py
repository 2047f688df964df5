"""Optimisers compared on the same problem over several seeds, with 95% confidence intervals.

An MLP (64-128-10, ReLU) on scikit-learn's digits, 20 epochs of mini-batches of 32, each
optimiser at a conventional learning rate (not tuned per optimiser: this compares the methods
as a practitioner first meets them, not at their best). Seeds change the initialisation and the
batch order; the split is fixed. Intervals are Student-t over seeds (`fms_ml.experiment.t_ci`).

    python packages/fms-dl/experiments/optimizers.py   # writes docs/figures/fms-dl/optimizers.png
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from _common import FIGURES, digits, single_thread

import fms_dl
from fms_dl import nn, optim
from fms_dl.data import DataLoader, TensorDataset
from fms_dl.nn import functional as F
from fms_ml.experiment import Experiment, t_ci

SEEDS = list(range(8))
EPOCHS = 20
OPTIMISERS: dict[str, Callable[[list[nn.Parameter]], optim.Optimizer]] = {
    "SGD (lr 0.05)": lambda p: optim.SGD(p, lr=0.05),
    "SGD momentum 0.9 (lr 0.05)": lambda p: optim.SGD(p, lr=0.05, momentum=0.9),
    "Nesterov 0.9 (lr 0.05)": lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    "Adagrad (lr 0.05)": lambda p: optim.Adagrad(p, lr=0.05),
    "RMSprop (lr 1e-3)": lambda p: optim.RMSprop(p, lr=1e-3),
    "Adam (lr 1e-3)": lambda p: optim.Adam(p, lr=1e-3),
    "AdamW (lr 1e-3, wd 0.01)": lambda p: optim.AdamW(p, lr=1e-3, weight_decay=0.01),
}


def run(
    make: Callable[[list[nn.Parameter]], optim.Optimizer], seed: int
) -> tuple[list[float], float]:
    xtr, xte, ytr, yte = digits()
    fms_dl.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = make(list(model.parameters()))
    loader = DataLoader(TensorDataset(xtr, ytr), batch_size=32, shuffle=True, seed=seed)
    losses = []
    for _ in range(EPOCHS):
        total, n = 0.0, 0
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            total += float(loss.item()) * len(yb)
            n += len(yb)
        losses.append(total / n)
    with fms_dl.no_grad():
        acc = float((model(fms_dl.Tensor(xte)).argmax(-1).data == yte).mean())
    return losses, acc


def main() -> None:
    single_thread()
    exp = Experiment(
        "fms-dl optimisers on digits",
        config={"epochs": EPOCHS, "batch": 32, "model": "64-128-10"},
        seeds=SEEDS,
    )
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    rows = []
    for i, (name, make) in enumerate(OPTIMISERS.items()):
        runs = [run(make, s) for s in SEEDS]
        curves = np.array([r[0] for r in runs])
        accs = np.array([r[1] for r in runs])
        lo, hi = zip(
            *[(c.low, c.high) for c in (t_ci(curves[:, e]) for e in range(EPOCHS))], strict=True
        )
        epochs = np.arange(1, EPOCHS + 1)
        ax1.plot(epochs, curves.mean(0), label=name)
        ax1.fill_between(epochs, lo, hi, alpha=0.2)
        ci_acc, ci_loss = t_ci(accs), t_ci(curves[:, -1])
        ax2.errorbar(
            [100 * ci_acc.estimate],
            [i],
            xerr=[[100 * (ci_acc.estimate - ci_acc.low)], [100 * (ci_acc.high - ci_acc.estimate)]],
            fmt="o",
            capsize=4,
        )
        exp.log(
            name,
            {
                "test_accuracy": accs,
                "final_train_loss": curves[:, -1],
                "accuracy_ci": ci_acc,
                "loss_ci": ci_loss,
            },
        )
        rows.append(f"| {name} | {ci_loss.estimate:.4f} [{ci_loss.low:.4f}, {ci_loss.high:.4f}] | "
                    f"{100 * ci_acc.estimate:.2f} [{100 * ci_acc.low:.2f}, {100 * ci_acc.high:.2f}] |")  # fmt: skip
    ax1.set_yscale("log")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss (mean, 95% CI band)")
    ax1.legend(fontsize=7)
    ax2.set_yticks(range(len(OPTIMISERS)), list(OPTIMISERS), fontsize=8)
    ax2.set_xlabel("test accuracy % (mean, 95% t-interval)")
    ax2.invert_yaxis()
    fig.suptitle(f"MLP on digits, {len(SEEDS)} seeds, {EPOCHS} epochs", fontsize=10)
    fig.tight_layout()
    fig.savefig(FIGURES / "optimizers.png")
    exp.save(Path(__file__).with_name("results") / "optimizers.json")
    print("| optimiser | final training loss [95% CI] | test accuracy % [95% CI] |")
    print("|---|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
