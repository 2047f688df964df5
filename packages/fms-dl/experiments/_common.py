"""Shared bits for the experiment scripts: output folder, the digits split, single-threaded BLAS."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIGURES = Path(__file__).resolve().parents[3] / "docs" / "figures" / "fms-dl"


def single_thread() -> None:
    """Pin BLAS to one thread: the shapes are tiny and the machine is shared."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass


def digits(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits scaled to [0, 1], split 75/25 (stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
