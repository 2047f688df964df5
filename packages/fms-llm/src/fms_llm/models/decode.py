r"""Incremental decoding as plain functions: the network of [fms_llm.models.gpt][], one step at a
time, without `nn.Module` dispatch.

Decoding one token through a small model is not arithmetic-bound: each matrix multiply reads a
weight matrix for one row of input, and around it every `nn.Module` call, every attention
`forward` with its checks and mask logic, every Python frame costs a few microseconds. At width
256 and 6 layers that dispatch was about a quarter of a Llama step (2.1 ms through the modules,
1.6 ms as functions, best of 7 x 300 steps; end to end, `benchmarks/bench_generate.py` measured
1.37x transformers' `generate` before and 1.86x after). So [generate][fms_llm.generate.generate]
runs the decoding steps through [DecodePlan][fms_llm.models.decode.DecodePlan]: the same
weights, taken out of the modules once per call, and the same operations in the same order,
written out as `torch.nn.functional` calls. It serves the models [GPT][fms_llm.models.GPT] builds
with `fused=True` and no dropout: GPT-2 (LayerNorm, learned positions, GELU-tanh MLP, biases) and
Llama (RMSNorm, RoPE from the shared table, SwiGLU, grouped-query attention).

It gives the module path's logits exactly (tested bit for bit), and it steps aside, returning
`None` from [DecodePlan.build][fms_llm.models.decode.DecodePlan.build], whenever it could not:
gradients enabled, a module replaced by another type (an adapter, say), a forward hook or
pre-hook registered anywhere (a hook must see its call), or a variant it does not spell out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as _module

from fms_llm.models.fused import rms_norm
from fms_llm.models.gpt import (
    GPT,
    _FusedLayerNorm,
    _FusedRMSNorm,
    _FusedSelfAttention,
    _FusedSwiGLU,
    _gelu_tanh,
    _LeanDecoderBlock,
    _RotaryTable,
)
from fms_transformer.ffn import MLP
from fms_transformer.kv_cache import KVCache

__all__ = ["DecodePlan"]

_Norm = Callable[[Tensor], Tensor]


def _norm(module: nn.Module) -> _Norm | None:
    if type(module) is _FusedLayerNorm:
        shape, w, b, eps = (module.d,), module.weight, module.bias, module.eps
        return lambda x: F.layer_norm(x, shape, w, b, eps)
    if type(module) is _FusedRMSNorm:
        w, eps = module.weight, module.eps
        return lambda x: rms_norm(x, w, eps)
    return None


def _no_op(module: nn.Module) -> bool:
    """A dropout that does nothing (the fused path swaps `p = 0` dropouts for `nn.Identity`)."""
    return isinstance(module, nn.Identity) or (isinstance(module, nn.Dropout) and module.p == 0)


def _linear(module: nn.Module) -> tuple[Tensor, Tensor | None] | None:
    return (module.weight, module.bias) if type(module) is nn.Linear else None


@dataclass
class _Layer:
    norm1: _Norm
    q: tuple[Tensor, Tensor | None]
    k: tuple[Tensor, Tensor | None]
    v: tuple[Tensor, Tensor | None]
    o: tuple[Tensor, Tensor | None]
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope: _RotaryTable | None
    norm2: _Norm
    ffn: Callable[[Tensor], Tensor]


def _ffn(module: nn.Module) -> Callable[[Tensor], Tensor] | None:
    if type(module) is _FusedSwiGLU and _no_op(module.dropout):
        g, u, d = _linear(module.gate_proj), _linear(module.up_proj), _linear(module.down_proj)
        if g is None or u is None or d is None:
            return None
        return lambda x: F.linear(F.silu(F.linear(x, *g)) * F.linear(x, *u), *d)
    if type(module) is MLP and module.act is _gelu_tanh and _no_op(module.dropout):
        up, down = _linear(module.up_proj), _linear(module.down_proj)
        if up is None or down is None:
            return None
        return lambda x: F.linear(F.gelu(F.linear(x, *up), approximate="tanh"), *down)
    return None


def _hooked(model: nn.Module) -> bool:
    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@dataclass
class DecodePlan:
    """A [GPT][fms_llm.models.GPT]'s weights, ready for [step][fms_llm.models.decode.DecodePlan.step].

    Build it with [build][fms_llm.models.decode.DecodePlan.build]; it holds the model's own
    parameter tensors (no copies), so it sees in-place updates of the weights, not replaced
    modules: build a new plan after changing the model's structure.
    """

    model: GPT
    tok_emb: Tensor
    pos_emb: Tensor | None
    layers: list[_Layer]
    norm_f: _Norm
    head: Tensor

    @classmethod
    def build(cls, model: nn.Module) -> DecodePlan | None:
        """The plan for `model`, or `None` if the function path cannot stand in for it."""
        if not isinstance(model, GPT) or torch.is_grad_enabled() or _hooked(model):
            return None
        layers = []
        for block in model.blocks:
            if type(block) is not _LeanDecoderBlock:
                return None
            attn = block.self_attn
            rope = getattr(attn, "rope", None)
            if rope is not None and not (
                type(attn) is _FusedSelfAttention and isinstance(rope, _RotaryTable) and rope.fast
            ):
                return None
            if getattr(attn, "positional", None) == "alibi" or attn.record_attention:
                return None
            norm1, norm2, ffn = _norm(block.attn_norm), _norm(block.ffn_norm), _ffn(block.ffn)
            q, k, v, o = (
                _linear(getattr(attn, n)) for n in ("q_proj", "k_proj", "v_proj", "out_proj")
            )
            if (
                norm1 is None or norm2 is None or ffn is None or attn.backend != "torch"
                or q is None or k is None or v is None or o is None
            ):  # fmt: skip
                return None
            heads = (attn.n_heads, attn.n_kv_heads, attn.head_dim)
            layers.append(_Layer(norm1, q, k, v, o, *heads, rope, norm2, ffn))
        norm_f, head = _norm(model.norm_f), _linear(model.lm_head)
        if norm_f is None or head is None or head[1] is not None or not _no_op(model.drop):
            return None
        pos = model.pos_emb.weight if model.pos_emb is not None else None
        return cls(model, model.tok_emb.weight, pos, layers, norm_f, head[0])

    def step(self, idx: Tensor, cache: KVCache) -> Tensor:
        """Logits of `idx` `(batch, new)` after the tokens in `cache`, which it extends; the same
        values as `model(idx, kv_cache=cache)`.

        New tokens after a non-empty cache must come one at a time (several would need an
        offset causal mask; the model's own forward handles that case).
        """
        offset = cache.seq_len(0)
        b, s = idx.shape
        if offset and s > 1:
            return self.model(idx, kv_cache=cache)  # type: ignore[no-any-return]
        x = F.embedding(idx, self.tok_emb)
        if self.pos_emb is not None:
            x = x + self.pos_emb[offset : offset + s]
        for i, layer in enumerate(self.layers):
            h = layer.norm1(x)
            q = F.linear(h, *layer.q).view(b, s, layer.n_heads, layer.head_dim)
            k = F.linear(h, *layer.k).view(b, s, layer.n_kv_heads, layer.head_dim)
            v = F.linear(h, *layer.v).view(b, s, layer.n_kv_heads, layer.head_dim)
            if layer.rope is not None:
                q, k = layer.rope.rotate_at(q, offset), layer.rope.rotate_at(k, offset)
            k_all, v_all = cache.append(i, k.transpose(1, 2), v.transpose(1, 2))
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k_all, v_all, is_causal=s > 1,
                enable_gqa=layer.n_kv_heads != layer.n_heads,
            )  # fmt: skip
            x = x + F.linear(out.transpose(1, 2).flatten(-2), *layer.o)
            x = x + layer.ffn(layer.norm2(x))
        return F.linear(self.norm_f(x), self.head)
