"""Exact resume: a run stopped at step 40 and resumed from its checkpoint ends bit for bit where
an uninterrupted 60-step run ends, dropout masks and all.

Run from the repository root: `uv run python packages/fms-dl/examples/resume_exactly.py`.
"""

import tempfile

import numpy as np
import torch
from torch import nn

from fms_dl.torch import AdamW, Trainer, TrainerConfig, cosine_with_warmup, seed_everything


def batch_fn(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Micro-batch `i` is a pure function of its index, so a resumed run draws the same data."""
    rng = np.random.default_rng([0, i])
    x = torch.from_numpy(rng.standard_normal((32, 8)).astype(np.float32))
    return x, x.sum(1, keepdim=True).sin()


def train(max_steps: int, run_dir: str, resume: bool = False) -> tuple[nn.Module, dict[str, float]]:
    """Train (or resume) the same model, optimiser and schedule for `max_steps` steps."""
    seed_everything(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.GELU(), nn.Dropout(0.1), nn.Linear(64, 1))
    trainer = Trainer(
        model,
        AdamW(model.parameters(), lr=3e-3, weight_decay=0.1),
        TrainerConfig(
            max_steps=max_steps,
            grad_accum_steps=2,  # two micro-batches of 32 per optimiser step
            checkpoint_every=20,
            checkpoint_dir=run_dir,
            progress=False,
        ),
        batch_fn=batch_fn,
        loss_fn=lambda m, b: nn.functional.mse_loss(m(b[0]), b[1]),
        lr_schedule=lambda s: cosine_with_warmup(s, max_lr=3e-3, warmup_steps=5, total_steps=60),
    )
    return model, trainer.fit(resume=resume)  # resume=True continues from run_dir/latest


with tempfile.TemporaryDirectory() as straight_dir, tempfile.TemporaryDirectory() as split_dir:
    straight, metrics = train(60, straight_dir)
    print(f"uninterrupted: step 60, loss {metrics['loss']:.6f}")
    train(40, split_dir)  # "pre-empted" after the checkpoint of step 40
    resumed, metrics = train(60, split_dir, resume=True)  # a fresh process would do the same
    print(f"stopped at 40, resumed: step 60, loss {metrics['loss']:.6f}")
    same = all(
        torch.equal(a, b) for a, b in zip(straight.parameters(), resumed.parameters(), strict=True)
    )
    print("weights bitwise identical:", same)
