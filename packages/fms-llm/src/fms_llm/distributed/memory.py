r"""How much memory a rank needs, and how many bytes it sends, for each way of spreading a model.

A training step holds four kinds of tensors on every rank. With $\Psi$ the number of parameters,
$W$ the world size, $b$ the micro-batch a rank processes and $T$ the sequence length:

| | one process, DDP | FSDP (ZeRO-3) | tensor parallel |
|---|---|---|---|
| parameters | $\Psi$ | $\Psi/W$ + the largest unit whole | $\Psi_{rep} + \Psi_{split}/W$ |
| gradients | $\Psi$ | $\Psi/W$ | $\Psi_{rep} + \Psi_{split}/W$ |
| AdamW moments | $2\Psi$ | $2\Psi/W$ | $2(\Psi_{rep} + \Psi_{split}/W)$ |
| activations | $b = B/W$ rows | $b = B/W$ rows | $B$ rows, heads and MLP split |

times the bytes of each element ($4 + 4 + 8 = 16$ bytes a parameter in float32 or in bf16
autocast over float32 weights: the "$16\Psi$" of the ZeRO paper, Rajbhandari et al., 2020).

**Activations** are what the forward pass saves for the backward pass. Counted tensor by tensor
for this package's blocks (PyTorch's fused attention keeps a log-sum-exp per head instead of the
$T \times T$ scores), a block saves, per token,

$$a_{\text{block}} = \underbrace{4d + 2 n_s}_{\text{norm inputs and outputs}}
  + \underbrace{2d + 2 d_{kv} + H}_{\text{queries, attention output, keys, values, log-sum-exp}}
  + \underbrace{k_{f} d_{ff}}_{\text{MLP}}$$

elements, with $n_s$ the statistics a norm keeps per token (1 for RMSNorm, 2 for LayerNorm),
$d_{kv} = H_{kv} d / H$ and $k_f$ the MLP's saved hidden vectors (3 for SwiGLU: gate, up and
their product; 2 for a GELU MLP). Tensor parallelism splits the second and third terms over the
ranks (Korthikanti et al., 2022, without sequence parallelism). Outside the blocks: the token ids
and targets (int64), the final norm's input and output and the loss's stored gradients of the
hidden states ($4d + n_s$ a token), the head's gradient $V d$ (formed in the forward pass by
[linear_cross_entropy][fms_llm.models.fused.linear_cross_entropy]) and its chunk of logits: one
chunk of $\min(N, r) \times V$ when the $N$ tokens fit in a chunk of $r$ rows, two when they span
several (the next chunk's logits are made while the last one is still referenced). These counts
were measured with PyTorch's `MemTracker` and are tested against it.

**Peak.** With the fused loss the peak of a step comes at the end of the forward pass (every
activation alive) or at the end of the backward pass (every gradient alive), whichever is higher:

$$M = M_{\text{params}} + M_{\text{optimizer}} + \max(M_{\text{act}} + M_{\text{grad, resident}},\ M_{\text{grad}}),$$

where the resident gradients are DDP's buckets (allocated once, the gradients are views into
them) or, with gradient accumulation, the gradients carried between micro-batches.

**Communication** per optimiser step and rank, with a ring algorithm (each rank sends
$\frac{W-1}{W}$ of the buffer per all-gather or reduce-scatter, twice that per all-reduce):
DDP all-reduces the gradients once ($2\frac{W-1}{W}\Psi$ elements); FSDP all-gathers the
parameters before the forward and again before the backward of each micro-batch and
reduce-scatters the gradients ($3\frac{W-1}{W}\Psi$ a micro-batch); tensor parallelism all-reduces
the $B T d$ activations twice a block forward and twice backward ($8 L\frac{W-1}{W} B T d$ a
micro-batch).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from fms_llm.distributed.launch import DistributedError
from fms_llm.models.fused import _CHUNK_ELEMENTS, _MIN_CHUNK_ROWS
from fms_llm.models.gpt import ModelConfig

__all__ = ["MemoryEstimate", "ParameterCount", "count_parameters", "estimate_memory"]

_STRATEGIES = ("none", "ddp", "fsdp", "tp")
_GIB = 1024**3


@dataclass(frozen=True)
class ParameterCount:
    """The parameters of a model by what tensor parallelism does with them.

    Attributes:
        split: Split over tensor-parallel ranks: $W^Q, W^K, W^V, W^O$, the MLP's matrices and
            the column-parallel biases.
        replicated: Whole on every rank: embeddings, head, norms, the row-parallel biases.
        root_unit: FSDP's root unit (embeddings, head, final norm), all-gathered whole.
        block_unit: One block (an FSDP unit).
    """

    split: int
    replicated: int
    root_unit: int
    block_unit: int

    @property
    def total(self) -> int:
        """$\\Psi$, every distinct parameter (a tied head counts once)."""
        return self.split + self.replicated


def count_parameters(config: ModelConfig) -> ParameterCount:
    """Count `config`'s parameters without building the model (a 70B model is fine).

    Equal to [GPT.num_parameters][fms_llm.models.gpt.GPT.num_parameters] (tested).
    """
    d, v, n_layers = config.d_model, config.vocab_size, config.n_layers
    assert config.n_kv_heads is not None
    assert config.d_ff is not None
    d_kv = config.n_kv_heads * (d // config.n_heads)
    d_ff, bias = config.d_ff, int(config.bias)
    norm = 2 * d if config.norm == "layernorm" else d
    n_ffn = 3 if config.ffn == "swiglu" else 2
    # split: q, k, v, o matrices, the MLP matrices, and the column-parallel layers' biases
    split = d * d + 2 * d * d_kv + d * d + n_ffn * d * d_ff
    split += bias * (d + 2 * d_kv + (n_ffn - 1) * d_ff)
    replicated_block = 2 * norm + bias * 2 * d  # two norms, the two row-parallel biases
    root = v * d + (0 if config.tie_embeddings else v * d) + norm
    if config.positional == "learned":
        root += config.max_seq_len * d
    return ParameterCount(
        split=n_layers * split,
        replicated=n_layers * replicated_block + root,
        root_unit=root,
        block_unit=split + replicated_block,
    )


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a rank holds at the peak of a training step, and bytes it sends per step.

    Attributes:
        strategy: `none`, `ddp`, `fsdp` or `tp`.
        world_size: Processes $W$.
        params: Parameter bytes on this rank (FSDP: its shard plus the largest unit gathered).
        grads: Gradient bytes when all are alive (the end of the backward pass).
        grads_resident: Gradient bytes alive through the forward pass (DDP's buckets, or
            accumulated gradients).
        optimizer: AdamW moment bytes.
        activations: Saved-for-backward bytes of one micro-batch, with the loss's working set.
        buffers: Constant buffers (RoPE tables).
        peak: The step's peak (see the module docstring).
        comm_bytes: Bytes this rank sends per optimiser step.
        tokens_per_rank: Tokens of one micro-batch on this rank.
    """

    strategy: str
    world_size: int
    params: int
    grads: int
    grads_resident: int
    optimizer: int
    activations: int
    buffers: int
    peak: int
    comm_bytes: int
    tokens_per_rank: int

    def as_dict(self) -> dict[str, Any]:
        """The fields, and the peak in GiB."""
        out = asdict(self)
        out["peak_gib"] = self.peak / _GIB
        return out


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DistributedError(
            f"estimate_memory: {name} must be an int >= {minimum}, got {value!r}"
        )
    return value


def estimate_memory(
    config: ModelConfig,
    *,
    strategy: str,
    world_size: int,
    batch_size: int,
    seq_len: int,
    grad_accum_steps: int = 1,
    param_bytes: int = 4,
    grad_bytes: int = 4,
    optimizer_bytes: int = 8,
    activation_bytes: int = 4,
) -> MemoryEstimate:
    r"""The memory of one rank and its traffic per step, for `config` trained this way.

    Args:
        config: The model.
        strategy: `"none"` (one process), `"ddp"`, `"fsdp"` or `"tp"`.
        world_size: Processes $W$ (1 for `"none"`).
        batch_size: The global micro-batch $B$ (windows), as `train.batch_size`.
        seq_len: Tokens a window $T$.
        grad_accum_steps: Micro-batches a step (gradients are carried between them).
        param_bytes: Bytes a weight (4: float32 weights, also under bf16 autocast).
        grad_bytes: Bytes a gradient.
        optimizer_bytes: Bytes of optimiser state a parameter (AdamW: two float32 moments, 8).
        activation_bytes: Bytes a saved activation (4 in float32, 2 under bf16 autocast).

    Raises:
        DistributedError: an unknown strategy, or a world size that does not split the batch
            (data parallel) or the heads, key/value heads and MLP (tensor parallel).
    """
    if strategy not in _STRATEGIES:
        raise DistributedError(
            f"estimate_memory: strategy must be one of {_STRATEGIES}, got {strategy!r}"
        )
    w = _check_int("world_size", world_size)
    if strategy == "none" and w != 1:
        raise DistributedError(f"estimate_memory: strategy 'none' runs one process, got {w}")
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        _check_int(name, value)
    accum = _check_int("grad_accum_steps", grad_accum_steps)
    for name, value in (
        ("param_bytes", param_bytes),
        ("grad_bytes", grad_bytes),
        ("optimizer_bytes", optimizer_bytes),
        ("activation_bytes", activation_bytes),
    ):
        _check_int(name, value, minimum=0)
    data_parallel = strategy in ("ddp", "fsdp")
    if data_parallel and batch_size % w:
        raise DistributedError(
            f"estimate_memory: batch_size={batch_size} is not divisible by world_size={w}"
        )
    if strategy == "tp":
        from fms_llm.distributed.tensor_parallel import check_tensor_parallel

        check_tensor_parallel(config, w)

    count = count_parameters(config)
    psi = count.total
    if strategy == "fsdp":
        held = math.ceil(psi / w)
        params = held * param_bytes + max(count.root_unit, count.block_unit) * param_bytes
    elif strategy == "tp":
        held = count.replicated + count.split // w
        params = held * param_bytes
    else:
        held = psi
        params = psi * param_bytes
    grads = held * grad_bytes
    optimizer = held * optimizer_bytes
    grads_resident = grads if (strategy == "ddp" or accum > 1) else 0

    d, v, h = config.d_model, config.vocab_size, config.n_heads
    assert config.n_kv_heads is not None
    assert config.d_ff is not None
    d_kv = config.n_kv_heads * (d // h)
    n_s = 2 if config.norm == "layernorm" else 1
    k_f = 3 if config.ffn == "swiglu" else 2
    rows = batch_size // w if data_parallel else batch_size
    tokens = rows * seq_len
    split_ways = w if strategy == "tp" else 1
    per_token_block = 4 * d + 2 * n_s + (2 * d + 2 * d_kv + h + k_f * config.d_ff) // split_ways
    chunk_rows = max(_MIN_CHUNK_ROWS, _CHUNK_ELEMENTS // v)
    logits = tokens * v if tokens <= chunk_rows else 2 * chunk_rows * v
    per_token_outside = 4 * d + n_s
    activations = (
        tokens * (config.n_layers * per_token_block + per_token_outside) + logits
    ) * activation_bytes
    activations += v * d * grad_bytes + 2 * 8 * tokens  # the head's gradient; ids and targets
    buffers = 0
    if config.positional == "rope":
        head_dim = d // h
        buffers = (3 * config.max_seq_len * head_dim + head_dim // 2) * 4

    peak = params + optimizer + buffers + max(activations + grads_resident, grads)
    ring = (w - 1) / w
    if strategy == "ddp":
        comm = 2 * ring * psi * grad_bytes
    elif strategy == "fsdp":
        comm = accum * ring * psi * (2 * param_bytes + grad_bytes)
    elif strategy == "tp":
        comm = accum * 8 * config.n_layers * ring * tokens * d * activation_bytes
    else:
        comm = 0.0
    return MemoryEstimate(
        strategy=strategy,
        world_size=w,
        params=params,
        grads=grads,
        grads_resident=grads_resident,
        optimizer=optimizer,
        activations=activations,
        buffers=buffers,
        peak=peak,
        comm_bytes=round(comm),
        tokens_per_rank=tokens,
    )
