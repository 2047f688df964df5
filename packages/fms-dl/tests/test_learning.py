"""The engine learns: an MLP (>= 97%) and a CNN (>= 98%) on scikit-learn's digits, and an LSTM
solves running parity on 16-bit strings, which an MLP seeing the same bits cannot generalise."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import fms_dl
from fms_dl import nn, optim
from fms_dl.data import DataLoader, TensorDataset
from fms_dl.nn import functional as F


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)


def _fit(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float) -> None:
    opt = optim.Adam(model.parameters(), lr=lr)
    sched = optim.lr_scheduler.LinearWarmupCosineLR(opt, 20, epochs * int(np.ceil(len(x) / 64)))
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, seed=0)
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            sched.step()


def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with fms_dl.no_grad():
        return float((model(fms_dl.Tensor(x)).argmax(-1).data == y).mean())


def test_mlp_digits_at_least_97_percent() -> None:
    xtr, xte, ytr, yte = _digits()
    fms_dl.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 10))
    _fit(model, xtr, ytr, epochs=30, lr=3e-3)
    acc = _accuracy(model, xte, yte)
    assert acc >= 0.97, acc


def test_cnn_digits_at_least_98_percent() -> None:
    """Mean test accuracy over three seeds at least 98%, and no seed below 97%.

    One seed sits on the edge (440 or 441 of 450 test digits, by the CPU's BLAS rounding), so the
    claim is made of the mean over seeds, as the docs report it, not of one run.
    """
    xtr, xte, ytr, yte = _digits()
    accs = []
    for seed in range(3):
        fms_dl.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 16x4x4
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 32x2x2
            nn.Flatten(),
            nn.Linear(128, 10),
        )
        _fit(model, xtr.reshape(-1, 1, 8, 8), ytr, epochs=20, lr=3e-3)
        accs.append(_accuracy(model, xte.reshape(-1, 1, 8, 8), yte))
    assert np.mean(accs) >= 0.98, accs
    assert min(accs) >= 0.97, accs


class _ParityLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(1, 16, batch_first=True)
        self.head = nn.Linear(16, 1)

    def forward(self, x: fms_dl.Tensor) -> fms_dl.Tensor:
        out, _ = self.lstm(x.unsqueeze(-1))
        return self.head(out).squeeze(-1)


def _parity_data(
    rng: np.random.Generator, n: int, length: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Random bit strings; the target at step t is the parity of bits 0..t (running XOR)."""
    x = rng.integers(0, 2, size=(n, length))
    return x.astype(np.float32), (np.cumsum(x, 1) % 2).astype(np.float32)


def _parity_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with fms_dl.no_grad():
        return float(((model(fms_dl.Tensor(x)).data[:, -1] > 0) == (y[:, -1] > 0.5)).mean())


def test_lstm_solves_parity_that_an_mlp_cannot_generalise() -> None:
    """Both models see the same 512 training strings of 16 bits and the same per-step targets.

    The LSTM learns the recurrence (state XOR bit) and is exact on 1000 unseen strings; the MLP
    (two hidden layers of 256, seeing all 16 bits at once) memorises the training strings but stays
    at chance on unseen ones: parity has no low-order correlation for it to exploit.
    """
    rng = np.random.default_rng(0)
    xtr, ytr = _parity_data(rng, 512)
    xte, yte = _parity_data(rng, 1000)
    fms_dl.manual_seed(0)
    mlp = nn.Sequential(
        nn.Linear(16, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 16)
    )
    lstm = _ParityLSTM()
    for model, epochs in ((lstm, 15), (mlp, 30)):
        opt = optim.Adam(model.parameters(), lr=1e-2)
        loader = DataLoader(TensorDataset(xtr, ytr), batch_size=32, shuffle=True, seed=0)
        for _ in range(epochs):
            for xb, yb in loader:
                opt.zero_grad()
                F.binary_cross_entropy_with_logits(model(xb), yb).backward()
                opt.step()
    assert _parity_accuracy(lstm, xte, yte) >= 0.99
    assert _parity_accuracy(mlp, xtr, ytr) >= 0.95  # it fits the training strings...
    assert _parity_accuracy(mlp, xte, yte) <= 0.60  # ...but is at chance on new ones
