r"""Megatron-style tensor parallelism: every attention and MLP split over $W$ processes.

Shoeybi et al. (2019) split the two matrix multiplies of each sub-layer so that a transformer
block needs only one all-reduce forward and one backward per sub-layer. For the MLP
$Y = \phi(X A) B$ split $A$ by columns and $B$ by rows:

$$
A = [A_1, \dots, A_W], \qquad
B = \begin{bmatrix} B_1 \\ \vdots \\ B_W \end{bmatrix}, \qquad
Y = \phi(X A) B = \sum_{r=1}^{W} \phi(X A_r)\, B_r .
$$

Rank $r$ holds $A_r$ and $B_r$ and computes $\phi(X A_r) B_r$ alone (the nonlinearity acts
element by element, so it commutes with the column split); one all-reduce sums the $W$ partial
outputs. Attention splits the same way by heads: $W^Q, W^K, W^V$ by columns (whole heads: rank
$r$ owns heads $rH/W, \dots, (r+1)H/W - 1$ and the key/value heads they read), $W^O$ by rows.

Two conjugate operators carry the communication (Megatron's $f$ and $g$):

| operator | forward | backward | where |
| --- | --- | --- | --- |
| $f$ ([copy_to_tensor_parallel_region][fms_llm.distributed.tensor_parallel.copy_to_tensor_parallel_region]) | identity | all-reduce | input of a column-parallel layer |
| $g$ ([reduce_from_tensor_parallel_region][fms_llm.distributed.tensor_parallel.reduce_from_tensor_parallel_region]) | all-reduce | identity | output of a row-parallel layer |

$f$'s backward is an all-reduce because every rank's $X$ feeds every rank's heads: the gradient
of $X$ is the sum over ranks of $\partial L / \partial X$ through each rank's columns. With them a
sub-layer costs one all-reduce of the activations $(b, s, d)$ forward ($g$) and one backward
($f$): four per block per step.

Everything else (embeddings, norms, the head) is replicated; since $f$ and $g$ make the
residual stream and its gradient identical on every rank, the replicated parameters get
identical gradients and stay identical without any extra communication.

[tensor_parallel][fms_llm.distributed.tensor_parallel.tensor_parallel] turns a
[GPT][fms_llm.models.GPT] or [Llama][fms_llm.models.Llama] into its rank's shard in place,
keeping every state-dict key, so a consolidated checkpoint has the keys of the plain model.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from fms_llm.distributed.launch import DistributedError
from fms_llm.models.gpt import GPT, ModelConfig
from fms_transformer.attention import MultiHeadAttention
from fms_transformer.ffn import MLP, SwiGLU

__all__ = [
    "ColumnParallelLinear",
    "RowParallelLinear",
    "TensorParallelError",
    "check_tensor_parallel",
    "copy_to_tensor_parallel_region",
    "gather_from_tensor_parallel_region",
    "reduce_from_tensor_parallel_region",
    "sharded_parameters",
    "tensor_parallel",
]

Group = dist.ProcessGroup | None


class TensorParallelError(DistributedError):
    """A model that cannot be split over this many processes (the message names the field).

    A [DistributedError][fms_llm.distributed.launch.DistributedError], as every reason a run
    cannot start is (and so a `ValueError`)."""


def _rank_world(group: Group) -> tuple[int, int]:
    if not dist.is_initialized():
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


# --------------------------------------------------------------------------------------------------
# the conjugate operators f and g (and a gather)
# --------------------------------------------------------------------------------------------------


class _CopyToRegion(torch.autograd.Function):
    """$f$: identity forward, all-reduce (sum) of the gradient backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Group) -> Tensor:
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _ReduceFromRegion(torch.autograd.Function):
    """$g$: all-reduce (sum) forward, identity backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Group) -> Tensor:
        out = x.contiguous().clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class _GatherFromRegion(torch.autograd.Function):
    """All-gather along the last dimension forward; backward keeps this rank's slice."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Group) -> Tensor:
        rank, world = _rank_world(group)
        ctx.rank, ctx.world = rank, world
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=-1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad.chunk(ctx.world, dim=-1)[ctx.rank].contiguous(), None


def copy_to_tensor_parallel_region(x: Tensor, group: Group = None) -> Tensor:
    """Megatron's $f$: `x` unchanged; its gradient is summed over the group's ranks."""
    out: Tensor = _CopyToRegion.apply(x, group)
    return out


def reduce_from_tensor_parallel_region(x: Tensor, group: Group = None) -> Tensor:
    """Megatron's $g$: the sum of `x` over the group's ranks; the gradient passes unchanged."""
    out: Tensor = _ReduceFromRegion.apply(x, group)
    return out


def gather_from_tensor_parallel_region(x: Tensor, group: Group = None) -> Tensor:
    """Concatenate every rank's `x` along the last dimension (rank order); the backward pass
    hands each rank the gradient of its own slice."""
    out: Tensor = _GatherFromRegion.apply(x, group)
    return out


# --------------------------------------------------------------------------------------------------
# the two linear layers
# --------------------------------------------------------------------------------------------------


def _shard_size(total: int, world: int, what: str) -> int:
    if total % world:
        raise TensorParallelError(
            f"{what}={total} is not divisible by the tensor-parallel world size {world}"
        )
    return total // world


class ColumnParallelLinear(nn.Module):
    r"""$Y_r = X A_r^\top + b_r$: this rank's block of output features of a linear layer.

    The weight $A$ `(out_features, in_features)` is split by rows (output features) into $W$
    blocks; rank $r$ keeps block $r$, `(out_features / W, in_features)`, and its slice of the
    bias. The input is whole on every rank; the output is this rank's features only (what a
    following [RowParallelLinear][fms_llm.distributed.tensor_parallel.RowParallelLinear]
    expects), or all of them with `gather_output=True`.

    Args:
        in_features: Input size.
        out_features: Output size of the whole (unsplit) layer; divisible by the world size.
        bias: Learn an additive bias.
        group: The tensor-parallel process group (`None`: all processes).
        gather_output: All-gather the output features (every rank gets the whole $Y$).
        copy_input: Apply $f$ to the input (sum its gradient over ranks). Switch it off when
            $f$ is applied once upstream for several layers that read the same input.
    """

    shard_dims: ClassVar[dict[str, int]] = {"weight": 0, "bias": 0}
    """Which dimension of each parameter is split over ranks."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        group: Group = None,
        gather_output: bool = False,
        copy_input: bool = True,
    ) -> None:
        super().__init__()
        self.group = group
        self.rank, self.world_size = _rank_world(group)
        self.in_features, self.out_features = in_features, out_features
        self.local_out_features = _shard_size(out_features, self.world_size, "out_features")
        self.gather_output, self.copy_input = gather_output, copy_input
        self.weight = nn.Parameter(torch.empty(self.local_out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(self.local_out_features)) if bias else None
        nn.init.normal_(self.weight, 0.0, 0.02)

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, group: Group = None, **kwargs: Any
    ) -> ColumnParallelLinear:
        """This rank's shard of an existing `nn.Linear` (its weights copied, on its device)."""
        layer = cls(
            linear.in_features, linear.out_features, linear.bias is not None, group=group, **kwargs
        )
        layer.to(device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(linear.weight.chunk(layer.world_size, 0)[layer.rank])
            if linear.bias is not None and layer.bias is not None:
                layer.bias.copy_(linear.bias.chunk(layer.world_size, 0)[layer.rank])
        return layer

    def forward(self, x: Tensor) -> Tensor:
        """`(..., in_features)` -> `(..., out_features / W)` (or `out_features` if gathered)."""
        if self.copy_input:
            x = copy_to_tensor_parallel_region(x, self.group)
        y = F.linear(x, self.weight, self.bias)
        return gather_from_tensor_parallel_region(y, self.group) if self.gather_output else y

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features} "
            f"({self.local_out_features} on rank {self.rank} of {self.world_size}), "
            f"bias={self.bias is not None}"
        )


class RowParallelLinear(nn.Module):
    r"""$Y = \sum_r X_r B_r^\top + b$: a linear layer whose input features are split over ranks.

    The weight $B$ `(out_features, in_features)` is split by columns (input features); rank $r$
    keeps `(out_features, in_features / W)` and multiplies its own slice $X_r$ of the input (the
    output of a [ColumnParallelLinear][fms_llm.distributed.tensor_parallel.ColumnParallelLinear]).
    $g$ sums the partial products; the bias, replicated, is added once after the sum.

    Args:
        in_features: Input size of the whole layer; divisible by the world size.
        out_features: Output size.
        bias: Learn an additive bias (replicated on every rank).
        group: The tensor-parallel process group (`None`: all processes).
        input_is_parallel: The input is already this rank's slice; `False` slices a whole input.
    """

    shard_dims: ClassVar[dict[str, int]] = {"weight": 1}
    """Which dimension of each parameter is split over ranks (the bias is replicated)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        group: Group = None,
        input_is_parallel: bool = True,
    ) -> None:
        super().__init__()
        self.group = group
        self.rank, self.world_size = _rank_world(group)
        self.in_features, self.out_features = in_features, out_features
        self.local_in_features = _shard_size(in_features, self.world_size, "in_features")
        self.input_is_parallel = input_is_parallel
        self.weight = nn.Parameter(torch.empty(out_features, self.local_in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.normal_(self.weight, 0.0, 0.02)

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, group: Group = None, **kwargs: Any
    ) -> RowParallelLinear:
        """This rank's shard of an existing `nn.Linear` (its weights copied, on its device)."""
        layer = cls(
            linear.in_features, linear.out_features, linear.bias is not None, group=group, **kwargs
        )
        layer.to(device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(linear.weight.chunk(layer.world_size, 1)[layer.rank])
            if linear.bias is not None and layer.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        """`(..., in_features / W)` (or `in_features` if not parallel) -> `(..., out_features)`."""
        if not self.input_is_parallel:
            x = x.chunk(self.world_size, dim=-1)[self.rank]
        y = reduce_from_tensor_parallel_region(F.linear(x, self.weight), self.group)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features} ({self.local_in_features} on rank {self.rank} of "
            f"{self.world_size}), out_features={self.out_features}, bias={self.bias is not None}"
        )


# --------------------------------------------------------------------------------------------------
# splitting a model
# --------------------------------------------------------------------------------------------------


def check_tensor_parallel(config: ModelConfig, world_size: int) -> None:
    """Raise if `config` cannot be split over `world_size` ranks (before any work is done).

    Heads are the unit of the attention split, so the world size must divide the query heads
    and the key/value heads (a rank's query heads then read only its own key/value heads); it
    must divide the feed-forward width; and dropout must be off (each rank would draw its own
    masks for what is one replicated activation).

    Raises:
        TensorParallelError: the first field that does not split, with its value and the world
            sizes that would.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise TensorParallelError(f"world_size must be an int >= 1, got {world_size!r}")
    assert config.n_kv_heads is not None
    assert config.d_ff is not None
    for field, value in (
        ("n_heads", config.n_heads),
        ("n_kv_heads", config.n_kv_heads),
        ("d_ff", config.d_ff),
    ):
        if value % world_size:
            divisors = [w for w in range(1, value + 1) if value % w == 0]
            raise TensorParallelError(
                f"tensor parallelism over {world_size} processes splits model.{field}={value}, "
                f"which is not divisible by {world_size}; use a world size in {divisors[:8]}"
                + (
                    " (grouped-query attention splits whole key/value heads)"
                    if field == "n_kv_heads"
                    else ""
                )
            )
    if config.dropout:
        raise TensorParallelError(
            f"tensor parallelism needs model.dropout=0, got {config.dropout}: the ranks would "
            "draw different dropout masks for the replicated activations"
        )


def _enter_region(
    group: Group, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Forward pre-hook: $f$ on a sub-layer's input, once for all its column-parallel layers."""
    return (copy_to_tensor_parallel_region(args[0], group), *args[1:]), kwargs


def tensor_parallel(model: GPT, group: Group = None) -> GPT:
    """Split `model`'s attention and MLPs over the ranks of `group`, in place; returns `model`.

    In each block: $W^Q, W^K, W^V$ become
    [ColumnParallelLinear][fms_llm.distributed.tensor_parallel.ColumnParallelLinear] (this
    rank's heads), $W^O$ a [RowParallelLinear][fms_llm.distributed.tensor_parallel.RowParallelLinear];
    the MLP's up (and gate) projections column-parallel, its down projection row-parallel; the
    attention module then counts only its local heads. $f$ is applied once at the input of each
    sub-layer (a forward pre-hook) rather than once per projection, so a block costs two
    all-reduces forward and two backward. Every rank must start from the same weights (the
    same seed), since each copies its slice from the full layer.

    Raises:
        TensorParallelError: see [check_tensor_parallel][fms_llm.distributed.tensor_parallel.check_tensor_parallel].
    """
    _, world = _rank_world(group)
    check_tensor_parallel(model.config, world)
    enter = functools.partial(_enter_region, group)
    for block in model.blocks:
        attn = block.self_attn
        assert isinstance(attn, MultiHeadAttention)
        for name in ("q_proj", "k_proj", "v_proj"):
            linear = getattr(attn, name)
            setattr(attn, name, ColumnParallelLinear.from_linear(linear, group, copy_input=False))
        setattr(attn, "out_proj", RowParallelLinear.from_linear(attn.out_proj, group))  # noqa: B010
        attn.n_heads //= world
        attn.n_kv_heads //= world
        attn.register_forward_pre_hook(enter, with_kwargs=True)
        ffn = block.ffn
        assert isinstance(ffn, MLP | SwiGLU)
        column = ("gate_proj", "up_proj") if isinstance(ffn, SwiGLU) else ("up_proj",)
        for name in column:
            linear = getattr(ffn, name)
            setattr(ffn, name, ColumnParallelLinear.from_linear(linear, group, copy_input=False))
        setattr(ffn, "down_proj", RowParallelLinear.from_linear(ffn.down_proj, group))  # noqa: B010
        ffn.register_forward_pre_hook(enter, with_kwargs=True)
    return model


def sharded_parameters(model: nn.Module) -> dict[str, int]:
    """`{state-dict key: split dimension}` of every tensor-parallel parameter of `model`."""
    out: dict[str, int] = {}
    for prefix, module in model.named_modules():
        if isinstance(module, ColumnParallelLinear | RowParallelLinear):
            for name, dim in module.shard_dims.items():
                if getattr(module, name, None) is not None:
                    out[f"{prefix}.{name}" if prefix else name] = dim
    return out
