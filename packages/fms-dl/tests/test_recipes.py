"""The shared digits CNN recipe: its shapes, that it learns, that a seed fixes it, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

import fms_dl
from fms_dl.recipes import accuracy, digits_cnn, fit_digits_cnn


def _digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8), y


def test_digits_cnn_maps_digits_to_ten_logits() -> None:
    assert digits_cnn()(fms_dl.Tensor(np.zeros((3, 1, 8, 8), np.float32))).shape == (3, 10)


def test_fit_learns_and_the_seed_fixes_the_weights() -> None:
    """Three epochs on 400 digits already classify 300 unseen ones far above chance (10%), and
    the same seed gives the same network to the last bit."""
    x, y = _digits()
    a = fit_digits_cnn(x[:400], y[:400], seed=3, epochs=3)
    assert accuracy(a, x[1000:1300], y[1000:1300]) > 0.6
    b = fit_digits_cnn(x[:400].reshape(-1, 64), y[:400], seed=3, epochs=3)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        np.testing.assert_array_equal(pa.data, pb.data)


def test_bad_input_is_named() -> None:
    x, y = _digits()
    with pytest.raises(ValueError, match=r"x_train must be \(n, 1, 8, 8\).*got shape \(4, 3\)"):
        fit_digits_cnn(np.zeros((4, 3)), y[:4])
    with pytest.raises(ValueError, match=r"y_train must be \(4,\) labels, got shape \(5,\)"):
        fit_digits_cnn(x[:4], y[:5])
    with pytest.raises(ValueError, match=r"labels must be in 0-9, got \[0, 12\]"):
        fit_digits_cnn(x[:2], np.array([0, 12]))
    with pytest.raises(ValueError, match="epochs must be a positive int, got 0"):
        fit_digits_cnn(x[:4], y[:4], epochs=0)
