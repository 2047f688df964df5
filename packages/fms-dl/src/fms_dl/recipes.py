r"""Reusable recipes: the digits CNN of the `cnn_filters` experiment, as a network and a fit.

The layers above compare their models with this one on scikit-learn's 8x8 digits (fms-mm's ViT
does), so the network and its training recipe live here once instead of being copied:

- [`digits_cnn`][fms_dl.recipes.digits_cnn]: Conv(1 -> 16, 5x5, pad 2) + BatchNorm + ReLU +
  MaxPool(2), Conv(16 -> 32, 3x3, pad 1) + ReLU + MaxPool(2), Flatten, Linear(128 -> 10);
- [`fit_digits_cnn`][fms_dl.recipes.fit_digits_cnn]: AdamW (lr $3 \cdot 10^{-3}$, weight decay
  $10^{-4}$) under the 1cycle schedule (Smith & Topin, 2017) for 20 epochs of shuffled batches
  of 64, minimising the cross-entropy $-\frac1B\sum_i \log \mathrm{softmax}(f(x_i))_{y_i}$;
- [`accuracy`][fms_dl.recipes.accuracy]: the fraction of images whose arg-max logit is the label.

Everything runs on the numpy engine; the seed fixes the initialisation and the batch order.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from fms_dl import nn, optim
from fms_dl.data import DataLoader, TensorDataset
from fms_dl.engine import Tensor, manual_seed, no_grad
from fms_dl.nn import functional as F

__all__ = ["accuracy", "digits_cnn", "fit_digits_cnn"]


def digits_cnn() -> nn.Sequential:
    """The `cnn_filters` network for `(batch, 1, 8, 8)` digits: two conv stages, a linear head.

    Returns:
        A freshly initialised `nn.Sequential` mapping `(batch, 1, 8, 8)` to `(batch, 10)` logits.
    """
    return nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip


def _images(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 2 and arr.shape[1] == 64:
        arr = arr.reshape(-1, 1, 8, 8)
    if arr.ndim != 4 or arr.shape[1:] != (1, 8, 8):
        raise ValueError(
            f"{name} must be (n, 1, 8, 8) or (n, 64) digit images, got shape {np.shape(x)}"
        )
    return arr


def fit_digits_cnn(
    x_train: ArrayLike,
    y_train: ArrayLike,
    seed: int = 0,
    epochs: int = 20,
    lr: float = 3e-3,
    batch_size: int = 64,
) -> nn.Sequential:
    """Train [`digits_cnn`][fms_dl.recipes.digits_cnn] with the `cnn_filters` recipe.

    Args:
        x_train: `(n, 1, 8, 8)` (or `(n, 64)`) images scaled to [0, 1].
        y_train: `(n,)` integer labels 0-9.
        seed: Seeds the initialisation (`fms_dl.manual_seed`) and the batch order.
        epochs: Passes over the training set.
        lr: The 1cycle schedule's peak learning rate.
        batch_size: Examples a step.

    Returns:
        The trained network, in evaluation mode.
    """
    x = _images(x_train, "x_train")
    y = np.asarray(y_train).astype(np.int64)
    if y.shape != (len(x),):
        raise ValueError(f"y_train must be ({len(x)},) labels, got shape {np.shape(y_train)}")
    if len(x) and (y.min() < 0 or y.max() > 9):
        raise ValueError(f"y_train labels must be in 0-9, got [{y.min()}, {y.max()}]")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    manual_seed(seed)
    model = digits_cnn()
    opt = optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, seed=seed)
    sched = optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * len(loader))
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            sched.step()
    model.eval()
    return model


def accuracy(model: nn.Module, x: ArrayLike, y: ArrayLike) -> float:
    """Fraction of `x` (`(n, 1, 8, 8)` or `(n, 64)`) whose arg-max logit equals `y`."""
    images = _images(x, "x")
    model.eval()
    with no_grad():
        pred = model(Tensor(images)).argmax(-1).data
    return float((pred == np.asarray(y)).mean())
