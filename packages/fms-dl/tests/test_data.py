"""DataLoader: batching, seeded shuffling, drop_last, custom datasets."""

from __future__ import annotations

import numpy as np
import pytest

from fms_dl.data import DataLoader, Dataset, TensorDataset


def test_batches_cover_the_data_in_order_without_shuffle() -> None:
    x, y = np.arange(10.0).reshape(10, 1), np.arange(10)
    batches = list(DataLoader(TensorDataset(x, y), batch_size=4))
    assert [b[0].shape for b in batches] == [(4, 1), (4, 1), (2, 1)]
    np.testing.assert_array_equal(np.concatenate([b[1].data for b in batches]), y)
    assert len(DataLoader(TensorDataset(x, y), batch_size=4)) == 3


def test_drop_last() -> None:
    loader = DataLoader(TensorDataset(np.arange(10)), batch_size=4, drop_last=True)
    assert len(loader) == 2
    assert [b[0].shape for b in loader] == [(4,), (4,)]


def test_seeded_shuffle_is_reproducible_and_differs_per_epoch() -> None:
    ds = TensorDataset(np.arange(20))

    def epochs(seed: int) -> list[np.ndarray]:
        loader = DataLoader(ds, batch_size=5, shuffle=True, seed=seed)
        return [np.concatenate([b[0].data for b in loader]) for _ in range(2)]

    a, b, c = epochs(1), epochs(1), epochs(2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(a[0], c[0])
    np.testing.assert_array_equal(np.sort(a[0]), np.arange(20))


def test_custom_dataset_uses_collate() -> None:
    class Squares(Dataset):
        def __len__(self) -> int:
            return 5

        def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
            return np.array([i, i * i], dtype=np.float32), i % 2

    (x, y), *_ = list(DataLoader(Squares(), batch_size=3))
    assert x.shape == (3, 2)
    np.testing.assert_array_equal(y.data, [0, 1, 0])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        DataLoader(TensorDataset(np.arange(3)), batch_size=0)
    with pytest.raises(ValueError, match="array 0 has 3 rows but array 1 has 2"):
        TensorDataset(np.arange(3), np.arange(2))
