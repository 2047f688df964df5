"""An LSTM learns running parity; an MLP that sees the same bits memorises and does not generalise.

Both models get the same 512 random 16-bit strings and the same per-position targets (the parity
of the bits so far), Adam at 1e-2, 25 epochs of batches of 32, over 5 seeds (initialisation, data
and batch order). Accuracy is on the final position (the parity of all 16 bits), on the
training strings and on 1000 unseen ones, with Student-t 95% intervals over seeds.

    python packages/fms-dl/experiments/parity.py   # writes docs/figures/fms-dl/parity.png
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from _common import FIGURES, single_thread

import fms_dl
from fms_dl import nn, optim
from fms_dl.data import DataLoader, TensorDataset
from fms_dl.nn import functional as F
from fms_ml.experiment import t_ci

SEEDS, EPOCHS, LENGTH = list(range(5)), 25, 16


class ParityLSTM(nn.Module):
    """LSTM(1 -> 16) read out at every position."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(1, 16, batch_first=True)
        self.head = nn.Linear(16, 1)

    def forward(self, x: fms_dl.Tensor) -> fms_dl.Tensor:
        out, _ = self.lstm(x.unsqueeze(-1))
        return self.head(out).squeeze(-1)


def data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.integers(0, 2, size=(n, LENGTH))
    return x.astype(np.float32), (np.cumsum(x, 1) % 2).astype(np.float32)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with fms_dl.no_grad():
        return float(((model(fms_dl.Tensor(x)).data[:, -1] > 0) == (y[:, -1] > 0.5)).mean())


def run(kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xtr, ytr = data(rng, 512)
    xte, yte = data(rng, 1000)
    fms_dl.manual_seed(seed)
    if kind == "LSTM (16 units)":
        model: nn.Module = ParityLSTM()
    else:
        model = nn.Sequential(
            nn.Linear(LENGTH, 256),
            nn.ReLU(),
            nn.Linear(256, 256),
            nn.ReLU(),
            nn.Linear(256, LENGTH),
        )
    opt = optim.Adam(model.parameters(), lr=1e-2)
    loader = DataLoader(TensorDataset(xtr, ytr), batch_size=32, shuffle=True, seed=seed)
    curve = []
    for _ in range(EPOCHS):
        for xb, yb in loader:
            opt.zero_grad()
            F.binary_cross_entropy_with_logits(model(xb), yb).backward()
            opt.step()
        curve.append((accuracy(model, xtr, ytr), accuracy(model, xte, yte)))
    return np.array(curve)


def main() -> None:
    single_thread()
    fig, ax = plt.subplots(figsize=(7.5, 4), dpi=100)
    epochs = np.arange(1, EPOCHS + 1)
    for kind, color in (("LSTM (16 units)", "C0"), ("MLP (16-256-256-16)", "C3")):
        curves = np.array([run(kind, s) for s in SEEDS])  # (seeds, epochs, [train, test])
        for j, (style, label) in enumerate((("--", "train"), ("-", "unseen strings"))):
            ax.plot(
                epochs, 100 * curves[:, :, j].mean(0), style, color=color, label=f"{kind}, {label}"
            )
            cis = [t_ci(curves[:, e, j]) for e in range(EPOCHS)]
            ax.fill_between(
                epochs,
                [100 * c.low for c in cis],
                [100 * c.high for c in cis],
                color=color,
                alpha=0.15,
            )
        tr, te = t_ci(curves[:, -1, 0]), t_ci(curves[:, -1, 1])
        print(f"{kind}: train {100 * tr.estimate:.1f}% [{100 * tr.low:.1f}, {100 * tr.high:.1f}], "
              f"unseen {100 * te.estimate:.1f}% [{100 * te.low:.1f}, {100 * te.high:.1f}] (95% t, {len(SEEDS)} seeds)")  # fmt: skip
    ax.axhline(50, color="0.6", lw=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy on the parity of all 16 bits (%)")
    ax.set_title("Running parity: an LSTM generalises, an MLP memorises", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "parity.png")


if __name__ == "__main__":
    main()
