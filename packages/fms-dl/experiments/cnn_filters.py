"""Train a small CNN on digits with the numpy engine and show what its first layer learned.

Conv(1->16, 5x5, pad 2) + BatchNorm + ReLU + MaxPool, then Conv(16->32, 3x3) + ReLU + MaxPool
and a linear read-out. Test accuracy over 5 seeds with a 95% t-interval; the filters and the
feature maps of one test digit are from seed 0.

    python packages/fms-dl/experiments/cnn_filters.py   # writes docs/figures/fms-dl/cnn_filters.png
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from _common import FIGURES, digits, single_thread

import fms_dl
from fms_dl import nn
from fms_dl.recipes import accuracy, fit_digits_cnn
from fms_ml.experiment import t_ci

SEEDS = list(range(5))


def train(seed: int) -> tuple[nn.Sequential, float, np.ndarray]:
    """The network and recipe of `fms_dl.recipes` (shared with fms-mm's ViT comparison)."""
    xtr, xte, ytr, yte = digits()
    xtr, xte = xtr.reshape(-1, 1, 8, 8), xte.reshape(-1, 1, 8, 8)
    model = fit_digits_cnn(xtr, ytr, seed=seed)
    return model, accuracy(model, xte, yte), xte


def main() -> None:
    single_thread()
    results = [train(s) for s in SEEDS]
    ci = t_ci([r[1] for r in results])
    print(
        f"CNN test accuracy over {len(SEEDS)} seeds: {100 * ci.estimate:.2f}% [{100 * ci.low:.2f}, {100 * ci.high:.2f}] (95% t-interval)"
    )
    model, acc, xte = results[0]
    w = model[0].weight.data[:, 0]  # (16, 5, 5)
    digit = xte[3:4]
    with fms_dl.no_grad():
        maps = model[2](model[1](model[0](fms_dl.Tensor(digit)))).data[0]  # after BN + ReLU
    fig = plt.figure(figsize=(11, 4.2), dpi=100)
    gs = fig.add_gridspec(4, 17, width_ratios=[2.2] + [1] * 16)
    ax = fig.add_subplot(gs[:, 0])
    ax.imshow(digit[0, 0], cmap="gray_r")
    ax.set_title("input", fontsize=8)
    ax.axis("off")
    lim = np.abs(w).max()
    for i in range(16):
        a = fig.add_subplot(gs[(i // 8) * 2, 1 + (i % 8) * 2 : 3 + (i % 8) * 2])
        a.imshow(w[i], cmap="RdBu_r", vmin=-lim, vmax=lim)
        a.axis("off")
        b = fig.add_subplot(gs[(i // 8) * 2 + 1, 1 + (i % 8) * 2 : 3 + (i % 8) * 2])
        b.imshow(maps[i], cmap="viridis")
        b.axis("off")
    fig.suptitle(f"First-layer 5x5 filters (red +, blue -) and their feature maps on one test digit; "
                 f"seed 0 test accuracy {100 * acc:.1f}%", fontsize=9)  # fmt: skip
    fig.savefig(FIGURES / "cnn_filters.png")


if __name__ == "__main__":
    main()
