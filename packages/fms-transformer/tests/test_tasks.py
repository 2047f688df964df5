"""Toy task generators, and a brief training run through the fms_dl Trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fms_transformer.tasks import (
    IGNORE_INDEX,
    ModularAdditionTask,
    SequenceTask,
    TaskError,
    evaluate,
    make_task,
    train_task,
)


@pytest.mark.parametrize("kind", ["copy", "reverse", "sort"])
def test_sequence_task_layout_and_targets(kind: str) -> None:
    task = SequenceTask(kind, n_symbols=10)  # type: ignore[arg-type]
    batch = task.sample(np.random.default_rng(0), 16, 1, 6)
    assert batch.inputs.shape == batch.targets.shape == (16, 12)
    sep = task.n_symbols
    for row_in, row_t in zip(batch.inputs, batch.targets, strict=True):
        n = int((row_in == sep).nonzero()[0, 0])
        src = row_in[:n].numpy()
        expected = {"copy": src, "reverse": src[::-1], "sort": np.sort(src)}[kind]
        np.testing.assert_array_equal(row_t[n : 2 * n].numpy(), expected)
        assert torch.all(row_t[:n] == IGNORE_INDEX)
        assert torch.all(row_t[2 * n :] == IGNORE_INDEX)
        np.testing.assert_array_equal(
            row_in[n + 1 : 2 * n].numpy(), expected[:-1]
        )  # teacher forcing


def test_samples_are_a_pure_function_of_the_generator_seed() -> None:
    task = SequenceTask("copy")
    a = task.sample(np.random.default_rng([3, 5]), 8, 1, 4)
    b = task.sample(np.random.default_rng([3, 5]), 8, 1, 4)
    assert torch.equal(a.inputs, b.inputs)
    assert torch.equal(a.targets, b.targets)


def test_modular_addition_split_and_encoding() -> None:
    task = ModularAdditionTask(p=7, train_fraction=0.8)
    train, test = task.pairs("train"), task.pairs("test")
    assert len(train) + len(test) == 49
    assert not {tuple(x) for x in train} & {tuple(x) for x in test}
    batch = task.encode(np.array([[3, 5]]))
    assert batch.inputs.tolist() == [[3, 7, 5, 8]]
    assert batch.targets.tolist() == [[IGNORE_INDEX] * 3 + [1]]


def test_evaluate_counts_exact_and_token_accuracy() -> None:
    class Oracle(torch.nn.Module):
        def __init__(self, targets: torch.Tensor) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.targets = targets

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            t = self.targets.clamp_min(0).clone()
            t[0, -1] = (t[0, -1] + 1) % 10  # one wrong token in the first sample
            return torch.nn.functional.one_hot(t, 12).float()

    task = SequenceTask("copy")
    batch = task.sample(np.random.default_rng(0), 4, 3, 3)
    m = evaluate(Oracle(batch.targets), batch)
    assert m["exact_acc"] == pytest.approx(0.75)
    assert m["token_acc"] == pytest.approx(11 / 12)


def test_brief_training_learns_short_reversal_with_the_fms_dl_trainer() -> None:
    """A 300-step run on length-1..3 strings over 4 symbols reaches >= 95% exact accuracy."""
    res = train_task(
        SequenceTask("reverse", n_symbols=4), steps=300, max_len=3, d_model=32, lr=3e-3
    )
    assert res.metrics["exact_acc"] >= 0.95, res.metrics


def test_task_bad_input() -> None:
    with pytest.raises(TaskError, match="task must be"):
        make_task("add")  # type: ignore[arg-type]
    with pytest.raises(TaskError, match="min_len=3, max_len=2"):
        SequenceTask("copy").sample(np.random.default_rng(0), 2, 3, 2)
    with pytest.raises(TaskError, match="train_fraction"):
        ModularAdditionTask(train_fraction=1.5).pairs("train")
