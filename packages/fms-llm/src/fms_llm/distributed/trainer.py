"""The fms-dl [Trainer][fms_dl.torch.trainer.Trainer] on several processes.

[DistributedTrainer][fms_llm.distributed.trainer.DistributedTrainer] is the same loop (the same
accumulation, clipping, schedule, evaluation, logs) with four changes, each delegated to the run's
[Strategy][fms_llm.distributed.strategies.Strategy]:

* the logged loss is the mean over the data-parallel ranks (the global batch's loss);
* the gradient norm is taken over every rank's shard;
* a checkpoint is *consolidated*: every rank joins the gather, rank 0 alone writes one ordinary
  fms-dl checkpoint (the files of a one-process run) holding every rank's RNG states;
* on resume every rank reads that checkpoint (rank 0 decides which, and tells the others) and
  keeps its own pieces; at the world size it was saved with, each rank also gets its own RNG
  states back, so the resumed run is the uninterrupted one. At another world size the weights,
  optimiser state and step are restored and the RNG states are not (they belong to ranks that
  no longer exist; with the default `dropout = 0` training draws no random numbers).

Every rank needs the checkpoint directory: a filesystem shared by the machines, or a single
machine.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from fms_dl.torch import Trainer, TrainerConfig, capture_rng_state, restore_rng_state
from fms_dl.torch.checkpoint import read_checkpoint, save_checkpoint
from fms_llm.distributed.strategies import Strategy

__all__ = ["DistributedTrainer"]


class DistributedTrainer(Trainer):
    """[Trainer][fms_dl.torch.trainer.Trainer] over the processes of `strategy.env`.

    Args:
        model: The model as `strategy.wrap` returned it.
        optimizer: Built on the wrapped model's parameters (after `wrap`: FSDP and tensor
            parallelism replace them with their shards).
        config: The trainer's config; `device` is this rank's device.
        strategy: How the model is spread ([fms_llm.distributed.strategies][]).
        **kwargs: The Trainer's keyword arguments (`batch_fn` must return this rank's slice of
            global micro-batch `i`; `tokens_per_step` counts the global batch).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: TrainerConfig,
        *,
        strategy: Strategy,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, optimizer, config, **kwargs)
        self.strategy = strategy
        self.rng_restored: bool | None = None
        """After a resume: whether this rank's RNG states were restored (same world size)."""

    @property
    def unwrapped_model(self) -> nn.Module:
        return self.strategy.unwrap(self.model)

    def train_step(self) -> dict[str, float]:
        metrics = super().train_step()
        metrics["loss"] = self.strategy.mean_over_data(metrics["loss"])
        return metrics

    def clip_gradients(self) -> torch.Tensor:
        return self.strategy.clip_gradients(self.optimizer, self.config.clip_grad_norm)

    def _all_rng_states(self) -> list[dict[str, torch.Tensor]]:
        states: list[Any] = [None] * self.strategy.env.world_size
        if self.strategy.env.distributed:
            dist.all_gather_object(states, capture_rng_state())
        else:
            states = [capture_rng_state()]
        return states

    def save(self) -> Path | None:
        """Gather the consolidated state (every rank) and write it (rank 0)."""
        cfg = self.config
        if cfg.checkpoint_dir is None:
            return None
        weights, optim, shapes = self.strategy.full_state(self.model, self.optimizer)
        rng = self._all_rng_states()
        if not self.is_main_process:
            return None
        env = self.strategy.env
        return save_checkpoint(
            cfg.checkpoint_dir,
            model=weights,
            optimizer=optim,
            param_shapes=shapes,
            step=self.step,
            extra={
                "metrics": self.metrics,
                "world_size": env.world_size,
                "parallel": self.strategy.name,
            },
            rng=rng,
            keep_last=cfg.checkpoint_keep_last,
        )

    def resume_checkpoint(self) -> Path | None:
        """Rank 0's newest checkpoint, the same on every rank."""
        found = super().resume_checkpoint() if self.is_main_process else None
        if self.strategy.env.distributed:
            box: list[Any] = [None if found is None else str(found)]
            dist.broadcast_object_list(box, src=0)
            found = None if box[0] is None else Path(box[0])
        return found

    def restore(self, path: Path) -> None:
        env = self.strategy.env
        contents = read_checkpoint(path)
        self.strategy.load_full_state(self.model, self.optimizer, contents)
        self.step = contents.step
        self.metrics = dict(contents.extra.get("metrics", {}))
        self.rng_restored = len(contents.rng) == env.world_size
        if self.rng_restored:
            restore_rng_state(contents.rng[env.rank])
        elif env.is_main:
            warnings.warn(
                f"resuming {path} (saved by {len(contents.rng)} process(es)) on "
                f"{env.world_size}: weights, optimizer state and step are restored, the RNG "
                "states are not",
                stacklevel=2,
            )
