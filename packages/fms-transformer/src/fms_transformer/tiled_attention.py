"""Tiled attention: FlashAttention's online softmax, forward and backward, in plain PyTorch.

Naive attention materialises the score matrix $S = QK^\\top / \\sqrt{d}$, `(L_q, L_k)` per head,
and autograd keeps it (and the probabilities $P$) for the backward pass: memory quadratic in the
sequence length. FlashAttention (Dao et al. 2022; FlashAttention-2, Dao 2023) never holds more than
one `(B_q, B_k)` tile of it.

**Forward (online softmax).** For one query row, visit the keys block by block keeping a running
maximum $m$, a running normaliser $\\ell$ and an unnormalised output $a$:

$$m' = \\max(m, \\max_j s_j), \\quad
  \\ell' = e^{m - m'}\\ell + \\sum_j e^{s_j - m'}, \\quad
  a' = e^{m - m'} a + \\sum_j e^{s_j - m'} v_j .$$

By induction, after the last block $\\ell = \\sum_j e^{s_j - m}$ and $a = \\sum_j e^{s_j - m} v_j$
with $m$ the true row maximum, so $o = a / \\ell$ is exactly $\\mathrm{softmax}(s)\\,V$, computed
stably (every exponent is $\\le 0$). We keep only $o$ and the log-sum-exp
$\\mathrm{lse} = m + \\log \\ell$ per row.

**Backward (recomputation).** With $P = \\exp(S - \\mathrm{lse})$ recomputed tile by tile from
$Q, K$ and the saved lse, and $D_i = \\sum_c dO_{ic} O_{ic}$ (which equals
$\\sum_j P_{ij}\\,dP_{ij}$):

$$dV = P^\\top dO, \\quad dP = dO\\,V^\\top, \\quad dS = P \\circ (dP - D), \\quad
  dQ = \\tfrac{1}{\\sqrt d}\\, dS\\,K, \\quad dK = \\tfrac{1}{\\sqrt d}\\, dS^\\top Q .$$

Saved for backward: `q, k, v, out, lse` (and the caller's mask): linear in sequence length.
Transient memory is a few `(B_q, B_k)` tiles per head.

**Dropout.** Dropout is applied to the normalised probabilities, $O = (Z \\circ P) V$ with
$Z_{ij} \\in \\{0, 1/(1-p)\\}$. $Z$ is never stored: entry `(b, i, j)` is a hash of
`(seed, b, i, j)` (a counter-based generator, as FlashAttention uses Philox), so the backward pass
regenerates each tile of $Z$ exactly, and [`scaled_dot_product_attention`][fms_transformer.attention.scaled_dot_product_attention]
drops the same entries for the same `dropout_seed`. The identity $D_i = \\sum_j P_{ij}\\,dP_{ij}$
still holds with $dP = Z \\circ (dO\\,V^\\top)$, so the backward formulas are unchanged.

**Causal.** Tiles entirely above the diagonal are skipped in both passes (about half the work);
only tiles crossing it are masked element-wise.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from fms_transformer._sdpa_common import (
    AttentionInputError,
    causal_mask,
    check_attention_inputs,
    draw_dropout_seed,
    dropout_keep_mask,
    flat_batch_index,
)

__all__ = ["TiledAttentionFunction", "tiled_attention"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _group_mask(mask: Tensor, target: tuple[int, ...], h_kv: int, group: int) -> Tensor:
    """Broadcast `mask` to `target = (..., H_q, L_q, L_k)` (a view) and split heads into groups."""
    full = mask.expand(target)
    try:
        grouped: Tensor = full.unflatten(-3, (h_kv, group))  # type: ignore[no-untyped-call]
        return grouped
    except RuntimeError:  # pragma: no cover - strides that no view can split
        return full.reshape(*target[:-3], h_kv, group, *target[-2:])


def _tile_scores(
    q_tile: Tensor,
    k_tile: Tensor,
    mask: Tensor | None,
    is_causal: bool,
    qs: int,
    qe: int,
    ks: int,
    ke: int,
) -> tuple[Tensor, bool]:
    """Scores of one tile `(..., H_kv, G, B_q, B_k)`, and whether any entry may be masked.

    `q_tile` is already multiplied by the scale. Masking is done in place on the fresh tile.
    """
    s = q_tile @ k_tile.transpose(-2, -1)
    masked = False
    if mask is not None:
        m = mask[..., qs:qe, ks:ke]
        if m.dtype == torch.bool:
            s.masked_fill_(~m, -math.inf)
        else:
            s.add_(m)
        masked = True
    if is_causal and ke - 1 > qs:  # the tile crosses the diagonal
        allowed = causal_mask(qe - qs, ke - ks, offset=qs - ks, device=s.device)
        s.masked_fill_(~allowed, -math.inf)
        masked = True
    return s, masked


def _keep_tile(
    seed: int, batch_index: Tensor, qs: int, qe: int, ks: int, ke: int, l_q: int, l_k: int, p: float
) -> Tensor:
    device = batch_index.device
    rows = torch.arange(qs, qe, device=device, dtype=torch.int64).unsqueeze(-1)
    cols = torch.arange(ks, ke, device=device, dtype=torch.int64).unsqueeze(0)
    return dropout_keep_mask(seed, batch_index, rows, cols, l_q, l_k, p)


def _sum_groups(x: Tensor) -> Tensor:
    """Sum the query-group dim (-3) of a key-side gradient, keeping it (size 1) for broadcasting."""
    return x if x.shape[-3] == 1 else x.sum(dim=-3, keepdim=True)


class TiledAttentionFunction(torch.autograd.Function):
    """The `torch.autograd.Function` behind [`tiled_attention`][fms_transformer.tiled_attention.tiled_attention].

    Inputs are already grouped: `q` `(..., H_kv, G, L_q, E)`, `k` `(..., H_kv, 1, L_k, E)`,
    `v` `(..., H_kv, 1, L_k, E_v)`, `mask` `None` or broadcast to `(..., H_kv, G, L_q, L_k)`.
    Tiles are updated in place so that each costs as few passes over memory as possible.
    """

    @staticmethod
    def forward(
        ctx: Any,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None,
        is_causal: bool,
        scale: float,
        dropout_p: float,
        seed: int,
        block_q: int,
        block_k: int,
    ) -> Tensor:
        l_q, l_k = q.shape[-2], k.shape[-2]
        stats_shape = q.shape[:-1]
        out = q.new_empty((*stats_shape, v.shape[-1]))
        lse = q.new_empty(stats_shape)
        batch_index = flat_batch_index(tuple(q.shape[:-2]), q.device) if dropout_p > 0 else None
        inv_keep = 1.0 / (1.0 - dropout_p)
        for qs in range(0, l_q, block_q):
            qe = min(qs + block_q, l_q)
            q_tile = q[..., qs:qe, :] * scale
            m = q.new_full((*stats_shape[:-1], qe - qs), -math.inf)
            ell = q.new_zeros((*stats_shape[:-1], qe - qs))
            acc = q.new_zeros((*stats_shape[:-1], qe - qs, v.shape[-1]))
            for ks in range(0, l_k, block_k):
                if is_causal and ks > qe - 1:
                    break  # this tile and all after it lie above the diagonal
                ke = min(ks + block_k, l_k)
                s, masked = _tile_scores(q_tile, k[..., ks:ke, :], mask, is_causal, qs, qe, ks, ke)
                m_new = torch.maximum(m, s.amax(dim=-1))
                # rows with nothing allowed yet have m_new = -inf: shift them by 0 instead
                m_safe = m_new.masked_fill(m_new == -math.inf, 0.0) if masked else m_new
                p = s.sub_(m_safe.unsqueeze(-1)).exp_()  # the tile, in place: every exponent <= 0
                alpha = (m - m_safe).exp_()
                ell.mul_(alpha).add_(p.sum(dim=-1))
                if batch_index is not None:
                    keep = _keep_tile(seed, batch_index, qs, qe, ks, ke, l_q, l_k, dropout_p)
                    p.masked_fill_(~keep, 0.0).mul_(inv_keep)
                acc.mul_(alpha.unsqueeze(-1)).add_(p @ v[..., ks:ke, :])
                m = m_new
            empty = ell == 0  # fully masked rows: output 0, as PyTorch's math backend
            out[..., qs:qe, :] = acc / ell.masked_fill(empty, 1.0).unsqueeze(-1)
            m_final = m.masked_fill(m == -math.inf, 0.0)
            lse[..., qs:qe] = (m_final + torch.log(ell)).masked_fill(empty, math.inf)
        ctx.save_for_backward(q, k, v, out, lse, mask)
        ctx.is_causal, ctx.scale, ctx.dropout_p, ctx.seed = is_causal, scale, dropout_p, seed
        ctx.block_q, ctx.block_k = block_q, block_k
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dout: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, out, lse, mask = ctx.saved_tensors
        is_causal, scale, dropout_p, seed = ctx.is_causal, ctx.scale, ctx.dropout_p, ctx.seed
        block_q, block_k = ctx.block_q, ctx.block_k
        l_q, l_k = q.shape[-2], k.shape[-2]
        dout = dout.contiguous()
        d_rows = (dout * out).sum(dim=-1).unsqueeze(-1)  # D_i = sum_c dO_ic O_ic
        lse = lse.unsqueeze(-1)
        q_scaled = q * scale
        dq = torch.zeros_like(q)
        dk = torch.zeros_like(k)
        dv = torch.zeros_like(v)
        need_dmask = mask is not None and ctx.needs_input_grad[3]
        dmask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device) if need_dmask else None
        batch_index = flat_batch_index(tuple(q.shape[:-2]), q.device) if dropout_p > 0 else None
        inv_keep = 1.0 / (1.0 - dropout_p)
        for ks in range(0, l_k, block_k):
            ke = min(ks + block_k, l_k)
            k_tile, v_tile = k[..., ks:ke, :], v[..., ks:ke, :]
            k_scaled = k_tile * scale
            dk_acc = torch.zeros_like(k_tile)
            dv_acc = torch.zeros_like(v_tile)
            q_start = (ks // block_q) * block_q if is_causal else 0
            for qs in range(q_start, l_q, block_q):
                qe = min(qs + block_q, l_q)
                q_tile = q_scaled[..., qs:qe, :]
                s, _ = _tile_scores(q_tile, k_tile, mask, is_causal, qs, qe, ks, ke)
                p = s.sub_(lse[..., qs:qe, :]).exp_()  # P recomputed from the saved lse
                dout_tile = dout[..., qs:qe, :]
                dp = dout_tile @ v_tile.transpose(-2, -1)
                if batch_index is not None:
                    keep = _keep_tile(seed, batch_index, qs, qe, ks, ke, l_q, l_k, dropout_p)
                    p_dropped = p.masked_fill(~keep, 0.0).mul_(inv_keep)
                    dp.masked_fill_(~keep, 0.0).mul_(inv_keep)
                else:
                    p_dropped = p
                dv_acc += _sum_groups(p_dropped.transpose(-2, -1) @ dout_tile)
                ds = dp.sub_(d_rows[..., qs:qe, :]).mul_(p)  # dS = P o (dP - D)
                if dmask is not None:
                    dmask[..., qs:qe, ks:ke] = ds
                dq[..., qs:qe, :] += ds @ k_scaled
                dk_acc += _sum_groups(ds.transpose(-2, -1) @ q_tile)
            dk[..., ks:ke, :] = dk_acc
            dv[..., ks:ke, :] = dv_acc
        return dq, dk, dv, dmask, None, None, None, None, None, None


def tiled_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    block_size: int = 256,
    *,
    block_size_k: int | None = None,
    dropout_seed: int | None = None,
) -> Tensor:
    """Attention computed tile by tile with the online softmax; memory linear in sequence length.

    Same contract as `torch.nn.functional.scaled_dot_product_attention` (and as
    [`scaled_dot_product_attention`][fms_transformer.attention.scaled_dot_product_attention]):
    a boolean `attn_mask` is `True` where attention is allowed, a floating one is added to the
    scores; `is_causal` is top-left aligned; `H_q` may be a multiple of `H_kv` (GQA/MQA). Unlike
    PyTorch, `attn_mask` and `is_causal` may be combined (both restrictions apply). Rows with no
    allowed key return zeros.

    Args:
        q: Queries `(..., H_q, L_q, E)`.
        k: Keys `(..., H_kv, L_k, E)`.
        v: Values `(..., H_kv, L_k, E_v)`.
        attn_mask: Optional mask broadcastable to `(..., H_q, L_q, L_k)`. If a floating mask
            requires grad, its gradient is computed (and then needs a full-size buffer).
        is_causal: Apply the causal mask.
        scale: Score scale, default $1/\\sqrt{E}$.
        dropout_p: Dropout probability on the attention probabilities.
        block_size: Rows of a query tile (and of a key tile unless `block_size_k` is given).
        block_size_k: Rows of a key tile.
        dropout_seed: Seed of the counter-based dropout mask; drawn from torch's global generator
            when `None`. The same seed gives the same mask here and in the naive attention.

    Returns:
        `(..., H_q, L_q, E_v)`.
    """
    check_attention_inputs(q, k, v, attn_mask, dropout_p)
    block_k = block_size if block_size_k is None else block_size_k
    if block_size <= 0 or block_k <= 0:
        raise AttentionInputError(
            f"block sizes must be positive, got block_size={block_size}, block_size_k={block_k}"
        )
    h_q, h_kv = q.shape[-3], k.shape[-3]
    group = h_q // h_kv
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    seed = (draw_dropout_seed() if dropout_seed is None else dropout_seed) if dropout_p > 0 else 0
    dtype = q.dtype
    if dtype in _LOW_PRECISION:  # accumulate in float32, as the fused kernels do
        q, k, v = q.float(), k.float(), v.float()
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            attn_mask = attn_mask.float()
    q5: Tensor = q.unflatten(-3, (h_kv, group))  # type: ignore[no-untyped-call]
    k5, v5 = k.unsqueeze(-3), v.unsqueeze(-3)
    target = (*q.shape[:-1], k.shape[-2])
    mask5 = None if attn_mask is None else _group_mask(attn_mask, target, h_kv, group)
    out5: Tensor = TiledAttentionFunction.apply(
        q5, k5, v5, mask5, is_causal, scale, dropout_p, seed, block_size, block_k
    )
    return out5.flatten(-4, -3).to(dtype)
