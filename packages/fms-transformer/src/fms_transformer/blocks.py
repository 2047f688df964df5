"""Residual transformer blocks: encoder and decoder, pre-norm and post-norm.

A block is two (encoder) or three (decoder) residual sub-layers: self-attention,
cross-attention to the encoder's output (decoder only), and the feed-forward network.
Where the normalisation goes is the one real design choice:

- **Post-norm** (the original Transformer, BERT): $x \\leftarrow \\mathrm{Norm}(x + \\mathrm{Sub}(x))$.
  The residual stream is normalised after every sub-layer; gradients to early layers pass through
  every norm, which makes deep post-norm models need learning-rate warm-up (Xiong et al. 2020).
- **Pre-norm** (GPT-2 onward, Llama): $x \\leftarrow x + \\mathrm{Sub}(\\mathrm{Norm}(x))$. The
  identity path from input to output is untouched, so gradients flow freely and training is stable
  without warm-up; a final norm after the last block is then needed.

Configured as GPT-2: `DecoderBlock(d, h, 4*d, cross_attention=False, norm="layernorm",
ffn="gelu_tanh_mlp", bias=True)` with learned positions at the model level. As Llama:
`DecoderBlock(d, h, d_ff, n_kv_heads=h_kv, cross_attention=False, norm="rmsnorm",
ffn="swiglu", bias=False, positional="rope")`.

Sub-module names: `attn_norm`, `self_attn`, `cross_norm`, `cross_attn`, `ffn_norm`, `ffn`.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from fms_transformer.attention import Backend, MultiHeadAttention
from fms_transformer.ffn import MLP, SwiGLU
from fms_transformer.kv_cache import KVCache
from fms_transformer.norm import LayerNorm, RMSNorm
from fms_transformer.positional import RopeScaling, RopeStyle

__all__ = ["BlockError", "DecoderBlock", "EncoderBlock", "make_ffn", "make_norm"]

NormKind = Literal["layernorm", "rmsnorm"]
FFNKind = Literal["gelu_mlp", "gelu_tanh_mlp", "quick_gelu_mlp", "relu_mlp", "swiglu"]


class BlockError(ValueError):
    """An unknown norm or feed-forward kind."""


def make_norm(kind: NormKind, d: int, eps: float = 1e-5, bias: bool = True) -> nn.Module:
    """`LayerNorm(d, eps, bias)` for `"layernorm"`, `RMSNorm(d, eps)` for `"rmsnorm"`."""
    if kind == "layernorm":
        return LayerNorm(d, eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(d, eps)
    raise BlockError(f"norm must be 'layernorm' or 'rmsnorm', got {kind!r}")


def make_ffn(
    kind: FFNKind, d_model: int, d_ff: int, bias: bool = True, dropout: float = 0.0
) -> nn.Module:
    """The feed-forward network named by `kind`: an [`MLP`][fms_transformer.ffn.MLP] or a SwiGLU."""
    activations = {
        "gelu_mlp": "gelu",
        "gelu_tanh_mlp": "gelu_tanh",
        "quick_gelu_mlp": "quick_gelu",
        "relu_mlp": "relu",
    }
    if kind in activations:
        return MLP(d_model, d_ff, activations[kind], bias=bias, dropout=dropout)  # type: ignore[arg-type]
    if kind == "swiglu":
        return SwiGLU(d_model, d_ff, bias=bias, dropout=dropout)
    raise BlockError(
        "ffn must be one of 'gelu_mlp', 'gelu_tanh_mlp', 'quick_gelu_mlp', 'relu_mlp', 'swiglu', "
        f"got {kind!r}"
    )


class EncoderBlock(nn.Module):
    """Self-attention (bidirectional unless `is_causal`) and a feed-forward network, each residual.

    Args:
        d_model: Model width.
        n_heads: Query heads.
        d_ff: Hidden size of the feed-forward network.
        n_kv_heads: Key/value heads (GQA/MQA); default `n_heads`.
        dropout: Dropout on each sub-layer's output before the residual add, and inside the FFN.
        attn_dropout: Dropout on the attention probabilities (default `dropout`).
        norm: `"layernorm"` or `"rmsnorm"`.
        norm_eps: The norms' $\\epsilon$.
        norm_bias: LayerNorm with a bias.
        ffn: `"gelu_mlp"`, `"gelu_tanh_mlp"`, `"quick_gelu_mlp"`, `"relu_mlp"` or `"swiglu"`.
        norm_first: Pre-norm (True) or post-norm (False).
        bias: Default for `attn_bias`, `attn_out_bias` and `ffn_bias`.
        attn_bias: Biases on the q/k/v projections.
        attn_out_bias: Bias on the attention output projection.
        ffn_bias: Biases in the feed-forward network.
        positional: Attention-level positions: `"rope"`, `"alibi"` or `None`.
        rope_theta: RoPE base.
        rope_style: RoPE pairing convention.
        rope_scaling: RoPE context extension.
        head_dim: Per-head size (default `d_model // n_heads`).
        backend: Attention kernel: `"torch"`, `"naive"` or `"tiled"`.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        *,
        n_kv_heads: int | None = None,
        dropout: float = 0.0,
        attn_dropout: float | None = None,
        norm: NormKind = "layernorm",
        norm_eps: float = 1e-5,
        norm_bias: bool = True,
        ffn: FFNKind = "gelu_mlp",
        norm_first: bool = True,
        bias: bool = True,
        attn_bias: bool | None = None,
        attn_out_bias: bool | None = None,
        ffn_bias: bool | None = None,
        positional: Literal["rope", "alibi"] | None = None,
        rope_theta: float = 10000.0,
        rope_style: RopeStyle = "split_half",
        rope_scaling: RopeScaling | None = None,
        head_dim: int | None = None,
        backend: Backend = "torch",
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        attn_bias = bias if attn_bias is None else attn_bias
        self._attn_kwargs = {
            "n_kv_heads": n_kv_heads,
            "bias": attn_bias,
            "out_bias": bias if attn_out_bias is None else attn_out_bias,
            "dropout": dropout if attn_dropout is None else attn_dropout,
            "head_dim": head_dim,
            "backend": backend,
        }
        self.attn_norm = make_norm(norm, d_model, norm_eps, norm_bias)
        self.self_attn = MultiHeadAttention(
            d_model,
            n_heads,
            positional=positional,
            rope_theta=rope_theta,
            rope_style=rope_style,
            rope_scaling=rope_scaling,
            **self._attn_kwargs,  # type: ignore[arg-type]
        )
        self.ffn_norm = make_norm(norm, d_model, norm_eps, norm_bias)
        self.ffn = make_ffn(ffn, d_model, d_ff, bias if ffn_bias is None else ffn_bias, dropout)
        self.dropout = nn.Dropout(dropout)

    def _residual(self, x: Tensor, norm: nn.Module, sublayer: nn.Module, **kw: object) -> Tensor:
        if self.norm_first:
            out: Tensor = x + self.dropout(sublayer(norm(x), **kw))
            return out
        return norm(x + self.dropout(sublayer(x, **kw)))  # type: ignore[no-any-return]

    def forward(
        self,
        x: Tensor,
        *,
        mask: Tensor | None = None,
        is_causal: bool = False,
        positions: Tensor | None = None,
    ) -> Tensor:
        """`(batch, seq, d_model)` -> `(batch, seq, d_model)`; `mask` as in `MultiHeadAttention`."""
        x = self._residual(
            x, self.attn_norm, self.self_attn, mask=mask, is_causal=is_causal, positions=positions
        )
        return self._residual(x, self.ffn_norm, self.ffn)


class DecoderBlock(EncoderBlock):
    """Causal self-attention, optional cross-attention to a memory, and a feed-forward network.

    With `cross_attention=False` this is the decoder-only (GPT/Llama) block. Takes every argument
    of [`EncoderBlock`][fms_transformer.blocks.EncoderBlock], plus:

    Args:
        d_model: Model width.
        n_heads: Query heads.
        d_ff: Hidden size of the feed-forward network.
        cross_attention: Add the cross-attention sub-layer (encoder-decoder models).
        memory_dim: Width of the memory (default `d_model`).
        **kwargs: The keyword arguments of `EncoderBlock`.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        *,
        cross_attention: bool = True,
        memory_dim: int | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(d_model, n_heads, d_ff, **kwargs)  # type: ignore[arg-type]
        self.cross_norm: nn.Module | None = None
        self.cross_attn: MultiHeadAttention | None = None
        if cross_attention:
            norm = kwargs.get("norm", "layernorm")
            eps = kwargs.get("norm_eps", 1e-5)
            nb = kwargs.get("norm_bias", True)
            self.cross_norm = make_norm(norm, d_model, eps, nb)  # type: ignore[arg-type]
            self.cross_attn = MultiHeadAttention(
                d_model,
                n_heads,
                kv_dim=memory_dim,
                **self._attn_kwargs,  # type: ignore[arg-type]
            )

    def forward(
        self,
        x: Tensor,
        *,
        memory: Tensor | None = None,
        mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        is_causal: bool = True,
        kv_cache: KVCache | None = None,
        cross_kv_cache: KVCache | None = None,
        layer_idx: int = 0,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Run the block on `x` `(batch, L, d_model)`.

        Args:
            x: Decoder stream.
            memory: Encoder output `(batch, L_src, memory_dim)`; required iff cross-attention.
            mask: Self-attention mask (True = attend), combined with the causal mask.
            memory_mask: Cross-attention mask, e.g. source padding `(batch, 1, 1, L_src)`.
            is_causal: Causal self-attention (default True).
            kv_cache: Self-attention cache for incremental decoding.
            cross_kv_cache: Cache of the memory's keys/values (computed on first use).
            layer_idx: This block's index in the caches.
            positions: Positions of the tokens of `x` for RoPE.

        Returns:
            `(batch, L, d_model)`.
        """
        x = self._residual(
            x,
            self.attn_norm,
            self.self_attn,
            mask=mask,
            is_causal=is_causal,
            kv_cache=kv_cache,
            layer_idx=layer_idx,
            positions=positions,
        )
        if self.cross_attn is not None and self.cross_norm is not None:
            if memory is None and (
                cross_kv_cache is None or cross_kv_cache.layer(layer_idx) is None
            ):
                raise BlockError(
                    "this DecoderBlock has cross-attention: pass memory=(batch, L_src, d)"
                )
            x = self._residual(
                x,
                self.cross_norm,
                self.cross_attn,
                key_value=memory if memory is not None else x[:, :0],
                mask=memory_mask,
                kv_cache=cross_kv_cache,
                layer_idx=layer_idx,
            )
        elif memory is not None:
            raise BlockError("memory was given but this DecoderBlock has no cross-attention")
        return self._residual(x, self.ffn_norm, self.ffn)
