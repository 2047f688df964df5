"""A small training run for the SIGKILL resume test (run as a subprocess by test_kill_resume.py).

    python _kill_run.py CKPT_DIR OUT_FILE [--resume [--no-rng]] [--kill-at STEP]
                        [--kill-mode after_step|mid_save]

An MLP with dropout (torch RNG) trained with AdamW, a cosine schedule with warm-up, gradient
accumulation and clipping, checkpointing every step. The data is a pure function of the
micro-batch index; on top of it a "data augmentation" draws from Python's and numpy's global
generators, so every RNG must be restored for the resumed run to be bitwise equal.

`--kill-at k` makes the process SIGKILL itself at optimiser step k: `after_step` right after the
step (before its checkpoint), `mid_save` in the middle of writing that step's checkpoint (at an
fsync). `--no-rng` resumes *without* restoring the RNG states (the control that shows why
they are saved). The final weights are written to OUT_FILE (safetensors), with the checkpoint
the run resumed from in the metadata.
"""

from __future__ import annotations

import argparse
import os
import random
import signal

import numpy as np
import safetensors.torch
import torch
from torch import nn

from fms_dl.torch import (
    AdamW,
    Callback,
    Trainer,
    TrainerConfig,
    cosine_with_warmup,
    seed_everything,
)
from fms_dl.torch import checkpoint as ck

MAX_STEPS = 16
ACCUM = 2
BATCH = 16


def batch_fn(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng([1234, i])
    x = rng.standard_normal((BATCH, 8)).astype(np.float32)
    y = np.sin(x.sum(axis=1, keepdims=True)).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y)


def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    jitter = 0.01 * float(np.random.standard_normal()) + 0.01 * random.random()  # noqa: NPY002
    return ((model(x + jitter) - y) ** 2).mean()


class KillAfterStep(Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        if step == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


class Report(Callback):
    """Writes each completed step number to a pipe, for a parent that kills from outside."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def on_step_end(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        os.write(self.fd, f"{step}\n".encode())


class KillMidSave(Callback):
    """Arms a SIGKILL at the 3rd fsync of the checkpoint written after step `at`."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        if step != self.at:
            return
        calls = {"n": 0}
        real = ck._fsync

        def fsync_then_die(fd: int) -> None:
            calls["n"] += 1
            if calls["n"] == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            real(fd)

        ck._fsync = fsync_then_die


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ckpt")
    parser.add_argument("out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--no-rng", action="store_true")
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--kill-mode", choices=["after_step", "mid_save"], default="after_step")
    parser.add_argument("--report-fd", type=int, help="write each completed step to this fd")
    args = parser.parse_args()

    torch.set_num_threads(1)
    seed_everything(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Dropout(0.2), nn.Linear(32, 1))
    optimizer = AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    callbacks: list[Callback] = []
    if args.kill_at is not None:
        kill = KillAfterStep if args.kill_mode == "after_step" else KillMidSave
        callbacks.append(kill(args.kill_at))
    if args.report_fd is not None:
        callbacks.append(Report(args.report_fd))
    config = TrainerConfig(
        max_steps=MAX_STEPS,
        grad_accum_steps=ACCUM,
        clip_grad_norm=0.5,
        checkpoint_every=1,
        checkpoint_dir=args.ckpt,
        progress=False,
        device="cpu",
    )
    trainer = Trainer(
        model,
        optimizer,
        config,
        batch_fn=batch_fn,
        loss_fn=loss_fn,
        lr_schedule=lambda s: cosine_with_warmup(
            s, max_lr=3e-3, warmup_steps=3, total_steps=MAX_STEPS, min_lr=3e-4
        ),
        callbacks=callbacks,
    )
    start = ck.latest_checkpoint(args.ckpt) if args.resume else None
    if args.resume and args.no_rng:
        assert start is not None
        info = ck.load_checkpoint(start, model=model, optimizer=optimizer, restore_rng=False)
        trainer.step = info["step"]
        trainer.fit()
    else:
        trainer.fit(resume=args.resume)
    start_step = "none" if start is None else start.name
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(tensors, args.out, metadata={"resumed_from": start_step})


if __name__ == "__main__":
    main()
