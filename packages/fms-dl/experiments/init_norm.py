"""How initialisation and normalisation keep a deep network's signals alive.

A 30-layer MLP (width 256) on Gaussian inputs: the standard deviation of the activations
(forward) and of the gradients reaching each layer's output (backward), in float64, under several
initialisations, with tanh and with ReLU, and with BatchNorm after every linear layer.
Averaged over 5 seeds (the curves are deterministic functions of the seed; the spread is tiny).

    python packages/fms-dl/experiments/init_norm.py   # writes docs/figures/fms-dl/init_norm.png
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from _common import FIGURES, single_thread

import fms_dl
from fms_dl import nn

DEPTH, WIDTH, BATCH, SEEDS = 30, 256, 256, 5


def run(act: str, scheme: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    fms_dl.manual_seed(seed)
    layers = [nn.Linear(WIDTH, WIDTH, bias=False, dtype=np.float64) for _ in range(DEPTH)]
    norms = (
        [nn.BatchNorm1d(WIDTH, dtype=np.float64) for _ in range(DEPTH)]
        if scheme.endswith("+ BatchNorm")
        else None
    )
    for lin in layers:
        if scheme.startswith("N(0, 1)"):
            nn.init.normal_(lin.weight, 0.0, 1.0)
        elif scheme == "N(0, 0.01²)":
            nn.init.normal_(lin.weight, 0.0, 0.01)
        elif scheme == "Xavier":
            nn.init.xavier_normal_(lin.weight)  # Glorot's original, gain 1
        elif scheme == "Kaiming":
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
    x = fms_dl.Tensor(np.random.default_rng(seed).standard_normal((BATCH, WIDTH)))
    h = x
    hs = []
    for i, lin in enumerate(layers):
        pre = lin(h)
        if norms is not None:
            pre = norms[i](pre)
        h = pre.tanh() if act == "tanh" else pre.relu()
        h.retain_grad()
        hs.append(h)
    (h * fms_dl.Tensor(np.random.default_rng(seed + 1).standard_normal(h.shape))).sum().backward()
    act_std = np.array([float(t.data.std()) for t in hs])
    grad_std = np.array([float(t.grad.data.std()) if t.grad is not None else 0.0 for t in hs])
    return act_std, grad_std


def main() -> None:
    single_thread()
    schemes = {
        "tanh": ["N(0, 1)", "N(0, 0.01²)", "Xavier", "N(0, 1) + BatchNorm"],
        "relu": ["N(0, 1)", "N(0, 0.01²)", "Xavier", "Kaiming", "N(0, 1) + BatchNorm"],
    }
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), dpi=100, sharex=True)
    for col, act in enumerate(("tanh", "relu")):
        for scheme in schemes[act]:
            runs = [run(act, scheme, s) for s in range(SEEDS)]
            a = np.exp(np.mean([np.log(np.maximum(r[0], 1e-30)) for r in runs], axis=0))
            g = np.exp(np.mean([np.log(np.maximum(r[1], 1e-30)) for r in runs], axis=0))
            depth = np.arange(1, DEPTH + 1)
            axes[0, col].semilogy(depth, a, label=scheme)
            axes[1, col].semilogy(depth, g, label=scheme)
            print(f"{act:4s} {scheme:22s} activation std at layer 1/{DEPTH}: {a[0]:.3g}/{a[-1]:.3g}; "
                  f"gradient std at layer 1/{DEPTH}: {g[0]:.3g}/{g[-1]:.3g}")  # fmt: skip
        axes[0, col].set_title(f"{act}: activation std per layer")
        axes[1, col].set_title(f"{act}: gradient std per layer (backward)")
        axes[1, col].set_xlabel("layer")
        axes[0, col].legend(fontsize=7)
    fig.suptitle(
        f"{DEPTH}-layer MLP, width {WIDTH}: geometric mean over {SEEDS} seeds", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(FIGURES / "init_norm.png")


if __name__ == "__main__":
    main()
