r"""One forward pass over the new tokens of many sequences at once, reading and writing a paged
cache.

Continuous batching feeds the model a different mix at every step: one token for each sequence
that is decoding, a chunk of its prompt for each sequence being admitted (*prefill*), several
draft tokens for each sequence under speculative decoding. [PagedModel][fms_llm.inference.runner.PagedModel]
takes all of them as one *packed* row of $N = \sum_i n_i$ tokens:

- every matrix multiply (projections, feed-forward, head) runs once over the $N$ rows, so its
  weights are read from memory once per step for all sequences (the point of batching: decoding
  one token reads every weight to do two FLOPs per weight, so a step costs about the same whether
  it serves one row or thirty);
- positions are per token ($t = s_i .. s_i + n_i - 1$ for sequence $i$ starting at $s_i$), so
  learned position rows and RoPE angles are looked up per token;
- each layer writes the new keys and values to their slots in the pool
  ([PagedKVCache][fms_llm.inference.paged.PagedKVCache]), then attention gathers each sequence's
  keys and values by its block table. Sequences decoding one token are attended together, padded
  to the longest context with a mask; a sequence with several new tokens is attended on its own
  with the causal mask shifted by its context, $j \le s_i + r$ for its new token $r$.

A fused paged-attention kernel (vLLM's) reads the blocks in place; here the gather makes a
contiguous copy per layer and step, and `torch.nn.functional.scaled_dot_product_attention` does
the rest. The values are those of the model's own forward with a contiguous cache, up to
floating-point summation order (tested to 1e-5, and greedy tokens equal).

Inference only: no dropout, no gradients. The model's modules are called as they are, so a
model whose linear layers were swapped for other modules of the same shapes runs unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fms_llm.inference.paged import PagedKVCache, slots_for
from fms_llm.models.gpt import GPT, _RotaryTable
from fms_transformer.attention import MultiHeadAttention
from fms_transformer.blocks import DecoderBlock

__all__ = ["Chunk", "PagedModel"]


@dataclass
class Chunk:
    """New tokens of one sequence for a [PagedModel.forward][fms_llm.inference.runner.PagedModel.forward].

    Attributes:
        tokens: The tokens to feed.
        start: Position of the first of them (the tokens before it are in the cache).
        table: The sequence's block table, with room for `start + len(tokens)` positions.
        n_logits: Return the logits of the last `n_logits` of the new tokens (0: none).
    """

    tokens: Sequence[int]
    start: int
    table: Sequence[int]
    n_logits: int = 1


class PagedModel:
    """A [GPT][fms_llm.models.GPT] (GPT-2 or Llama) run over a [PagedKVCache][fms_llm.inference.paged.PagedKVCache].

    Args:
        model: A decoder-only model of [fms_llm.models][] (pre-norm blocks, learned or rotary
            positions); its weights are used as they are, not copied.
        num_blocks: Blocks in the cache pool.
        block_size: Positions per block.

    Raises:
        ValueError: a model this runner does not spell out (post-norm, ALiBi, cross-attention).
    """

    def __init__(self, model: nn.Module, num_blocks: int, block_size: int) -> None:
        if not isinstance(model, GPT):
            raise ValueError(
                f"model must be an fms_llm.models.GPT or Llama, got {type(model).__name__}"
            )
        for i, block in enumerate(model.blocks):
            attn = block.self_attn
            if not isinstance(block, DecoderBlock) or not block.norm_first:
                raise ValueError(f"block {i} is not a pre-norm decoder block")
            if getattr(block, "cross_attn", None) is not None:
                raise ValueError(f"block {i} has cross-attention, which a language model has not")
            if not isinstance(attn, MultiHeadAttention) or attn.positional == "alibi":
                raise ValueError(f"block {i}: only learned or rotary positions are supported")
        self.model = model
        first = cast(DecoderBlock, model.blocks[0]).self_attn
        param = next(model.parameters())
        self.device, self.dtype = param.device, _activation_dtype(model)
        self.n_kv_heads, self.head_dim = first.n_kv_heads, first.head_dim
        self.block_size = block_size
        self.cache = PagedKVCache(
            model.n_layers, self.n_kv_heads, self.head_dim, num_blocks, block_size,
            dtype=self.dtype, device=self.device,
        )  # fmt: skip

    @torch.inference_mode()
    def forward(self, chunks: Sequence[Chunk]) -> list[Tensor]:
        """Feed every chunk's tokens, store their keys and values, and return each chunk's
        requested logits `(n_logits, vocab)` (float32)."""
        m, bs = self.model, self.block_size
        dev = self.device
        n_new = [len(c.tokens) for c in chunks]
        if not chunks or min(n_new) < 1:
            raise ValueError("every chunk needs at least one token")
        tokens = torch.tensor([t for c in chunks for t in c.tokens], dtype=torch.long, device=dev)
        pos_list = [p for c in chunks for p in range(c.start, c.start + len(c.tokens))]
        if max(pos_list) >= m.max_seq_len:
            raise ValueError(f"position {max(pos_list)} exceeds max_seq_len={m.max_seq_len}")
        positions = torch.tensor(pos_list, dtype=torch.long, device=dev)
        write_slots = torch.tensor(
            [s for c in chunks for s in slots_for(c.table, c.start, c.start + len(c.tokens), bs)],
            dtype=torch.long, device=dev,
        )  # fmt: skip
        plan = _AttentionPlan(chunks, n_new, bs, dev)

        x = m.tok_emb(tokens)[None]  # (1, N, d)
        if m.pos_emb is not None:
            x = x + m.pos_emb.weight[positions]
        n = x.shape[1]
        # the rotary angles of this step's positions, looked up once for every layer
        tables = _rope_tables(m, positions)
        for i, module in enumerate(m.blocks):
            block = cast(DecoderBlock, module)
            attn = block.self_attn
            h = block.attn_norm(x)
            q = attn.q_proj(h).view(n, attn.n_heads, attn.head_dim)  # (N, H, D)
            k = attn.k_proj(h).view(n, attn.n_kv_heads, attn.head_dim)
            v = attn.v_proj(h).view(n, attn.n_kv_heads, attn.head_dim)
            if tables is not None:  # x cos + rotate_half(x) sin, as _RotaryTable.rotate_at
                cos, sin = tables
                half = attn.head_dim // 2
                q = torch.addcmul(q * cos, q.roll(half, -1), sin)
                k = torch.addcmul(k * cos, k.roll(half, -1), sin)
            elif attn.rope is not None:
                q = attn.rope(q.transpose(0, 1), positions).transpose(0, 1)
                k = attn.rope(k.transpose(0, 1), positions).transpose(0, 1)
            self.cache.write(i, write_slots, k, v)
            gqa = attn.n_heads != attn.n_kv_heads
            out = plan.attend(self.cache, i, q.transpose(0, 1), gqa)  # (N, H*D)
            x = x + attn.out_proj(out[None])
            x = x + block.ffn(block.ffn_norm(x))
        want = [
            j
            for c, end in zip(chunks, plan.ends, strict=True)
            for j in range(end - c.n_logits, end)
        ]
        if not want:
            return [torch.empty(0, m.config.vocab_size) for _ in chunks]
        logits = m.lm_head(m.norm_f(x[0, want])).float()
        out_list, at = [], 0
        for c in chunks:
            out_list.append(logits[at : at + c.n_logits])
            at += c.n_logits
        return out_list


def _rope_tables(model: GPT, positions: Tensor) -> tuple[Tensor, Tensor] | None:
    """`cos` and signed `sin` `(N, 1, head_dim)` at `positions` when every layer shares one
    precomputed split-half rotary table (our GPT/Llama's), else `None` (each layer's own rope
    is called)."""
    ropes = {id(cast(DecoderBlock, b).self_attn.rope) for b in model.blocks}
    rope = cast(DecoderBlock, model.blocks[0]).self_attn.rope
    if len(ropes) != 1 or not isinstance(rope, _RotaryTable) or not rope.fast:
        return None
    dtype = _activation_dtype(model)
    return rope.cos_table[positions].to(dtype), rope.signed_sin_table[positions].to(dtype)


def _activation_dtype(model: nn.Module) -> torch.dtype:
    """The dtype activations flow in: the token embedding's (quantised linears keep float
    embeddings)."""
    return cast(nn.Embedding, model.tok_emb).weight.dtype


class _AttentionPlan:
    """The index tensors of one step's attention, built once and shared by every layer."""

    def __init__(self, chunks: Sequence[Chunk], n_new: list[int], bs: int, dev: torch.device):
        self.ends: list[int] = []
        at = 0
        for n in n_new:
            at += n
            self.ends.append(at)
        self.total = at
        # sequences decoding a single token: one padded, masked attention call for all of them
        single = [i for i, n in enumerate(n_new) if n == 1]
        self.single_rows = torch.tensor([self.ends[i] - 1 for i in single], device=dev)
        self.single_slots: Tensor | None = None
        if single:
            lengths = [chunks[i].start + 1 for i in single]
            width = max(lengths)
            rows = [
                slots_for(chunks[i].table, 0, ln, bs) + [0] * (width - ln)
                for i, ln in zip(single, lengths, strict=True)
            ]
            self.single_slots = torch.tensor(rows, dtype=torch.long, device=dev)
            lens = torch.tensor(lengths, device=dev)
            self.single_mask = (torch.arange(width, device=dev)[None] < lens[:, None])[
                :, None, None
            ]
        # sequences with several new tokens: each on its own, causal from its start
        self.multi: list[tuple[int, int, Tensor, Tensor | None]] = []
        for i, n in enumerate(n_new):
            if n == 1:
                continue
            c = chunks[i]
            length = c.start + n
            slots = torch.tensor(slots_for(c.table, 0, length, bs), dtype=torch.long, device=dev)
            mask = None
            if c.start:
                mask = torch.arange(length, device=dev)[None] <= (
                    c.start + torch.arange(n, device=dev)[:, None]
                )
            self.multi.append((self.ends[i] - n, self.ends[i], slots, mask))

    def attend(self, cache: PagedKVCache, layer: int, q: Tensor, gqa: bool) -> Tensor:
        """Attention output `(N, n_heads * head_dim)` of the packed queries `q`
        `(n_heads, N, head_dim)`."""
        h, _, d = q.shape
        out = q.new_empty(self.total, h, d)
        if self.single_slots is not None:
            k, v = cache.gather(layer, self.single_slots)  # (B, Hkv, L, D)
            qs = q[:, self.single_rows].transpose(0, 1)[:, :, None]  # (B, H, 1, D)
            o = F.scaled_dot_product_attention(qs, k, v, attn_mask=self.single_mask, enable_gqa=gqa)
            out[self.single_rows] = o[:, :, 0]
        for lo, hi, slots, mask in self.multi:
            k, v = cache.gather(layer, slots[None])
            o = F.scaled_dot_product_attention(
                q[None, :, lo:hi], k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=gqa
            )
            out[lo:hi] = o[0].transpose(0, 1)
        return out.flatten(-2)
