"""What naive and tiled attention share: input checking, masks and the counter-based dropout RNG.

Both attentions take the shapes of `torch.nn.functional.scaled_dot_product_attention`:

- `q`: `(..., H_q, L_q, E)`, `k`: `(..., H_kv, L_k, E)`, `v`: `(..., H_kv, L_k, E_v)`;
- `H_q` must be a multiple of `H_kv` (grouped-query attention: query head `h` reads key/value head
  `h // (H_q / H_kv)`, the `repeat_interleave` convention of PyTorch's `enable_gqa=True`);
- `attn_mask`: boolean (`True` = may attend) or floating (added to the scores), broadcastable to
  `(..., H_q, L_q, L_k)`;
- `is_causal=True`: query `i` attends key `j` only when `j <= i` (top-left aligned, as PyTorch).

Dropout uses a *counter-based* random number generator (the idea of the Philox generator that
FlashAttention uses): whether the attention probability $P_{bij}$ is kept is a pure hash of
`(seed, b, i, j)`, where `b` indexes the flattened leading dimensions (heads included). So a block
of the mask can be regenerated anywhere, in any order, at any block size: the tiled backward pass
recomputes exactly the mask the forward pass used without storing it, and the naive and tiled
attentions drop the same entries for the same seed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "AttentionInputError",
    "causal_mask",
    "check_attention_inputs",
    "draw_dropout_seed",
    "dropout_keep_mask",
]

_M32 = 0xFFFFFFFF


class AttentionInputError(ValueError):
    """Bad shapes, dtypes or arguments given to an attention function or module."""


def check_attention_inputs(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None,
    dropout_p: float,
) -> None:
    """Validate the arguments of an attention call; raise `AttentionInputError` naming shapes.

    Args:
        q: Queries `(..., H_q, L_q, E)`.
        k: Keys `(..., H_kv, L_k, E)`.
        v: Values `(..., H_kv, L_k, E_v)`.
        attn_mask: `None`, or a boolean / floating mask broadcastable to `(..., H_q, L_q, L_k)`.
        dropout_p: Dropout probability in `[0, 1)`.

    Raises:
        AttentionInputError: naming the argument, the shape or dtype received and what was expected.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise AttentionInputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim < 3:
            raise AttentionInputError(
                f"{name} must have shape (..., heads, seq, head_dim) with at least 3 dims, "
                f"got shape {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise AttentionInputError(f"{name} must be floating point, got dtype {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise AttentionInputError(
            f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise AttentionInputError(
            f"q and k must have the same head_dim (last dim): q has shape {tuple(q.shape)}, "
            f"k has shape {tuple(k.shape)}"
        )
    if k.shape[:-1] != v.shape[:-1]:
        raise AttentionInputError(
            f"k and v must agree on every dim but the last (..., heads, L_k): k has shape "
            f"{tuple(k.shape)}, v has shape {tuple(v.shape)}"
        )
    if q.shape[:-3] != k.shape[:-3]:
        raise AttentionInputError(
            f"q and k must have the same leading (batch) dims: q has shape {tuple(q.shape)}, "
            f"k has shape {tuple(k.shape)}"
        )
    h_q, h_kv = q.shape[-3], k.shape[-3]
    if h_kv == 0 or h_q % h_kv != 0:
        raise AttentionInputError(
            f"the number of query heads ({h_q}, q shape {tuple(q.shape)}) must be a multiple of "
            f"the number of key/value heads ({h_kv}, k shape {tuple(k.shape)})"
        )
    if not 0.0 <= dropout_p < 1.0:
        raise AttentionInputError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor):
            raise AttentionInputError(
                f"attn_mask must be a torch.Tensor or None, got {type(attn_mask).__name__}"
            )
        if attn_mask.dtype != torch.bool and attn_mask.dtype != q.dtype:
            raise AttentionInputError(
                f"attn_mask must be bool (True = attend) or have the dtype of q ({q.dtype}), "
                f"got dtype {attn_mask.dtype}"
            )
        target = (*q.shape[:-1], k.shape[-2])
        try:
            broadcast = torch.broadcast_shapes(attn_mask.shape, target)  # type: ignore[no-untyped-call]
            ok = broadcast == torch.Size(target)
        except RuntimeError:
            ok = False
        if not ok:
            raise AttentionInputError(
                f"attn_mask has shape {tuple(attn_mask.shape)}, which does not broadcast to "
                f"(..., H_q, L_q, L_k) = {target}"
            )


def causal_mask(
    l_q: int, l_k: int, *, offset: int = 0, device: torch.device | str | None = None
) -> Tensor:
    """Boolean causal mask `(l_q, l_k)`, `True` where query `i` may attend key `j`.

    Query `i` sits at position `i + offset`, so it may attend keys `j <= i + offset`. `offset=0`
    is PyTorch's top-left alignment (`is_causal=True`); `offset = l_k - l_q` is the bottom-right
    alignment needed when `l_q` new tokens attend to `l_k - l_q` cached ones.

    Args:
        l_q: Number of queries.
        l_k: Number of keys.
        offset: Position of the first query among the keys.
        device: Device of the result.

    Returns:
        A `(l_q, l_k)` boolean tensor.
    """
    rows = torch.arange(l_q, device=device).unsqueeze(-1) + offset
    cols = torch.arange(l_k, device=device)
    return cols <= rows


def draw_dropout_seed() -> int:
    """Draw a 62-bit dropout seed from torch's global generator (so `seed_everything` fixes it)."""
    return int(torch.randint(0, 2**62, (1,), dtype=torch.int64).item())


def _hash32(x: Tensor) -> Tensor:
    """A 32-bit integer avalanche hash (the `lowbias32` shape) on int64 tensors holding uint32.

    Multipliers stay below $2^{31}$ so every product fits in a signed 64-bit integer.
    """
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x346CA68B) & _M32
    return x ^ (x >> 16)


def dropout_keep_mask(
    seed: int,
    batch_index: Tensor,
    rows: Tensor,
    cols: Tensor,
    l_q: int,
    l_k: int,
    dropout_p: float,
) -> Tensor:
    """Which attention probabilities dropout keeps, as a pure function of their coordinates.

    Entry `(b, i, j)` is kept when $\\mathrm{hash}(\\mathrm{seed}, (b L_q + i) L_k + j) \\ge
    p \\cdot 2^{32}$, so it is kept with probability $1 - p$, independently of how the attention
    matrix is tiled.

    Args:
        seed: The call's dropout seed (see `draw_dropout_seed`).
        batch_index: int64 flat index of the leading dims (heads included), broadcastable shape
            ending in `(1, 1)`.
        rows: int64 query indices, shape `(B_q, 1)`.
        cols: int64 key indices, shape `(1, B_k)`.
        l_q: Total number of queries.
        l_k: Total number of keys.
        dropout_p: Dropout probability.

    Returns:
        Boolean tensor of the broadcast shape of `batch_index`, `rows` and `cols`.
    """
    counter = (batch_index * l_q + rows) * l_k + cols
    seed_lo, seed_hi = seed & _M32, (seed >> 32) & _M32
    h = _hash32(counter ^ seed_lo)
    h = _hash32(h ^ (counter >> 32) ^ seed_hi)
    threshold = min(math.floor(dropout_p * 2**32), _M32 + 1)
    return h >= threshold


def flat_batch_index(lead_shape: tuple[int, ...], device: torch.device) -> Tensor:
    """`arange` over the flattened leading dims, shaped `(*lead_shape, 1, 1)` for broadcasting."""
    n = math.prod(lead_shape)
    return torch.arange(n, device=device, dtype=torch.int64).view(*lead_shape, 1, 1)
