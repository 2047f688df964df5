"""Scaled dot-product attention, written plainly, and the multi-head attention layer built on it.

**Attention as a soft dictionary lookup.** A dictionary returns the value whose key equals the
query. Attention relaxes "equals" to a similarity $s_j = q \\cdot k_j / \\sqrt{d}$ and returns the
average of *all* values weighted by $\\mathrm{softmax}(s)$:

$$\\mathrm{Attention}(Q, K, V) = \\mathrm{softmax}\\!\\left(\\frac{QK^\\top}{\\sqrt{d}} + M\\right) V$$

where $M$ is $0$ where attention is allowed and $-\\infty$ where it is not. The $1/\\sqrt{d}$ keeps
the scores' variance at 1 when $q$ and $k$ have independent unit-variance entries (a dot product of
$d$ such terms has variance $d$); without it softmax saturates and its gradient vanishes.

This module holds:

- [`scaled_dot_product_attention`][fms_transformer.attention.scaled_dot_product_attention]: the
  naive reference (explicit scores, masking, numerically stable softmax), same contract as
  `torch.nn.functional.scaled_dot_product_attention`;
- [`tiled_attention`][fms_transformer.tiled_attention.tiled_attention] (re-exported): the
  FlashAttention algorithm, memory linear in sequence length;
- [`KVCache`][fms_transformer.kv_cache.KVCache] (re-exported) and
  [`MultiHeadAttention`][fms_transformer.attention.MultiHeadAttention]: MHA, multi-query and
  grouped-query attention with optional biases, RoPE or ALiBi, cross-attention and incremental
  decoding.

**Mask convention** (everywhere in fms): a boolean mask is `True` where attention is *allowed*
(PyTorch's `F.scaled_dot_product_attention` convention; note that `torch.nn.MultiheadAttention`'s
boolean masks mean the opposite); a floating mask is added to the scores.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fms_transformer._sdpa_common import (
    AttentionInputError,
    causal_mask,
    check_attention_inputs,
    draw_dropout_seed,
    dropout_keep_mask,
    flat_batch_index,
)
from fms_transformer.kv_cache import KVCache, KVCacheError
from fms_transformer.positional import RopeScaling, RopeStyle, RotaryEmbedding, alibi_bias
from fms_transformer.tiled_attention import tiled_attention

__all__ = [
    "AttentionInputError",
    "KVCache",
    "KVCacheError",
    "MultiHeadAttention",
    "attention_weights",
    "causal_mask",
    "padding_mask",
    "scaled_dot_product_attention",
    "tiled_attention",
]

Backend = Literal["naive", "tiled", "torch"]


def _repeat_kv(x: Tensor, group: int) -> Tensor:
    """Repeat each key/value head `group` times along dim -3 (query head `h` reads `h // group`)."""
    return x if group == 1 else x.repeat_interleave(group, dim=-3)


def attention_weights(
    q: Tensor,
    k: Tensor,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """The attention probabilities $\\mathrm{softmax}(QK^\\top \\cdot \\text{scale} + M)$.

    The softmax is the stable one: subtract the row maximum before exponentiating (softmax is
    invariant to a per-row shift, and every exponent is then $\\le 0$, so nothing overflows). A row
    where every key is masked gets all-zero probabilities instead of `nan`.

    Args:
        q: Queries `(..., H_q, L_q, E)`.
        k: Keys `(..., H_kv, L_k, E)`.
        attn_mask: Optional boolean (True = attend) or additive mask, broadcastable to
            `(..., H_q, L_q, L_k)`.
        is_causal: Also apply the (top-left aligned) causal mask.
        scale: Score scale, default $1/\\sqrt{E}$.

    Returns:
        `(..., H_q, L_q, L_k)` probabilities.
    """
    check_attention_inputs(q, k, k, attn_mask, 0.0)
    l_q, l_k = q.shape[-2], k.shape[-2]
    k = _repeat_kv(k, q.shape[-3] // k.shape[-3])
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale
    allowed: Tensor | None = causal_mask(l_q, l_k, device=q.device) if is_causal else None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            allowed = attn_mask if allowed is None else allowed & attn_mask
        else:
            scores = scores + attn_mask
    if allowed is not None:
        scores = scores.masked_fill(~allowed, -math.inf)
    row_max = scores.detach().amax(dim=-1, keepdim=True)
    row_max = row_max.masked_fill(row_max == -math.inf, 0.0)
    exp = torch.exp(scores - row_max)
    denom = exp.sum(dim=-1, keepdim=True)
    return exp / denom.masked_fill(denom == 0, 1.0)


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    *,
    dropout_seed: int | None = None,
) -> Tensor:
    """Naive attention: $\\mathrm{softmax}(QK^\\top/\\sqrt{E} + M)\\,V$ with every intermediate explicit.

    Same shapes and mask convention as `torch.nn.functional.scaled_dot_product_attention`
    (grouped-query attention as with its `enable_gqa=True`). Memory is quadratic in the sequence
    length: autograd keeps the `(L_q, L_k)` probabilities of every head.

    Args:
        q: Queries `(..., H_q, L_q, E)`.
        k: Keys `(..., H_kv, L_k, E)`, `H_q` a multiple of `H_kv`.
        v: Values `(..., H_kv, L_k, E_v)`.
        attn_mask: Optional boolean (True = attend) or additive mask, broadcastable to
            `(..., H_q, L_q, L_k)`. May be combined with `is_causal`.
        is_causal: Apply the top-left aligned causal mask (query `i` sees keys `j <= i`).
        scale: Score scale, default $1/\\sqrt{E}$.
        dropout_p: Dropout probability applied to the attention probabilities.
        dropout_seed: Seed of the counter-based dropout mask (see
            [`tiled_attention`][fms_transformer.tiled_attention.tiled_attention]); drawn from
            torch's global generator when `None`.

    Returns:
        `(..., H_q, L_q, E_v)`.

    Raises:
        AttentionInputError: mismatched head dims, heads not divisible, a mask of the wrong shape
            or dtype.
    """
    check_attention_inputs(q, k, v, attn_mask, dropout_p)
    probs = attention_weights(q, k, attn_mask, is_causal, scale)
    if dropout_p > 0:
        seed = draw_dropout_seed() if dropout_seed is None else dropout_seed
        l_q, l_k = q.shape[-2], k.shape[-2]
        keep = dropout_keep_mask(
            seed,
            flat_batch_index(tuple(q.shape[:-2]), q.device),
            torch.arange(l_q, device=q.device).unsqueeze(-1),
            torch.arange(l_k, device=q.device).unsqueeze(0),
            l_q,
            l_k,
            dropout_p,
        )
        probs = probs.masked_fill(~keep, 0.0) * (1.0 / (1.0 - dropout_p))
    return probs @ _repeat_kv(v, q.shape[-3] // k.shape[-3])


def padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Boolean key mask `(batch, 1, 1, max_len)`, True for the first `lengths[b]` keys of row `b`.

    Broadcasts against `(batch, heads, L_q, L_k)` attention scores (right padding).
    """
    if lengths.ndim != 1:
        raise AttentionInputError(f"lengths must be (batch,), got shape {tuple(lengths.shape)}")
    keys = torch.arange(max_len, device=lengths.device)
    return (keys < lengths.unsqueeze(-1)).view(lengths.shape[0], 1, 1, max_len)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with MHA, multi-query and grouped-query variants, RoPE/ALiBi and a cache.

    $$\\mathrm{head}_h = \\mathrm{Attention}(X W^Q_h, Y W^K_{g(h)}, Y W^V_{g(h)}), \\qquad
      \\mathrm{MHA}(X, Y) = [\\mathrm{head}_1; \\dots; \\mathrm{head}_H] W^O$$

    with $Y = X$ for self-attention, $Y$ = the encoder memory for cross-attention, and
    $g(h) = \\lfloor h / (H / H_{kv}) \\rfloor$: `n_kv_heads = n_heads` is the original MHA,
    `n_kv_heads = 1` multi-query attention (Shazeer 2019), anything between grouped-query
    attention (Ainslie et al. 2023). Fewer key/value heads shrink the KV cache by
    `n_heads / n_kv_heads`.

    Parameters are four separate `nn.Linear`: `q_proj` `(n_heads*head_dim, d_model)`, `k_proj` and
    `v_proj` `(n_kv_heads*head_dim, kv_dim)`, `out_proj` `(d_model, n_heads*head_dim)`, so that
    Hugging Face and `torch.nn.MultiheadAttention` weights map onto them one to one.

    Args:
        d_model: Model width (input and output size).
        n_heads: Number of query heads.
        n_kv_heads: Number of key/value heads (default `n_heads`); must divide `n_heads`.
        bias: Biases on the q/k/v projections.
        out_bias: Bias on the output projection (default: `bias`).
        dropout: Dropout on the attention probabilities (only in training mode).
        head_dim: Size of each head (default `d_model // n_heads`).
        positional: `"rope"` (rotate queries and keys), `"alibi"` (linear score bias) or `None`.
        rope_theta: RoPE base $\\theta$.
        rope_style: `"split_half"` (Hugging Face Llama) or `"interleaved"` (RoFormer/GPT-J).
        rope_scaling: Optional [`RopeScaling`][fms_transformer.positional.RopeScaling].
        rotary_dim: Rotate only the first `rotary_dim` features of each head.
        backend: `"torch"` (`F.scaled_dot_product_attention`, PyTorch's fused kernels: the fast
            path), `"naive"` ([`scaled_dot_product_attention`][fms_transformer.attention.scaled_dot_product_attention])
            or `"tiled"` ([`tiled_attention`][fms_transformer.tiled_attention.tiled_attention]).
        kv_dim: Input size of the key/value projections (default `d_model`; set it for
            cross-attention to a memory of another width).
        block_size: Tile size of the tiled backend.

    Attributes:
        record_attention: Set to True to keep the last attention probabilities (computed with the
            naive formula, detached) in `last_attention`, `(batch, n_heads, L_q, L_k)`.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        *,
        bias: bool = True,
        out_bias: bool | None = None,
        dropout: float = 0.0,
        head_dim: int | None = None,
        positional: Literal["rope", "alibi"] | None = None,
        rope_theta: float = 10000.0,
        rope_style: RopeStyle = "split_half",
        rope_scaling: RopeScaling | None = None,
        rotary_dim: int | None = None,
        backend: Backend = "torch",
        kv_dim: int | None = None,
        block_size: int = 256,
    ) -> None:
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if d_model <= 0 or n_heads <= 0 or n_kv_heads <= 0:
            raise AttentionInputError(
                f"d_model, n_heads, n_kv_heads must be positive, got {d_model}, {n_heads}, "
                f"{n_kv_heads}"
            )
        if n_heads % n_kv_heads:
            raise AttentionInputError(
                f"n_heads={n_heads} is not divisible by n_kv_heads={n_kv_heads}"
            )
        if head_dim is None:
            if d_model % n_heads:
                raise AttentionInputError(
                    f"d_model={d_model} is not divisible by n_heads={n_heads}; pass head_dim"
                )
            head_dim = d_model // n_heads
        if positional not in (None, "rope", "alibi"):
            raise AttentionInputError(
                f"positional must be 'rope', 'alibi' or None, got {positional!r}"
            )
        if backend not in ("naive", "tiled", "torch"):
            raise AttentionInputError(
                f"backend must be 'naive', 'tiled' or 'torch', got {backend!r}"
            )
        if not 0.0 <= dropout < 1.0:
            raise AttentionInputError(f"dropout must be in [0, 1), got {dropout}")
        kv_dim = d_model if kv_dim is None else kv_dim
        self.d_model, self.n_heads, self.n_kv_heads, self.head_dim = (
            d_model,
            n_heads,
            n_kv_heads,
            head_dim,
        )
        self.dropout, self.positional, self.backend, self.block_size = (
            dropout,
            positional,
            backend,
            block_size,
        )
        self.q_proj = nn.Linear(d_model, n_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(kv_dim, n_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(kv_dim, n_kv_heads * head_dim, bias=bias)
        self.out_proj = nn.Linear(
            n_heads * head_dim, d_model, bias=bias if out_bias is None else out_bias
        )
        self.rope: RotaryEmbedding | None = None
        if positional == "rope":
            self.rope = RotaryEmbedding(
                head_dim, rope_theta, rope_style, scaling=rope_scaling, rotary_dim=rotary_dim
            )
        self.record_attention = False
        self.last_attention: Tensor | None = None

    def _split(self, x: Tensor, n: int) -> Tensor:
        """`(batch, seq, n*head_dim)` -> `(batch, n, seq, head_dim)`."""
        return x.view(*x.shape[:-1], n, self.head_dim).transpose(1, 2)

    def project_self_attention(
        self, x: Tensor, offset: int, positions: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values of the new tokens for self-attention, RoPE applied.

        $Q = X W^Q$, $K = X W^K$, $V = X W^V$, split into heads: `q` is
        `(batch, n_heads, L_q, head_dim)`, `k` and `v` are `(batch, n_kv_heads, L_q, head_dim)`.
        With RoPE, `q` and `k` are rotated to `positions` (default `offset .. offset + L_q - 1`,
        `offset` being the number of cached tokens).

        This is the plain reference; a subclass may override it with a faster computation of the
        same values (fms-llm's language models fuse the three projections into one matrix
        multiply and rotate queries and keys in one call).
        """
        l_q = x.shape[1]
        q = self._split(self.q_proj(x), self.n_heads)
        k = self._split(self.k_proj(x), self.n_kv_heads)
        v = self._split(self.v_proj(x), self.n_kv_heads)
        if self.rope is not None:
            if positions is None:
                positions = torch.arange(offset, offset + l_q, device=x.device)
            q, k = self.rope(q, positions), self.rope(k, positions)
        return q, k, v

    def forward(
        self,
        x: Tensor,
        *,
        mask: Tensor | None = None,
        is_causal: bool = False,
        kv_cache: KVCache | None = None,
        layer_idx: int = 0,
        key_value: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Attend the tokens of `x` to themselves (or to `key_value`).

        Args:
            x: Queries' input `(batch, L_q, d_model)`.
            mask: Boolean (True = attend) or additive mask broadcastable to
                `(batch, n_heads, L_q, L_k)` (e.g. `(batch, 1, 1, L_k)` padding,
                `(L_q, L_k)`), where `L_k` counts cached tokens too.
            is_causal: Causal self-attention. With a cache, the new tokens sit after the cached
                ones (bottom-right alignment).
            kv_cache: Incremental decoding: keys/values of the new tokens are appended to layer
                `layer_idx` of the cache and the queries attend to all of them. For
                cross-attention the memory's keys/values are computed once and reused.
            layer_idx: Which layer of `kv_cache` this module owns.
            key_value: Cross-attention memory `(batch, L_k, kv_dim)`; `None` for self-attention.
            positions: Integer positions of the new tokens for RoPE, `(L_q,)` or `(batch, L_q)`;
                default `offset .. offset + L_q - 1` with `offset` the cached length.

        Returns:
            `(batch, L_q, d_model)`.
        """
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise AttentionInputError(
                f"x must be (batch, seq, d_model={self.d_model}), got shape {tuple(x.shape)}"
            )
        if mask is not None and mask.ndim == 3:
            raise AttentionInputError(
                f"mask of shape {tuple(mask.shape)} is ambiguous: pass (L_q, L_k) or "
                f"(batch, 1 or n_heads, L_q, L_k)"
            )
        batch, l_q, _ = x.shape
        if key_value is None:  # self-attention
            offset = kv_cache.seq_len(layer_idx) if kv_cache is not None else 0
            q, k, v = self.project_self_attention(x, offset, positions)
            if kv_cache is not None:
                k, v = kv_cache.append(layer_idx, k, v)
        else:  # cross-attention: no positions, memory computed once per cache
            q = self._split(self.q_proj(x), self.n_heads)
            if key_value.ndim != 3 or key_value.shape[0] != batch:
                raise AttentionInputError(
                    f"key_value must be (batch={batch}, L_k, kv_dim), got {tuple(key_value.shape)}"
                )
            cached = kv_cache.layer(layer_idx) if kv_cache is not None else None
            if cached is not None:
                k, v = cached
            else:
                k = self._split(self.k_proj(key_value), self.n_kv_heads)
                v = self._split(self.v_proj(key_value), self.n_kv_heads)
                if kv_cache is not None:
                    kv_cache.set(layer_idx, k, v)
        l_k = k.shape[-2]
        attn_mask, kernel_causal = self._combine_masks(mask, is_causal, l_q, l_k, x)
        if self.record_attention:
            self.last_attention = attention_weights(
                q.detach(), k.detach(), attn_mask, kernel_causal
            )
        out = self._attend(q, k, v, attn_mask, kernel_causal)
        result: Tensor = self.out_proj(out.transpose(1, 2).flatten(-2))
        return result

    def _combine_masks(
        self, mask: Tensor | None, is_causal: bool, l_q: int, l_k: int, x: Tensor
    ) -> tuple[Tensor | None, bool]:
        """Merge the user mask, the causal mask (offset for a cache) and ALiBi into one mask."""
        offset = l_k - l_q
        # The kernels' own causal flag is top-left aligned and PyTorch's cannot be combined with a
        # mask, so it is used only for the plain case; otherwise the causal mask is merged in.
        use_kernel_causal = (
            is_causal and offset == 0 and mask is None and self.positional != "alibi"
        )
        allowed = mask
        if is_causal and not use_kernel_causal and (l_q > 1 or offset < 0):
            causal = causal_mask(l_q, l_k, offset=offset, device=x.device)
            if allowed is None:
                allowed = causal
            elif allowed.dtype == torch.bool:
                allowed = allowed & causal
            else:
                allowed = allowed.masked_fill(~causal, -math.inf)
        if self.positional == "alibi":
            bias = alibi_bias(self.n_heads, l_q, l_k, offset=offset, device=x.device, dtype=x.dtype)
            if allowed is None:
                return bias, False
            if allowed.dtype == torch.bool:
                return bias.masked_fill(~allowed, -math.inf), False
            return bias + allowed, False
        return allowed, use_kernel_causal

    def _attend(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool
    ) -> Tensor:
        p = self.dropout if self.training else 0.0
        if self.backend == "naive":
            return scaled_dot_product_attention(q, k, v, mask, is_causal, dropout_p=p)
        if self.backend == "tiled":
            return tiled_attention(
                q, k, v, mask, is_causal, dropout_p=p, block_size=self.block_size
            )
        if mask is not None and mask.dtype != torch.bool and mask.dtype != q.dtype:
            mask = mask.to(q.dtype)
        if mask is not None:  # q, k, v are this module's own projections; a mask comes from outside
            check_attention_inputs(q, k, v, mask, p)  # PyTorch's messages do not name our shapes
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=p,
            enable_gqa=self.n_kv_heads != self.n_heads,
        )  # fmt: skip
