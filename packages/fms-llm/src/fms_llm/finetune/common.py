r"""What the three fine-tuning methods share: run settings, masked log-probabilities, the loop.

[completion_logprobs][fms_llm.finetune.common.completion_logprobs] is the quantity every method
is written in: for a sequence $x$ and a mask $m$ over the tokens the model produced,
$\log \pi(y \mid x) = \sum_t m_t \log \pi(x_t \mid x_{<t})$.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fms_dl.torch import AdamW, Trainer, TrainerConfig, cosine_with_warmup

__all__ = ["FinetuneError", "TrainArgs", "completion_logprobs", "run_trainer", "token_logprobs"]


class FinetuneError(ValueError):
    """Fine-tuning inputs or settings that cannot work."""


@dataclass
class TrainArgs:
    """Settings of a fine-tuning run (shared by SFT, DPO and GRPO).

    Attributes:
        steps: optimiser steps.
        batch_size: examples per step (prompts per step for GRPO).
        lr: peak learning rate (linear warm-up, then cosine to `lr / 10`).
        warmup_steps: warm-up steps.
        weight_decay: AdamW's decoupled decay on trainable matrices.
        clip_grad_norm: global gradient-norm clip.
        seed: seeds the batches (batch `i` is a pure function of `(seed, i)`: exact resume).
        log_every: log every this many steps.
        progress: show a progress bar.
        device: `None` picks CUDA when present.
        out_dir: run directory for checkpoints and `log.jsonl` (`None`: none written).
        checkpoint_every: checkpoint every this many steps (needs `out_dir`).
    """

    steps: int = 200
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 10
    weight_decay: float = 0.0
    clip_grad_norm: float = 1.0
    seed: int = 0
    log_every: int = 10
    progress: bool = False
    device: str | None = None
    out_dir: str | None = None
    checkpoint_every: int | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise FinetuneError(f"TrainArgs: {name} must be an int >= 1, got {v!r}")
        if not self.lr > 0:
            raise FinetuneError(f"TrainArgs: lr must be > 0, got {self.lr!r}")
        if self.warmup_steps < 0:
            raise FinetuneError(f"TrainArgs: warmup_steps must be >= 0, got {self.warmup_steps!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def token_logprobs(model: nn.Module, ids: Tensor) -> Tensor:
    r"""$\log \pi(x_t \mid x_{<t})$ for $t = 2 \dots T$: `(batch, seq - 1)` from ids `(batch, seq)`."""
    logits = model(ids[:, :-1]).float()
    return torch.gather(F.log_softmax(logits, dim=-1), 2, ids[:, 1:, None]).squeeze(-1)


def completion_logprobs(model: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    r"""$\sum_t m_t \log \pi(x_t \mid x_{<t})$ per sequence `(batch,)`.

    Args:
        model: a language model returning logits `(batch, seq, vocab)`.
        ids: token ids `(batch, seq)` (padding anywhere the mask is 0).
        mask: `(batch, seq)`, 1 on the tokens whose probability counts (the completion); the
            first position cannot count (nothing predicts it).
    """
    logp = token_logprobs(model, ids)
    return (logp * mask[:, 1:].to(logp.dtype)).sum(dim=1)


def run_trainer(
    model: nn.Module,
    args: TrainArgs,
    *,
    batch_fn: Callable[[int], Any],
    loss_fn: Callable[[nn.Module, Any], Tensor],
    eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
    eval_every: int | None = None,
    resume: bool = False,
) -> dict[str, float]:
    """Train the trainable parameters of `model` with AdamW and fms-dl's Trainer; the final metrics."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise FinetuneError("the model has no trainable parameters (all are frozen)")
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    optimizer = AdamW(groups, lr=args.lr, weight_decay=args.weight_decay)
    out = Path(args.out_dir) if args.out_dir is not None else None
    trainer = Trainer(
        model,
        optimizer,
        TrainerConfig(
            max_steps=args.steps,
            clip_grad_norm=args.clip_grad_norm,
            precision="fp32",
            eval_every=eval_every,
            log_every=args.log_every,
            checkpoint_every=args.checkpoint_every if out is not None else None,
            checkpoint_dir=out / "checkpoints" if out is not None else None,
            checkpoint_keep_last=2,
            log_path=out / "log.jsonl" if out is not None else None,
            progress=args.progress,
            device=args.device,
        ),
        batch_fn=batch_fn,
        loss_fn=loss_fn,
        eval_fn=eval_fn,
        lr_schedule=lambda step: cosine_with_warmup(
            step,
            max_lr=args.lr,
            warmup_steps=min(args.warmup_steps, args.steps - 1),
            total_steps=args.steps,
            min_lr=args.lr / 10,
        ),
    )
    return trainer.fit(resume=resume)
