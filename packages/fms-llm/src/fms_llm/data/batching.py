r"""Batches of token windows: random windows for training, sequential windows for evaluation.

**Random windows, a pure function of `(seed, index)`.** Micro-batch `index` draws its window
starts with `numpy.random.default_rng([seed, index])`, uniformly over every position where a window
of `seq_len + 1` tokens fits inside one shard. Nothing is carried from one batch to the next, so a
run resumed at step $s$ sees exactly the batches the uninterrupted run would have seen: exact
resume needs no data-loader state. Inputs are `window[:-1]`, targets `window[1:]` (next-token
prediction).

**A slice for each data-parallel rank.** With `part=(r, W)` the same $B$ starts are drawn and
rank $r$ keeps rows $rB/W, \dots, (r+1)B/W - 1$: the $W$ ranks together hold exactly the
one-process batch, which is what makes a $W$-process run follow the one-process trajectory.

**Sequential windows** tile a split without overlap, in order, for a deterministic validation
loss; every token of the split (but the last partial window) is predicted exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["random_windows", "sequential_windows"]


def _check(shards: Sequence[np.ndarray[Any, Any]], batch_size: int, seq_len: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    longest = max((len(s) for s in shards), default=0)
    if longest < seq_len + 1:
        raise ValueError(
            f"no shard holds a window of seq_len + 1 = {seq_len + 1} tokens (longest shard: "
            f"{longest} tokens); use a smaller seq_len or a larger corpus"
        )


def random_windows(
    shards: Sequence[np.ndarray[Any, Any]],
    *,
    batch_size: int,
    seq_len: int,
    seed: int,
    index: int,
    part: tuple[int, int] = (0, 1),
) -> tuple[np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, np.dtype[np.int64]]]:
    """Micro-batch `index`: inputs and targets of shape `(batch_size, seq_len)`, int64.

    With `part=(rank, world_size)`, only that rank's `batch_size / world_size` rows of it.

    Args:
        shards: token arrays (e.g. memory-mapped shards of one split).
        batch_size: windows per batch.
        seq_len: tokens per window (the model's context).
        seed: run seed.
        index: global micro-batch index (optimiser step × accumulation + micro-step).
        part: `(rank, world_size)`: the slice of the batch this data-parallel rank takes.

    Raises:
        ValueError: bad sizes, or a `part` whose world size does not divide `batch_size`.
    """
    _check(shards, batch_size, seq_len)
    rank, world = part
    if world < 1 or not 0 <= rank < world or batch_size % world:
        raise ValueError(
            f"part=(rank={rank}, world_size={world}) must have 0 <= rank < world_size and "
            f"world_size dividing batch_size={batch_size}"
        )
    rows = slice(rank * batch_size // world, (rank + 1) * batch_size // world)
    counts = np.array([max(0, len(s) - seq_len) for s in shards], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    rng = np.random.default_rng([seed, index])
    starts = rng.integers(0, offsets[-1], size=batch_size)[rows]
    which = np.searchsorted(offsets, starts, side="right") - 1
    windows = np.stack(
        [
            np.asarray(shards[w][s - offsets[w] : s - offsets[w] + seq_len + 1], dtype=np.int64)
            for w, s in zip(which, starts, strict=True)
        ]
    )
    return windows[:, :-1], windows[:, 1:]


def sequential_windows(
    shards: Sequence[np.ndarray[Any, Any]],
    *,
    batch_size: int,
    seq_len: int,
    max_batches: int | None = None,
) -> Iterator[tuple[np.ndarray[Any, np.dtype[np.int64]], np.ndarray[Any, np.dtype[np.int64]]]]:
    """Non-overlapping windows in order, `batch_size` at a time (the last batch may be smaller)."""
    _check(shards, 1, seq_len)
    batch: list[np.ndarray[Any, Any]] = []
    n = 0
    for shard in shards:
        for start in range(0, len(shard) - seq_len, seq_len):
            batch.append(np.asarray(shard[start : start + seq_len + 1], dtype=np.int64))
            if len(batch) == batch_size:
                w = np.stack(batch)
                yield w[:, :-1], w[:, 1:]
                batch = []
                n += 1
                if max_batches is not None and n >= max_batches:
                    return
    if batch:
        w = np.stack(batch)
        yield w[:, :-1], w[:, 1:]
