"""Toy sequence tasks (copy, reverse, sort, modular addition) and a training loop for them.

Every task is posed to a decoder-only [`TransformerLM`][fms_transformer.models.TransformerLM] as
one sequence `source SEP target`; the loss is next-token cross-entropy on the target tokens
only. Each task isolates one thing attention must learn:

- **copy**: attend to the token `n + 1` positions back (an induction-like, position-based lookup);
- **reverse**: attend to position $2n - t$, which needs the length $n$;
- **sort**: content-based lookup: output the smallest remaining symbol (counting, no positions);
- **modular addition** $a + b \\bmod p$: a lookup table the model must learn (and, on held-out
  pairs, generalise; Power et al. 2022 "grokking", Nanda et al. 2023).

**Exact-sequence accuracy** is measured with teacher forcing: a sample counts as correct when the
argmax at every target position equals the target. By induction over positions this is the same
event as greedy decoding reproducing the whole target, at the cost of one forward pass.

Batches are pure functions of `(seed, index)` (`numpy.random.default_rng([seed, i])`), as the
`fms_dl.torch` `Trainer` requires for exact resumption.

Run `python -m fms_transformer.tasks --task copy` to train one task from the command line.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fms_dl.torch import AdamW, Trainer, TrainerConfig, cosine_with_warmup, seed_everything
from fms_transformer.models import PositionalKind, TransformerLM

__all__ = [
    "IGNORE_INDEX",
    "Batch",
    "ModularAdditionTask",
    "SequenceTask",
    "TaskError",
    "TrainResult",
    "evaluate",
    "make_model",
    "make_task",
    "train_task",
]

IGNORE_INDEX = -100
"""Target value that the loss and the accuracy ignore (source tokens, padding)."""

TaskName = Literal["copy", "reverse", "sort", "modadd"]


class TaskError(ValueError):
    """A bad task name, length range or size."""


@dataclass(frozen=True)
class Batch:
    """A batch of tasks as next-token prediction.

    Attributes:
        inputs: `(batch, T)` int64 token ids (the sequence without its last token).
        targets: `(batch, T)` int64 next tokens, `IGNORE_INDEX` except at target positions.
    """

    inputs: Tensor
    targets: Tensor


@dataclass(frozen=True)
class SequenceTask:
    """Copy, reverse or sort a random string of `n_symbols` symbols of length `min_len..max_len`.

    Token ids: symbols `0..n_symbols-1`, `SEP = n_symbols`, `PAD = n_symbols + 1`.
    A sample of length $n$ is `x_1 .. x_n SEP y_1 .. y_n PAD ..`, padded to `2 * max_len + 1`.

    Args:
        kind: `"copy"`, `"reverse"` or `"sort"`.
        n_symbols: Alphabet size.
    """

    kind: Literal["copy", "reverse", "sort"]
    n_symbols: int = 10

    @property
    def vocab_size(self) -> int:
        """Symbols plus SEP and PAD."""
        return self.n_symbols + 2

    def sample(
        self, rng: np.random.Generator, batch_size: int, min_len: int, max_len: int
    ) -> Batch:
        """Draw `batch_size` samples with lengths uniform in `[min_len, max_len]`."""
        if not 1 <= min_len <= max_len:
            raise TaskError(
                f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}"
            )
        sep, pad = self.n_symbols, self.n_symbols + 1
        total = 2 * max_len  # inputs: x_1..x_n SEP y_1..y_{n-1}, padded
        seq = np.full((batch_size, total + 1), pad, dtype=np.int64)
        tgt = np.full((batch_size, total), IGNORE_INDEX, dtype=np.int64)
        lengths = rng.integers(min_len, max_len + 1, size=batch_size)
        for b, n in enumerate(lengths):
            src = rng.integers(0, self.n_symbols, size=n)
            out = {"copy": src, "reverse": src[::-1], "sort": np.sort(src)}[self.kind]
            seq[b, :n] = src
            seq[b, n] = sep
            seq[b, n + 1 : 2 * n + 1] = out
            tgt[b, n : 2 * n] = (
                out  # position n (SEP) predicts y_1, ..., position 2n-1 predicts y_n
            )
        return Batch(torch.from_numpy(seq[:, :-1]), torch.from_numpy(tgt))


@dataclass(frozen=True)
class ModularAdditionTask:
    """$a + b \\bmod p$ as the sequence `a + b = c` (tokens `0..p-1`, `+ = p`, `= = p + 1`).

    The $p^2$ pairs are split once (by `split_seed`) into a training set (`train_fraction`) and a
    held-out set; accuracy is reported on the held-out pairs.

    Args:
        p: The modulus (a prime in the literature; any `p >= 2` works).
        train_fraction: Fraction of pairs seen in training.
        split_seed: Seed of the split.
    """

    p: int = 23
    train_fraction: float = 0.9
    split_seed: int = 0

    @property
    def vocab_size(self) -> int:
        """Residues plus `+` and `=`."""
        return self.p + 2

    def pairs(self, split: Literal["train", "test"]) -> np.ndarray:
        """The `(a, b)` pairs of one split, shape `(n, 2)`."""
        if self.p < 2 or not 0 < self.train_fraction < 1:
            raise TaskError(
                f"need p >= 2 and 0 < train_fraction < 1, got {self.p}, {self.train_fraction}"
            )
        grid = np.stack(np.meshgrid(np.arange(self.p), np.arange(self.p), indexing="ij"), -1)
        all_pairs = grid.reshape(-1, 2)
        order = np.random.default_rng(self.split_seed).permutation(len(all_pairs))
        n_train = round(self.train_fraction * len(all_pairs))
        return all_pairs[order[:n_train] if split == "train" else order[n_train:]]

    def encode(self, pairs: np.ndarray) -> Batch:
        """Batch for the given `(a, b)` pairs."""
        a, b = pairs[:, 0], pairs[:, 1]
        plus, eq = np.full_like(a, self.p), np.full_like(a, self.p + 1)
        seq = np.stack((a, plus, b, eq, (a + b) % self.p), axis=1).astype(np.int64)
        tgt = np.full((len(a), 4), IGNORE_INDEX, dtype=np.int64)
        tgt[:, 3] = seq[:, 4]
        return Batch(torch.from_numpy(seq[:, :-1]), torch.from_numpy(tgt))

    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """`batch_size` training pairs drawn with replacement."""
        train = self.pairs("train")
        return self.encode(train[rng.integers(0, len(train), size=batch_size)])


def make_task(name: TaskName, **kwargs: int | float) -> SequenceTask | ModularAdditionTask:
    """The task called `name`: `"copy"`, `"reverse"`, `"sort"` or `"modadd"`."""
    if name in ("copy", "reverse", "sort"):
        return SequenceTask(name, **kwargs)  # type: ignore[arg-type]
    if name == "modadd":
        return ModularAdditionTask(**kwargs)  # type: ignore[arg-type]
    raise TaskError(f"task must be copy, reverse, sort or modadd, got {name!r}")


def make_model(
    vocab_size: int,
    *,
    positional: PositionalKind = "learned",
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    max_len: int = 256,
    dropout: float = 0.0,
) -> TransformerLM:
    """A small pre-norm decoder-only model for the toy tasks."""
    return TransformerLM(
        vocab_size,
        d_model,
        n_layers,
        n_heads,
        4 * d_model,
        positional=positional,
        max_len=max_len,
        dropout=dropout,
        ffn="gelu_mlp",
    )


def loss_fn(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Mean next-token cross-entropy over target positions."""
    inputs, targets = batch
    logits = model(inputs)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)


@torch.no_grad()
def evaluate(model: nn.Module, batch: Batch) -> dict[str, float]:
    """Exact-sequence and per-token accuracy on target positions (teacher forcing = greedy)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits = model(batch.inputs.to(device))
    model.train(was_training)
    targets = batch.targets.to(device)
    scored = targets != IGNORE_INDEX
    correct = (logits.argmax(-1) == targets) | ~scored
    return {
        "exact_acc": float(correct.all(dim=1).float().mean()),
        "token_acc": float(correct[scored].float().mean()) if scored.any() else float("nan"),
    }


@dataclass
class TrainResult:
    """Outcome of [`train_task`][fms_transformer.tasks.train_task]."""

    model: TransformerLM
    metrics: dict[str, float]


def train_task(
    task: SequenceTask | ModularAdditionTask,
    *,
    positional: PositionalKind = "learned",
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 0.01,
    min_len: int = 1,
    max_len: int = 8,
    seed: int = 0,
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    eval_size: int = 512,
    model_max_len: int = 256,
    device: str | None = "cpu",
) -> TrainResult:
    """Train a fresh model on `task` with the `fms_dl.torch` `Trainer`; return it and its metrics.

    AdamW with linear warm-up (5% of steps) and cosine decay, gradient clipping at 1, fp32.
    Metrics (`exact_acc`, `token_acc`) are measured on `eval_size` fresh samples with lengths in
    `[min_len, max_len]`, or on the held-out pairs for modular addition (which also reports
    `train_exact_acc` on the training pairs).
    """
    seed_everything(seed)
    model = make_model(
        task.vocab_size,
        positional=positional,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        max_len=model_max_len,
    )

    def batch_fn(i: int) -> tuple[Tensor, Tensor]:
        rng = np.random.default_rng([seed, i])
        if isinstance(task, ModularAdditionTask):
            b = task.sample(rng, batch_size)
        else:
            b = task.sample(rng, batch_size, min_len, max_len)
        return b.inputs, b.targets

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
        betas=(0.9, 0.98),
    )
    warmup = max(1, steps // 20)
    trainer = Trainer(
        model,
        optimizer,
        TrainerConfig(
            max_steps=steps,
            precision="fp32",
            progress=False,
            log_every=max(1, steps),
            device=device,
        ),
        batch_fn=batch_fn,
        loss_fn=loss_fn,
        lr_schedule=lambda s: cosine_with_warmup(
            s, max_lr=lr, warmup_steps=warmup, total_steps=steps
        ),
    )
    final = trainer.fit()
    if isinstance(task, ModularAdditionTask):
        eval_batch = task.encode(task.pairs("test"))
    else:
        eval_batch = task.sample(np.random.default_rng([seed, 10**9]), eval_size, min_len, max_len)
    metrics = {"loss": float(final.get("loss", float("nan"))), **evaluate(model, eval_batch)}
    if isinstance(task, ModularAdditionTask):  # also report memorisation of the training pairs
        train_metrics = evaluate(model, task.encode(task.pairs("train")))
        metrics["train_exact_acc"] = train_metrics["exact_acc"]
    return TrainResult(model, metrics)


def main(argv: list[str] | None = None) -> None:
    """Command line: train one toy task and print its metrics as JSON."""
    parser = argparse.ArgumentParser(description="Train a toy task with the fms_dl Trainer.")
    parser.add_argument("--task", choices=["copy", "reverse", "sort", "modadd"], default="copy")
    parser.add_argument("--positional", default="learned")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--max-len", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    task = make_task(args.task)
    result = train_task(
        task,
        positional=args.positional,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        max_len=args.max_len,
        seed=args.seed,
        weight_decay=1.0 if args.task == "modadd" else 0.01,
    )
    print(json.dumps({"task": args.task, **result.metrics}))


if __name__ == "__main__":
    main()
