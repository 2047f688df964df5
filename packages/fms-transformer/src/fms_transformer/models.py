"""Transformer models: Encoder, Decoder, EncoderDecoder, and a decoder-only language model.

[`Encoder`][fms_transformer.models.Encoder], [`Decoder`][fms_transformer.models.Decoder] and
[`EncoderDecoder`][fms_transformer.models.EncoderDecoder] work on embeddings
`(batch, seq, d_model)`, exactly like `torch.nn.Transformer` (whose weights they can take: see the
tests); [`TransformerLM`][fms_transformer.models.TransformerLM] adds the token embedding, a choice
of positional scheme and the output head, and is what the toy tasks and the
length-generalisation experiment train.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from fms_transformer.blocks import DecoderBlock, EncoderBlock, make_norm
from fms_transformer.kv_cache import KVCache
from fms_transformer.positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding

__all__ = ["Decoder", "Encoder", "EncoderDecoder", "ModelError", "PositionalKind", "TransformerLM"]

PositionalKind = Literal["none", "sinusoidal", "learned", "rope", "alibi"]


class ModelError(ValueError):
    """Bad model configuration or input of the wrong shape."""


def _final_norm(
    final_norm: bool | None, block_kwargs: dict[str, Any], d_model: int
) -> nn.Module | None:
    use = block_kwargs.get("norm_first", True) if final_norm is None else final_norm
    if not use:
        return None
    return make_norm(
        block_kwargs.get("norm", "layernorm"),
        d_model,
        block_kwargs.get("norm_eps", 1e-5),
        block_kwargs.get("norm_bias", True),
    )


class Encoder(nn.Module):
    """A stack of [`EncoderBlock`][fms_transformer.blocks.EncoderBlock]s and an optional final norm.

    Args:
        n_layers: Number of blocks.
        d_model: Model width.
        n_heads: Attention heads.
        d_ff: Feed-forward hidden size.
        final_norm: Normalise the output (default: when pre-norm, where it is needed;
            `torch.nn.Transformer` always has one).
        **block_kwargs: Passed to every block (norm, ffn, norm_first, dropout, positional...).
    """

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        n_heads: int,
        d_ff: int,
        *,
        final_norm: bool | None = None,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        if n_layers <= 0:
            raise ModelError(f"n_layers must be positive, got {n_layers}")
        self.layers = nn.ModuleList(
            EncoderBlock(d_model, n_heads, d_ff, **block_kwargs) for _ in range(n_layers)
        )
        self.norm = _final_norm(final_norm, block_kwargs, d_model)

    def forward(
        self, x: Tensor, *, mask: Tensor | None = None, positions: Tensor | None = None
    ) -> Tensor:
        """`(batch, L, d_model)` -> `(batch, L, d_model)`; `mask`, e.g. padding `(batch, 1, 1, L)`."""
        for layer in self.layers:
            x = layer(x, mask=mask, positions=positions)
        return x if self.norm is None else self.norm(x)


class Decoder(nn.Module):
    """A stack of [`DecoderBlock`][fms_transformer.blocks.DecoderBlock]s and an optional final norm.

    Args:
        n_layers: Number of blocks.
        d_model: Model width.
        n_heads: Attention heads.
        d_ff: Feed-forward hidden size.
        cross_attention: Blocks attend to an encoder memory (False: decoder-only).
        final_norm: As in [`Encoder`][fms_transformer.models.Encoder].
        **block_kwargs: Passed to every block.
    """

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        n_heads: int,
        d_ff: int,
        *,
        cross_attention: bool = True,
        final_norm: bool | None = None,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        if n_layers <= 0:
            raise ModelError(f"n_layers must be positive, got {n_layers}")
        self.layers = nn.ModuleList(
            DecoderBlock(d_model, n_heads, d_ff, cross_attention=cross_attention, **block_kwargs)
            for _ in range(n_layers)
        )
        self.norm = _final_norm(final_norm, block_kwargs, d_model)

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
        positions: Tensor | None = None,
    ) -> Tensor:
        """Run every block; the caches hold one layer per block (see `DecoderBlock.forward`)."""
        for i, layer in enumerate(self.layers):
            x = layer(
                x,
                memory=memory,
                mask=mask,
                memory_mask=memory_mask,
                is_causal=is_causal,
                kv_cache=kv_cache,
                cross_kv_cache=cross_kv_cache,
                layer_idx=i,
                positions=positions,
            )
        return x if self.norm is None else self.norm(x)


class EncoderDecoder(nn.Module):
    """The encoder-decoder Transformer of Vaswani et al. (2017), on embeddings.

    Same computation as `torch.nn.Transformer(..., batch_first=True)` when configured alike
    (`ffn="relu_mlp"`, `final_norm=True`); its defaults are `d_model=512, n_heads=8`, six layers
    each side and `d_ff=2048`.

    Args:
        d_model: Model width.
        n_heads: Attention heads.
        n_encoder_layers: Encoder depth.
        n_decoder_layers: Decoder depth.
        d_ff: Feed-forward hidden size.
        final_norm: Final norms of encoder and decoder (default: when pre-norm).
        **block_kwargs: Passed to every block of both stacks.
    """

    def __init__(
        self,
        d_model: int = 512,
        n_heads: int = 8,
        n_encoder_layers: int = 6,
        n_decoder_layers: int = 6,
        d_ff: int = 2048,
        *,
        final_norm: bool | None = None,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        self.encoder = Encoder(
            n_encoder_layers, d_model, n_heads, d_ff, final_norm=final_norm, **block_kwargs
        )
        self.decoder = Decoder(
            n_decoder_layers, d_model, n_heads, d_ff, final_norm=final_norm, **block_kwargs
        )

    def encode(self, src: Tensor, *, src_mask: Tensor | None = None) -> Tensor:
        """Encoder memory `(batch, L_src, d_model)`."""
        return self.encoder(src, mask=src_mask)  # type: ignore[no-any-return]

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        *,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_is_causal: bool = True,
        kv_cache: KVCache | None = None,
        cross_kv_cache: KVCache | None = None,
    ) -> Tensor:
        """Decoder output `(batch, L_tgt, d_model)` given the encoder memory."""
        return self.decoder(  # type: ignore[no-any-return]
            tgt,
            memory=memory,
            mask=tgt_mask,
            memory_mask=memory_mask,
            is_causal=tgt_is_causal,
            kv_cache=kv_cache,
            cross_kv_cache=cross_kv_cache,
        )

    def forward(
        self,
        src: Tensor,
        tgt: Tensor,
        *,
        src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_is_causal: bool = True,
    ) -> Tensor:
        """`src` `(batch, L_src, d)`, `tgt` `(batch, L_tgt, d)` -> `(batch, L_tgt, d)`.

        Masks use the fms convention (True = attend); `src_mask` applies to encoder
        self-attention, `memory_mask` to cross-attention (e.g. source padding
        `(batch, 1, 1, L_src)`), `tgt_mask` to decoder self-attention together with the causal mask.
        """
        memory = self.encode(src, src_mask=src_mask)
        return self.decode(
            tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask, tgt_is_causal=tgt_is_causal
        )


class TransformerLM(nn.Module):
    """A decoder-only language model: embeddings, positions, `Decoder`, tied output head.

    $$\\text{logits} = \\mathrm{Norm}(\\mathrm{Blocks}(E[x] + P)) E^\\top$$

    Args:
        vocab_size: Number of token ids.
        d_model: Model width.
        n_layers: Number of blocks.
        n_heads: Attention heads.
        d_ff: Feed-forward hidden size (default `4 * d_model`).
        positional: `"none"`, `"sinusoidal"`, `"learned"` (added to the embeddings), `"rope"` or
            `"alibi"` (inside attention).
        max_len: Size of the learned position table (only for `"learned"`).
        tie_weights: Share the embedding matrix with the output head.
        **block_kwargs: Passed to every block (norm, ffn, norm_first, dropout, backend...).
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        d_ff: int | None = None,
        *,
        positional: PositionalKind = "learned",
        max_len: int = 1024,
        tie_weights: bool = True,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        if positional not in ("none", "sinusoidal", "learned", "rope", "alibi"):
            raise ModelError(
                f"positional must be one of none, sinusoidal, learned, rope, alibi; got "
                f"{positional!r}"
            )
        self.vocab_size, self.positional = vocab_size, positional
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos: nn.Module | None = None
        if positional == "learned":
            self.pos = LearnedPositionalEmbedding(max_len, d_model)
        elif positional == "sinusoidal":
            self.pos = SinusoidalPositionalEncoding(d_model)
        attn_positional = positional if positional in ("rope", "alibi") else None
        self.decoder = Decoder(
            n_layers,
            d_model,
            n_heads,
            4 * d_model if d_ff is None else d_ff,
            cross_attention=False,
            final_norm=True,
            positional=attn_positional,
            **block_kwargs,
        )
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_weights:
            self.head.weight = self.embed.weight

    def forward(self, tokens: Tensor, *, kv_cache: KVCache | None = None) -> Tensor:
        """Token ids `(batch, seq)` -> logits `(batch, seq, vocab_size)` (causal)."""
        if tokens.ndim != 2:
            raise ModelError(f"tokens must be (batch, seq), got shape {tuple(tokens.shape)}")
        offset = 0 if kv_cache is None else kv_cache.offset
        x = self.embed(tokens)
        if self.pos is not None:
            positions = torch.arange(offset, offset + tokens.shape[1], device=tokens.device)
            x = x + self.pos(positions).to(x.dtype)
        return self.head(self.decoder(x, kv_cache=kv_cache))  # type: ignore[no-any-return]

    @torch.no_grad()
    def generate(self, prompt: Tensor, max_new_tokens: int) -> Tensor:
        """Greedy decoding with a KV cache: `(batch, L)` -> `(batch, L + max_new_tokens)`."""
        cache = KVCache(len(self.decoder.layers), max_len=prompt.shape[1] + max_new_tokens)
        out = prompt
        logits = self(prompt, kv_cache=cache)
        for _ in range(max_new_tokens):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out = torch.cat((out, nxt), dim=1)
            logits = self(nxt, kv_cache=cache)
        return out
