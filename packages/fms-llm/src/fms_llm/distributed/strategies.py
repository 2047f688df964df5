r"""How a model is spread over the processes of a run: DDP, FSDP or tensor parallelism.

A [Strategy][fms_llm.distributed.strategies.Strategy] answers four questions for the trainer:

1. **Which data does this rank see?** The global micro-batch $i$ has $B$ windows
   ([random_windows][fms_llm.data.batching.random_windows]`(seed, i)`). Data-parallel ranks
   (DDP, FSDP) each take the slice of $B/W$ rows `data_rank * B/W ...`; tensor-parallel ranks
   all take the whole batch. Since the mean over the batch is the mean of the slices' means, a
   $W$-process run computes the one-process gradient, up to the order of float additions.
2. **How is the model wrapped?** [DDP][fms_llm.distributed.strategies.DDP]: whole replicas,
   gradients all-reduced (averaged) after the backward pass. [FSDP][fms_llm.distributed.strategies.FSDP]
   (PyTorch's FSDP2, `fully_shard`, each block a unit): every parameter, gradient and optimiser
   state sharded $1/W$ a rank, each block's weights all-gathered just before use and its
   gradients reduce-scattered right after. [TensorParallel][fms_llm.distributed.strategies.TensorParallel]:
   attention and MLP matrices split ([fms_llm.distributed.tensor_parallel][]).
3. **What is the gradient norm?** With sharded gradients, the sum of squares over every rank.
4. **What is the consolidated state?** [full_state][fms_llm.distributed.strategies.Strategy.full_state]
   gathers every weight and optimiser tensor whole (a collective: all ranks call it) with the
   keys and layout of the unwrapped one-process model, so a checkpoint is the same file for every
   strategy and world size; [load_full_state][fms_llm.distributed.strategies.Strategy.load_full_state]
   cuts a consolidated checkpoint back into this rank's pieces, at any world size.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from fms_dl.torch import clip_grad_norm
from fms_dl.torch.checkpoint import CheckpointContents
from fms_llm.distributed.launch import DistEnv, DistributedError
from fms_llm.distributed.tensor_parallel import (
    check_tensor_parallel,
    sharded_parameters,
    tensor_parallel,
)
from fms_llm.models.gpt import GPT, ModelConfig

__all__ = [
    "DDP",
    "FSDP",
    "STRATEGIES",
    "SingleProcess",
    "Strategy",
    "TensorParallel",
    "make_strategy",
]

STRATEGIES = ("auto", "none", "ddp", "fsdp", "tp")
"""Values of `train.parallel`: `auto` is `ddp` on several processes, `none` on one."""


def _optimizer_params(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    return [p for g in optimizer.param_groups for p in g["params"]]


def _param_keys(module: nn.Module, params: list[Tensor]) -> list[str]:
    """The state-dict key of each optimiser parameter (a tied parameter under its first name)."""
    names = {id(p): n for n, p in module.named_parameters()}
    missing = [i for i, p in enumerate(params) if id(p) not in names]
    if missing:
        raise DistributedError(
            f"optimizer parameters {missing} are not parameters of the model; build the "
            "optimizer after wrapping the model"
        )
    return [names[id(p)] for p in params]


class Strategy:
    """One process, no parallelism: the base the parallel strategies override.

    Args:
        env: This process's place in the run ([DistEnv][fms_llm.distributed.launch.DistEnv]).
    """

    name: ClassVar[str] = "none"

    def __init__(self, env: DistEnv) -> None:
        self.env = env

    # -- data --------------------------------------------------------------------------------

    @property
    def data_rank(self) -> int:
        """Which slice of the global batch this rank takes."""
        return 0

    @property
    def data_world_size(self) -> int:
        """Into how many slices the global batch is cut."""
        return 1

    def check(self, config: ModelConfig, batch_size: int) -> None:
        """Raise before any work if the model or the batch cannot be spread this way.

        Raises:
            DistributedError: a global batch that does not split into the data ranks.
        """
        if batch_size % self.data_world_size:
            raise DistributedError(
                f"train.batch_size={batch_size} (the global micro-batch) is not divisible by "
                f"the {self.data_world_size} data-parallel processes: each takes "
                "batch_size / world_size windows; use a multiple of the world size"
            )

    def mean_over_data(self, value: float) -> float:
        """The mean of `value` over the data-parallel ranks (the global batch's mean loss)."""
        if self.data_world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return float(t.item()) / self.data_world_size

    @property
    def _comm_device(self) -> torch.device:
        return self.env.device if self.env.backend == "nccl" else torch.device("cpu")

    # -- model ---------------------------------------------------------------------------------

    def wrap(self, model: GPT) -> nn.Module:
        """`model` (on its device) as this strategy trains it."""
        return model

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The module whose state-dict keys are the plain model's (its parameters, sharded
        or not, are those the optimiser updates)."""
        return model

    def clip_gradients(self, optimizer: torch.optim.Optimizer, max_norm: float | None) -> Tensor:
        """The global gradient norm, after clipping to `max_norm` (`None`: measure only)."""
        params = _optimizer_params(optimizer)
        if max_norm is not None:
            return clip_grad_norm(params, max_norm)
        grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
        return torch.stack(grads).norm() if grads else torch.zeros(())

    # -- consolidated state: per tensor ----------------------------------------------------------

    def gather(self, key: str, value: Tensor) -> Tensor:
        """The whole tensor of which `value` (of state-dict key `key`) is this rank's piece."""
        return value

    def place(self, key: str, full: Tensor, live: Tensor) -> Tensor:
        """This rank's piece of `full`, laid out like the live tensor `live`."""
        return full.to(device=live.device, dtype=live.dtype)

    def global_shape(self, key: str, live: Tensor) -> tuple[int, ...]:
        """The whole shape of the tensor of which `live` is this rank's piece."""
        return tuple(live.shape)

    # -- consolidated state: model and optimiser ------------------------------------------------

    def full_model_state(self, model: nn.Module) -> dict[str, Tensor]:
        """Every weight whole, by the plain model's keys (a collective for sharded models).

        Tied keys (the head sharing the embedding) come back as one tensor, stored once.
        """
        seen: dict[tuple[int, int, tuple[int, ...]], Tensor] = {}
        out: dict[str, Tensor] = {}
        for key, value in self.unwrap(model).state_dict().items():
            local = value.to_local() if hasattr(value, "to_local") else value
            ident = (
                local.untyped_storage().data_ptr(),
                local.storage_offset(),
                tuple(value.shape),
            )
            if ident not in seen or local.numel() == 0:
                seen[ident] = self.gather(key, value).detach()
            out[key] = seen[ident]
        return out

    def full_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[dict[str, Tensor], dict[str, Any], list[list[int]]]:
        """Consolidated weights, optimiser state dict and global parameter shapes.

        Every rank must call it (sharded tensors are gathered); the result is what a one-process
        run of the same model would save.
        """
        module = self.unwrap(model)
        weights = self.full_model_state(model)
        params = _optimizer_params(optimizer)
        keys = _param_keys(module, params)
        sd = optimizer.state_dict()
        state: dict[int, dict[str, Any]] = {}
        for idx in sorted(sd["state"]):
            p, key = params[idx], keys[idx]
            state[idx] = {
                name: self.gather(key, v) if self._like_param(v, p) else v
                for name, v in sd["state"][idx].items()
            }
        shapes = [list(self.global_shape(k, p)) for k, p in zip(keys, params, strict=True)]
        return weights, {"state": state, "param_groups": sd["param_groups"]}, shapes

    @staticmethod
    def _like_param(value: Any, param: Tensor) -> bool:
        """A state tensor shaped like its parameter (moments), not a scalar (step counts)."""
        return isinstance(value, Tensor) and value.dim() > 0 and value.shape == param.shape

    def load_full_state(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        contents: CheckpointContents,
    ) -> None:
        """Load a consolidated checkpoint into this rank's pieces of the model and optimiser.

        Keys and global shapes are checked against the model first; nothing is modified if they
        differ.

        Raises:
            fms_dl.torch.checkpoint.CheckpointError: keys or shapes that do not match.
        """
        module = self.unwrap(model)
        live = module.state_dict()
        weights = contents.check_model({k: self.global_shape(k, v) for k, v in live.items()})
        opt_sd = None
        if optimizer is not None:
            params = _optimizer_params(optimizer)
            keys = _param_keys(module, params)
            shapes = [self.global_shape(k, p) for k, p in zip(keys, params, strict=True)]
            opt_sd = contents.check_optimizer(optimizer, shapes)
            for idx, st in opt_sd["state"].items():
                p, shape = params[idx], shapes[idx]
                for name, v in list(st.items()):
                    if isinstance(v, Tensor) and v.dim() > 0 and tuple(v.shape) == shape:
                        st[name] = self.place(keys[idx], v, p.detach())
        module.load_state_dict(
            {k: self.place(k, weights[k], v) for k, v in live.items()}, strict=True
        )
        if optimizer is not None and opt_sd is not None:
            optimizer.load_state_dict(opt_sd)


class SingleProcess(Strategy):
    """No parallelism (`train.parallel = "none"`): the one-process run."""

    name: ClassVar[str] = "none"


class _DataParallel(Strategy):
    """Each rank takes `1/W` of the global batch."""

    @property
    def data_rank(self) -> int:
        return self.env.rank

    @property
    def data_world_size(self) -> int:
        return self.env.world_size


class DDP(_DataParallel):
    r"""Distributed data parallel: a whole replica per rank, gradients averaged by all-reduce.

    PyTorch's `DistributedDataParallel` buckets the gradients and all-reduces each bucket as
    soon as the backward pass has filled it (overlapping communication with the rest of the
    backward pass); `gradient_as_bucket_view` makes the gradients views into those buckets, so
    there is one copy of them. With gradient accumulation, all micro-batches but the last run
    under `no_sync` ([fms_dl.torch.trainer.Trainer][]): one all-reduce per optimiser step. A
    ring all-reduce sends $2\frac{W-1}{W}$ times the gradient's bytes per rank.
    """

    name: ClassVar[str] = "ddp"

    def wrap(self, model: GPT) -> nn.Module:
        dev = self.env.device
        return nn.parallel.DistributedDataParallel(
            model,
            device_ids=[dev.index] if dev.type == "cuda" else None,
            broadcast_buffers=False,  # the only buffers (RoPE tables) are constants
            gradient_as_bucket_view=True,
        )

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class FSDP(_DataParallel):
    r"""Fully sharded data parallel (ZeRO stage 3) with PyTorch's FSDP2, `fully_shard`.

    Each block is one unit and the root (embeddings, final norm, head) another. Every parameter
    is a `DTensor` sharded along its first dimension, $1/W$ a rank, and so are its gradient and
    the AdamW moments (the optimiser updates the shards it holds). Before a unit's forward (and
    again before its backward) its parameters are all-gathered; after its backward its gradients
    are reduce-scattered (summed, then each rank keeps its shard, divided by $W$). Per step a rank
    sends $3\frac{W-1}{W}$ times the parameters' bytes (two all-gathers, one reduce-scatter):
    1.5 times DDP's traffic, for $1/W$ of the memory of the training state.
    """

    name: ClassVar[str] = "fsdp"

    def wrap(self, model: GPT) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(self.env.device.type, (self.env.world_size,))
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model

    def clip_gradients(self, optimizer: torch.optim.Optimizer, max_norm: float | None) -> Tensor:
        # the gradients are DTensors: the norm's DTensor is reduced over the shards (Replicate)
        norm = super().clip_gradients(optimizer, max_norm)
        full = getattr(norm, "full_tensor", None)
        return full() if full is not None else norm

    def gather(self, key: str, value: Tensor) -> Tensor:
        full = getattr(value, "full_tensor", None)
        return full() if full is not None else value

    def place(self, key: str, full: Tensor, live: Tensor) -> Tensor:
        mesh = getattr(live, "device_mesh", None)
        if mesh is None:
            return super().place(key, full, live)
        from torch.distributed.tensor import distribute_tensor

        local = full.to(device=live.device, dtype=live.dtype)
        # every rank read the same file: each cuts its own shard, no communication
        return distribute_tensor(local, mesh, live.placements, src_data_rank=None)  # type: ignore[attr-defined]


class TensorParallel(Strategy):
    """Megatron-style tensor parallelism over all the run's processes
    ([fms_llm.distributed.tensor_parallel][]).

    Every rank sees the whole batch; attention heads and MLP columns are split. Sharded
    parameters are gathered along their split dimension for a consolidated checkpoint and cut
    again on load, so a tensor-parallel checkpoint resumes on one process, with DDP or FSDP, or
    at another tensor-parallel size.
    """

    name: ClassVar[str] = "tp"

    def __init__(self, env: DistEnv) -> None:
        super().__init__(env)
        self._split: dict[str, int] = {}
        self._split_ids: set[int] = set()

    def check(self, config: ModelConfig, batch_size: int) -> None:
        super().check(config, batch_size)
        check_tensor_parallel(config, self.env.world_size)

    def wrap(self, model: GPT) -> nn.Module:
        tensor_parallel(model)
        self._split = sharded_parameters(model)
        self._split_ids = {id(p) for n, p in model.named_parameters() if n in self._split}
        return model

    def clip_gradients(self, optimizer: torch.optim.Optimizer, max_norm: float | None) -> Tensor:
        r"""$\|g\|^2 = \sum_{\text{split}} \sum_r \|g_r\|^2 + \sum_{\text{replicated}} \|g\|^2$:
        the split parameters' squares are summed over the ranks, the replicated ones counted
        once; then every gradient is scaled by $\min(1, c / (\|g\| + 10^{-6}))$, as in
        [clip_grad_norm][fms_dl.torch.optim.clip_grad_norm]."""
        params = [p for p in _optimizer_params(optimizer) if p.grad is not None]
        device = params[0].device if params else self.env.device
        sq_split = torch.zeros((), device=device, dtype=torch.float32)
        sq_repl = torch.zeros((), device=device, dtype=torch.float32)
        for p in params:
            sq = p.grad.detach().float().square().sum()  # type: ignore[union-attr]
            if id(p) in self._split_ids:
                sq_split += sq
            else:
                sq_repl += sq
        dist.all_reduce(sq_split)
        total = (sq_split + sq_repl).sqrt()
        if max_norm is not None and params:
            coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
            torch._foreach_mul_([p.grad for p in params], coef)  # type: ignore[misc]
        return total

    def gather(self, key: str, value: Tensor) -> Tensor:
        dim = self._split.get(key)
        if dim is None:
            return value
        parts = [torch.empty_like(value) for _ in range(self.env.world_size)]
        dist.all_gather(parts, value.detach().contiguous())
        return torch.cat(parts, dim=dim)

    def place(self, key: str, full: Tensor, live: Tensor) -> Tensor:
        dim = self._split.get(key)
        if dim is not None:
            full = full.chunk(self.env.world_size, dim=dim)[self.env.rank]
        return full.to(device=live.device, dtype=live.dtype).contiguous()

    def global_shape(self, key: str, live: Tensor) -> tuple[int, ...]:
        shape = list(live.shape)
        dim = self._split.get(key)
        if dim is not None:
            shape[dim] *= self.env.world_size
        return tuple(shape)


_BY_NAME: dict[str, type[Strategy]] = {
    "none": SingleProcess,
    "ddp": DDP,
    "fsdp": FSDP,
    "tp": TensorParallel,
}


def make_strategy(name: str, env: DistEnv) -> Strategy:
    """The strategy `train.parallel = name` asks for, for this run's world size.

    Raises:
        DistributedError: an unknown name, or `none` on several processes (each would train a
            copy of its own).
    """
    if name not in STRATEGIES:
        raise DistributedError(f"train.parallel must be one of {STRATEGIES}, got {name!r}")
    if name == "auto":
        name = "ddp" if env.world_size > 1 else "none"
    if name == "none" and env.world_size > 1:
        raise DistributedError(
            f"train.parallel='none' but this run has {env.world_size} processes, each of which "
            "would train its own copy; use ddp, fsdp or tp, or start one process"
        )
    return _BY_NAME[name](env)
