"""A training loop for any torch module: accumulation, clipping, bf16, eval, logs, exact resume.

One optimiser step of [Trainer][fms_dl.torch.trainer.Trainer] reads top-down:

1. `lr = lr_schedule(step)`; [set_lr][fms_dl.torch.optim.set_lr].
2. For each of the `grad_accum_steps` micro-batches `i = step * grad_accum_steps + k`:
   `batch = batch_fn(i)`, forward under autocast, `(loss / grad_accum_steps).backward()`.
   Dividing by the number of micro-batches makes the summed gradient the gradient of the *mean*
   loss over the large batch, so accumulation over $k$ micro-batches of size $b$ equals one
   batch of size $kb$ (for losses that are means over equal-sized micro-batches).
3. [clip_grad_norm][fms_dl.torch.optim.clip_grad_norm] on the accumulated gradient, then
   `optimizer.step()`.
4. Metrics, callbacks, the log, evaluation and the checkpoint, in that order. Throughput in
   the log and on the progress bar is averaged over the steps since the previous log line
   (training time only: evaluation and checkpointing are excluded); MFU is
   `flops_per_token * tokens_per_s / peak_flops`. The checkpoint
   comes last so that it captures the RNG state *after* everything the uninterrupted run would
   have drawn at this step.

**Exact resume.** The data is a pure function of the global micro-batch index (`batch_fn`), and
the checkpoint holds model, optimiser, every RNG state and the step; the schedule is a pure
function of the step. So `fit(resume=True)` continues on exactly the same trajectory: on CPU the
final weights are bitwise equal to those of an uninterrupted run (a test kills a run with
SIGKILL and checks this).

**Hooks for distributed training.** Pass the model wrapped in `DistributedDataParallel`: every
micro-batch but the last runs under `model.no_sync()` so that gradients are all-reduced once per
optimiser step (`_sync_context`), checkpoints store the unwrapped module (`unwrapped_model`,
which also strips a `torch.compile` wrapper), and logging, the progress bar and checkpointing run
on rank 0 only (`is_main_process`). Sharded training (FSDP, tensor parallelism) overrides three
methods: [save][fms_dl.torch.trainer.Trainer.save] (gather the shards into one consolidated
checkpoint), [restore][fms_dl.torch.trainer.Trainer.restore] (load it back into the shards, at
any world size) and [clip_gradients][fms_dl.torch.trainer.Trainer.clip_gradients] (the norm of
a gradient split over ranks); [fms_llm.distributed][] builds DDP, FSDP and tensor-parallel
training on them, with each rank's batches a slice of the global batch so that several
processes follow the one-process trajectory.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fms_dl.torch.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from fms_dl.torch.optim import clip_grad_norm, set_lr
from fms_dl.torch.seed import resolve_device

__all__ = ["Callback", "Trainer", "TrainerConfig"]

_PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainerConfig:
    """Settings of a [Trainer][fms_dl.torch.trainer.Trainer] run.

    Attributes:
        max_steps: Number of optimiser steps to train for.
        grad_accum_steps: Micro-batches per optimiser step.
        clip_grad_norm: Clip the global gradient norm to this value (`None`: no clipping; the
            norm is still measured and logged).
        precision: `"auto"` (bf16 autocast on a CUDA device that supports bf16, else fp32),
            `"fp32"`, or `"bf16"` (CUDA autocast; on CPU, CPU autocast to bf16, which is slower
            than fp32 on most CPUs and is meant for testing).
        eval_every: Evaluate every this many steps, and at the end (`None`: never).
        log_every: Write a log line and update the progress bar every this many steps (and at
            the last step).
        checkpoint_every: Checkpoint every this many steps; with `checkpoint_dir` set, a
            checkpoint is also written at the end.
        checkpoint_dir: Run directory for checkpoints (and for `fit(resume=True)`).
        checkpoint_keep_last: Keep only this many newest checkpoints (`None`: keep all).
        log_path: JSON-lines metrics file, appended to: one object per log or eval event.
        progress: Show a tqdm bar with loss, lr, throughput (and MFU if known).
        device: Device to train on (`None`: [default_device][fms_dl.torch.seed.default_device]);
            checked by [resolve_device][fms_dl.torch.seed.resolve_device] when the trainer is built.
    """

    max_steps: int
    grad_accum_steps: int = 1
    clip_grad_norm: float | None = 1.0
    precision: str = "auto"
    eval_every: int | None = None
    log_every: int = 10
    checkpoint_every: int | None = None
    checkpoint_dir: str | Path | None = None
    log_path: str | Path | None = None
    progress: bool = True
    device: str | None = None
    checkpoint_keep_last: int | None = None

    def __post_init__(self) -> None:
        def positive(name: str, value: Any, optional: bool = False) -> None:
            if value is None and optional:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainerConfig: {name} must be an int >= 1, got {value!r}")

        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int):
            raise ValueError(
                f"TrainerConfig: max_steps must be an int >= 0, got {self.max_steps!r}"
            )
        if self.max_steps < 0:
            raise ValueError(
                f"TrainerConfig: max_steps must be an int >= 0, got {self.max_steps!r}"
            )
        positive("grad_accum_steps", self.grad_accum_steps)
        positive("log_every", self.log_every)
        positive("eval_every", self.eval_every, optional=True)
        positive("checkpoint_every", self.checkpoint_every, optional=True)
        positive("checkpoint_keep_last", self.checkpoint_keep_last, optional=True)
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(
                f"TrainerConfig: clip_grad_norm must be > 0 or None, got {self.clip_grad_norm!r}"
            )
        if self.precision not in _PRECISIONS:
            raise ValueError(
                f"TrainerConfig: precision must be one of {_PRECISIONS}, got {self.precision!r}"
            )
        if self.checkpoint_every is not None and self.checkpoint_dir is None:
            raise ValueError("TrainerConfig: checkpoint_every is set but checkpoint_dir is None")


class Callback:
    """Hooks called by the [Trainer][fms_dl.torch.trainer.Trainer]; every method is a no-op.

    Subclass and override what you need. Callbacks run on every process of a distributed run
    (rank checks are the callback's business).
    """

    def on_step_end(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        """After optimiser step `step` (1-based count of steps completed) with its metrics."""

    def on_eval(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        """After an evaluation at `step` with the metrics returned by `eval_fn`."""

    def on_train_end(self, trainer: Trainer) -> None:
        """Once, when `fit` finishes."""


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple | list):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


class Trainer:
    """Train `model` with `optimizer` on batches from `batch_fn`; see the module docstring.

    Args:
        model: Any `nn.Module`; moved to the trainer's device.
        optimizer: Any `torch.optim.Optimizer` over the model's parameters.
        config: The [TrainerConfig][fms_dl.torch.trainer.TrainerConfig].
        batch_fn: Global micro-batch index -> batch. Must be a pure function of the index
            (e.g. built from `np.random.default_rng([seed, i])`); that is what makes resume
            exact. Tensors (also inside tuples, lists, dicts) are moved to the device.
        loss_fn: `(model, batch) -> scalar loss`, the mean over the micro-batch.
        lr_schedule: `step -> lr`, applied before each step (`None`: keep the optimiser's lr).
        eval_fn: `model -> {name: value}`, called under `torch.no_grad()` in `eval()` mode.
        tokens_per_step: Items (tokens, examples) per optimiser step, for throughput.
        flops_per_token: Training FLOPs per item (e.g. $6N$ for a transformer with $N$
            parameters); with `peak_flops` gives MFU = achieved FLOP/s / peak FLOP/s.
        peak_flops: The device's peak FLOP/s at the training precision.
        callbacks: [Callback][fms_dl.torch.trainer.Callback] objects.

    Attributes:
        step: Optimiser steps completed.
        device: The training device.
        metrics: The latest training metrics (`loss`, `lr`, `grad_norm`, `step_time_s`, and
            `tokens_per_s`/`mfu` when known).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: TrainerConfig,
        *,
        batch_fn: Callable[[int], Any],
        loss_fn: Callable[[nn.Module, Any], torch.Tensor],
        lr_schedule: Callable[[int], float] | None = None,
        eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
        tokens_per_step: int | None = None,
        flops_per_token: float | None = None,
        peak_flops: float | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        if not isinstance(config, TrainerConfig):
            raise TypeError(f"Trainer: config must be a TrainerConfig, got {type(config).__name__}")
        self.config = config
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.optimizer = optimizer
        self.batch_fn = batch_fn
        self.loss_fn = loss_fn
        self.lr_schedule = lr_schedule
        self.eval_fn = eval_fn
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.callbacks = list(callbacks)
        self.step = 0
        self.metrics: dict[str, float] = {}
        self.autocast_dtype = self._autocast_dtype()

    # -- hooks for distributed training ---------------------------------------------------------

    @property
    def is_main_process(self) -> bool:
        """True on rank 0 (or without `torch.distributed`): only it logs and checkpoints."""
        dist = torch.distributed
        return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0

    @property
    def unwrapped_model(self) -> nn.Module:
        """The model without `DistributedDataParallel` or `torch.compile` wrappers.

        Checkpoints store this module, so their keys do not depend on how the model was
        wrapped (no `module.` or `_orig_mod.` prefixes).
        """
        model = self.model
        while True:
            if isinstance(model, nn.parallel.DistributedDataParallel):
                model = model.module
            elif isinstance(inner := getattr(model, "_orig_mod", None), nn.Module):
                model = inner  # torch.compile's OptimizedModule
            else:
                return model

    def _sync_context(self, last_micro_batch: bool) -> contextlib.AbstractContextManager[Any]:
        """`model.no_sync()` for all but the last micro-batch when the model is DDP-wrapped."""
        no_sync = getattr(self.model, "no_sync", None)
        if no_sync is not None and not last_micro_batch:
            return no_sync()  # type: ignore[no-any-return]
        return contextlib.nullcontext()

    # -- precision ------------------------------------------------------------------------------

    def _autocast_dtype(self) -> torch.dtype | None:
        precision = self.config.precision
        cuda = self.device.type == "cuda"
        if precision == "fp32":
            return None
        if precision == "auto":
            return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None
        if cuda and not torch.cuda.is_bf16_supported():
            raise ValueError(f"Trainer: precision='bf16' but {self.device} does not support bf16")
        return torch.bfloat16

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    # -- the loop ---------------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        """Run one optimiser step (all micro-batches) and return its metrics."""
        cfg = self.config
        start = time.perf_counter()
        if self.lr_schedule is not None:
            set_lr(self.optimizer, float(self.lr_schedule(self.step)))
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device, dtype=torch.float32)
        for k in range(cfg.grad_accum_steps):
            batch = _to_device(self.batch_fn(self.step * cfg.grad_accum_steps + k), self.device)
            with self._sync_context(k == cfg.grad_accum_steps - 1):
                with self._autocast():
                    loss = self.loss_fn(self.model, batch)
                if loss.dim() != 0:
                    raise ValueError(
                        f"Trainer: loss_fn must return a scalar, got shape {tuple(loss.shape)}"
                    )
                (loss / cfg.grad_accum_steps).backward()  # type: ignore[no-untyped-call]
            total += loss.detach().float()
        grad_norm = self.clip_gradients()
        self.optimizer.step()
        self.step += 1
        loss_value = (total / cfg.grad_accum_steps).item()  # one host sync per optimiser step
        elapsed = time.perf_counter() - start
        metrics = {
            "loss": loss_value,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "grad_norm": float(grad_norm),
            "step_time_s": elapsed,
        }
        metrics.update(self._throughput(1, elapsed))
        return metrics

    def clip_gradients(self) -> torch.Tensor:
        """The global gradient norm, after clipping the gradients to `config.clip_grad_norm`.

        Every parameter of the optimiser counts once. A sharded model, whose gradients are
        split over ranks, overrides this to reduce the squared norm over the ranks.
        """
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if self.config.clip_grad_norm is not None:
            return clip_grad_norm(params, self.config.clip_grad_norm)
        grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
        return torch.stack(grads).norm() if grads else torch.zeros(())

    def _throughput(self, steps: int, seconds: float) -> dict[str, float]:
        """`tokens_per_s` (and `mfu`) over `steps` optimiser steps that took `seconds`."""
        if self.tokens_per_step is None:
            return {}
        out = {"tokens_per_s": steps * self.tokens_per_step / max(seconds, 1e-12)}
        if self.flops_per_token is not None and self.peak_flops is not None:
            out["mfu"] = self.flops_per_token * out["tokens_per_s"] / self.peak_flops
        return out

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Run `eval_fn` in `eval()` mode and return its metrics (empty without `eval_fn`)."""
        if self.eval_fn is None:
            return {}
        was_training = self.model.training
        self.model.eval()
        try:
            with self._autocast():
                result = {k: float(v) for k, v in self.eval_fn(self.model).items()}
        finally:
            self.model.train(was_training)
        return result

    def _log(self, event: str, values: dict[str, float]) -> None:
        if self.config.log_path is None or not self.is_main_process:
            return
        path = Path(self.config.log_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"event": event, "step": self.step, "time": time.time(), **values}
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def save(self) -> Path | None:
        """Checkpoint now (rank 0 only) into `config.checkpoint_dir`; `None` if it is unset."""
        cfg = self.config
        if cfg.checkpoint_dir is None or not self.is_main_process:
            return None
        return save_checkpoint(
            cfg.checkpoint_dir,
            model=self.unwrapped_model,
            optimizer=self.optimizer,
            step=self.step,
            extra={"metrics": self.metrics},
            keep_last=cfg.checkpoint_keep_last,
        )

    def restore(self, path: Path) -> None:
        """Load the checkpoint `path` into the model, the optimiser, the RNGs and `step`.

        Called by `fit(resume=True)` on every process; a sharded model overrides it to place
        the consolidated tensors into its shards.
        """
        info = load_checkpoint(
            path, model=self.unwrapped_model, optimizer=self.optimizer, map_location=self.device
        )
        self.step = info["step"]
        self.metrics = dict(info["extra"].get("metrics", {}))

    def resume_checkpoint(self) -> Path | None:
        """The checkpoint `fit(resume=True)` continues from: the newest one in
        `config.checkpoint_dir` (`None` if there is none)."""
        assert self.config.checkpoint_dir is not None
        return latest_checkpoint(self.config.checkpoint_dir)

    def _progress(self) -> Any:
        if not (self.config.progress and self.is_main_process):
            return None
        from tqdm.auto import tqdm  # the `torch` extra installs it; imported only when shown

        return tqdm(total=self.config.max_steps, initial=self.step, desc="train", unit="step")

    def fit(self, *, resume: bool = False) -> dict[str, float]:
        """Train until `config.max_steps` optimiser steps are done.

        Args:
            resume: Load the newest checkpoint of `config.checkpoint_dir` (model, optimiser, RNG
                states, step) first, if there is one, and continue from it.

        Returns:
            The final metrics: the last step's training metrics (restored from the checkpoint
            when a finished run is resumed), the last evaluation's metrics prefixed with
            `eval_`, and `step`.

        Raises:
            ValueError: `resume=True` without `config.checkpoint_dir`.
            fms_dl.torch.checkpoint.CheckpointError: the checkpoint is corrupt or does not match.
        """
        cfg = self.config
        if resume:
            if cfg.checkpoint_dir is None:
                raise ValueError("Trainer.fit: resume=True needs config.checkpoint_dir")
            found = self.resume_checkpoint()
            if found is not None:
                self.restore(found)
        final: dict[str, float] = dict(self.metrics)
        bar = self._progress()
        last_saved = self.step if resume else -1
        last_eval = -1
        window_steps, window_time = 0, 0.0  # throughput is averaged over the log window
        try:
            while self.step < cfg.max_steps:
                metrics = self.train_step()
                self.metrics = metrics
                final.update(metrics)
                for cb in self.callbacks:
                    cb.on_step_end(self, self.step, metrics)
                window_steps += 1
                window_time += metrics["step_time_s"]
                at_end = self.step == cfg.max_steps
                if self.step % cfg.log_every == 0 or at_end:
                    logged = {**metrics, **self._throughput(window_steps, window_time)}
                    window_steps, window_time = 0, 0.0
                    final.update(logged)
                    self._log("train", logged)
                    if bar is not None:
                        bar.set_postfix(self._postfix(logged), refresh=False)
                if bar is not None:
                    bar.update(1)
                if cfg.eval_every is not None and (self.step % cfg.eval_every == 0 or at_end):
                    final.update(self._run_eval())
                    last_eval = self.step
                if cfg.checkpoint_every is not None and self.step % cfg.checkpoint_every == 0:
                    self.save()
                    last_saved = self.step
            if cfg.eval_every is not None and last_eval != self.step:
                final.update(self._run_eval())
            if cfg.checkpoint_dir is not None and last_saved != self.step:
                self.save()
        finally:
            if bar is not None:
                bar.close()
        for cb in self.callbacks:
            cb.on_train_end(self)
        final["step"] = float(self.step)
        return final

    def _run_eval(self) -> dict[str, float]:
        metrics = self.evaluate()
        self._log("eval", metrics)
        for cb in self.callbacks:
            cb.on_eval(self, self.step, metrics)
        return {f"eval_{k}": v for k, v in metrics.items()}

    @staticmethod
    def _postfix(metrics: dict[str, float]) -> dict[str, str]:
        shown = {"loss": f"{metrics['loss']:.4f}", "lr": f"{metrics['lr']:.2e}"}
        if "tokens_per_s" in metrics:
            shown["tok/s"] = f"{metrics['tokens_per_s']:.3g}"
        if "mfu" in metrics and math.isfinite(metrics["mfu"]):
            shown["mfu"] = f"{100 * metrics['mfu']:.1f}%"
        return shown
