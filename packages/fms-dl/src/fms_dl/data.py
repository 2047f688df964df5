"""`Dataset`, `TensorDataset` and `DataLoader`: batching with seeded, reproducible shuffling.

`DataLoader(shuffle=True, seed=s)` draws one permutation per epoch from its own generator, so
the sequence of batches depends only on `s` (and is independent of every other random draw).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from fms_dl.engine import Tensor

__all__ = ["DataLoader", "Dataset", "TensorDataset", "default_collate"]


class Dataset:
    """A map-style dataset: subclasses define `__len__` and `__getitem__(i)`."""

    def __len__(self) -> int:
        raise TypeError(f"{type(self).__name__} does not define __len__")

    def __getitem__(self, index: int) -> Any:
        raise TypeError(f"{type(self).__name__} does not define __getitem__")


class TensorDataset(Dataset):
    """Examples are the rows of equally long arrays or tensors: `TensorDataset(X, y)[i] == (X[i], y[i])`."""

    def __init__(self, *arrays: Tensor | np.ndarray) -> None:
        if not arrays:
            raise ValueError("TensorDataset: expected at least one array")
        self.arrays = [np.asarray(a.data if isinstance(a, Tensor) else a) for a in arrays]
        n = len(self.arrays[0])
        for i, a in enumerate(self.arrays):
            if len(a) != n:
                raise ValueError(
                    f"TensorDataset: array 0 has {n} rows but array {i} has {len(a)} (shape {a.shape})"
                )

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return tuple(a[index] for a in self.arrays)

    def __getitems__(self, indices: np.ndarray) -> tuple[Tensor, ...]:
        """A whole batch at once (fancy indexing instead of one row at a time)."""
        return tuple(Tensor(a[indices]) for a in self.arrays)


def default_collate(items: Sequence[Any]) -> Any:
    """Stack a list of examples: tuples are collated field by field, arrays into a `Tensor`."""
    first = items[0]
    if isinstance(first, tuple | list):
        return tuple(default_collate([it[i] for it in items]) for i in range(len(first)))
    if isinstance(first, Tensor):
        return Tensor(np.stack([it.data for it in items]))
    return Tensor(np.stack([np.asarray(it) for it in items]))


class DataLoader:
    """Iterate over a dataset in batches.

    Args:
        dataset: a `Dataset` (or anything with `__len__` and `__getitem__`).
        batch_size: examples per batch.
        shuffle: draw a fresh permutation every epoch.
        drop_last: drop the final batch if it is smaller than `batch_size`.
        seed: seed of the loader's own shuffling generator (reproducible epochs).
        collate_fn: turns a list of examples into a batch (default: `default_collate`).
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
        collate_fn: Callable[[Sequence[Any]], Any] | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        self.dataset, self.batch_size = dataset, batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.collate_fn = collate_fn or default_collate
        self.generator = np.random.default_rng(seed)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        n = len(self.dataset)
        order = self.generator.permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                return
            if hasattr(self.dataset, "__getitems__") and self.collate_fn is default_collate:
                yield self.dataset.__getitems__(idx)
            else:
                yield self.collate_fn([self.dataset[int(i)] for i in idx])
