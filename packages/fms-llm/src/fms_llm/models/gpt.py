r"""GPT-2 and Llama: one decoder-only language model, two configs.

Read top-down: the configs, then the model (embeddings, a stack of
[fms_transformer.blocks.DecoderBlock][], a final norm, the language-model head), its
initialisation, parameter and FLOP counts, and the Hugging Face round trip.

A decoder-only language model maps tokens $x_1..x_T$ to next-token distributions

$$p_\theta(x_{t+1} \mid x_{\le t}) = \mathrm{softmax}(W_{out}\, h^{(L)}_t), \qquad
  h^{(\ell)} = \mathrm{Block}_\ell(h^{(\ell-1)}), \quad h^{(0)}_t = E[x_t] (+ P[t]),$$

each block being pre-norm causal self-attention then a feed-forward network, each residual:
$h \leftarrow h + \mathrm{Attn}(\mathrm{Norm}(h))$, $h \leftarrow h + \mathrm{FFN}(\mathrm{Norm}(h))$.

The two families differ only in their parts (as in litgpt, one class serves both):

| part | GPT-2 (Radford et al., 2019) | Llama (Touvron et al., 2023) |
| --- | --- | --- |
| positions | learned table $P$ added to the input | rotary (RoPE, split-half) in attention |
| norm | LayerNorm with bias | RMSNorm |
| FFN | GELU (tanh) MLP, $4d$ hidden, biases | SwiGLU, about $\tfrac83 d$ hidden, no bias |
| attention | multi-head, biases | grouped-query ($H_{kv} \le H$), no bias |
| head | tied to the token embedding | its own matrix |

Weights load from and save to the exact key layout of Hugging Face's `GPT2LMHeadModel` and
`LlamaForCausalLM` ([fms_llm.models.hf][]), so a model moves both ways between fms-llm and
transformers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fms_llm.models import cpu_kernels
from fms_llm.models.fused import linear_cross_entropy, quick_gelu, rms_norm
from fms_transformer.attention import MultiHeadAttention
from fms_transformer.blocks import DecoderBlock, make_norm
from fms_transformer.ffn import MLP, SwiGLU
from fms_transformer.init import init_gpt2_
from fms_transformer.kv_cache import KVCache
from fms_transformer.norm import LayerNorm, RMSNorm
from fms_transformer.positional import LearnedPositionalEmbedding, RotaryEmbedding

__all__ = [
    "GPT",
    "GPTConfig",
    "Llama",
    "LlamaConfig",
    "ModelConfig",
    "ModelConfigError",
    "document_mask",
    "use_fused_kernels",
]


class ModelConfigError(ValueError):
    """An impossible model configuration (the message names the field and the value)."""


# --------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    r"""The shape and parts of a decoder-only language model.

    Args:
        vocab_size: Number of token ids.
        n_layers: Number of blocks $L$.
        d_model: Residual-stream width $d$.
        n_heads: Query heads $H$.
        n_kv_heads: Key/value heads $H_{kv}$ (`None`: $H$); must divide $H$.
        d_ff: Feed-forward hidden size (`None`: the family's default).
        max_seq_len: Longest context (size of the learned position table for GPT-2).
        norm: `"layernorm"` or `"rmsnorm"`.
        norm_eps: The norms' $\epsilon$.
        ffn: `"gelu_tanh_mlp"`, `"gelu_mlp"` or `"swiglu"`.
        positional: `"learned"` (added to the input) or `"rope"` (in attention).
        rope_theta: RoPE base.
        bias: Biases in the attention and feed-forward linear layers.
        tie_embeddings: The head reuses the token-embedding matrix.
        dropout: Dropout on embeddings, attention probabilities and residual branches.
        init_std: Standard deviation of the normal initialisation.
    """

    family: ClassVar[str] = "custom"

    vocab_size: int = 50257
    n_layers: int = 12
    d_model: int = 768
    n_heads: int = 12
    n_kv_heads: int | None = None
    d_ff: int | None = None
    max_seq_len: int = 1024
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    norm_eps: float = 1e-5
    ffn: Literal["gelu_tanh_mlp", "gelu_mlp", "swiglu"] = "gelu_tanh_mlp"
    positional: Literal["learned", "rope"] = "learned"
    rope_theta: float = 10000.0
    bias: bool = True
    tie_embeddings: bool = True
    dropout: float = 0.0
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layers", "d_model", "n_heads", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ModelConfigError(f"{name} must be a positive int, got {value!r}")
        if self.d_model % self.n_heads:
            raise ModelConfigError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}"
            )
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads:
            raise ModelConfigError(
                f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}"
            )
        if self.d_ff is None:
            self.d_ff = self.default_d_ff(self.d_model)
        if self.d_ff < 1:
            raise ModelConfigError(f"d_ff must be >= 1, got {self.d_ff}")
        if self.positional == "rope" and self.head_dim % 2:
            raise ModelConfigError(f"RoPE needs an even head_dim, got {self.head_dim}")
        if self.norm not in ("layernorm", "rmsnorm"):
            raise ModelConfigError(f"norm must be 'layernorm' or 'rmsnorm', got {self.norm!r}")
        if self.ffn not in ("gelu_tanh_mlp", "gelu_mlp", "swiglu"):
            raise ModelConfigError(
                f"ffn must be gelu_tanh_mlp, gelu_mlp or swiglu, got {self.ffn!r}"
            )
        if self.positional not in ("learned", "rope"):
            raise ModelConfigError(
                f"positional must be 'learned' or 'rope', got {self.positional!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ModelConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    @staticmethod
    def default_d_ff(d_model: int) -> int:
        """GPT-2's feed-forward width, $4d$."""
        return 4 * d_model

    @property
    def head_dim(self) -> int:
        """Per-head size $d / H$."""
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict, with `family`."""
        return {"family": self.family, **dataclasses.asdict(self)}


@dataclass
class GPTConfig(ModelConfig):
    """GPT-2: learned positions, LayerNorm, GELU-tanh MLP ($4d$), biases, tied head.

    The defaults are GPT-2 small (124M parameters).
    """

    family: ClassVar[str] = "gpt"


@dataclass
class LlamaConfig(ModelConfig):
    """Llama: RoPE, RMSNorm, SwiGLU (about $\\tfrac83 d$, a multiple of 32), no biases, own head.

    The defaults are a small Llama; set `n_kv_heads < n_heads` for grouped-query attention.
    """

    family: ClassVar[str] = "llama"

    vocab_size: int = 32000
    max_seq_len: int = 2048
    norm: Literal["layernorm", "rmsnorm"] = "rmsnorm"
    norm_eps: float = 1e-6
    ffn: Literal["gelu_tanh_mlp", "gelu_mlp", "swiglu"] = "swiglu"
    positional: Literal["learned", "rope"] = "rope"
    bias: bool = False
    tie_embeddings: bool = False

    @staticmethod
    def default_d_ff(d_model: int) -> int:
        """$\\tfrac23 \\cdot 4d$ (same parameters as a $4d$ MLP), rounded up to a multiple of 32."""
        return 32 * math.ceil(8 * d_model / 3 / 32)


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


class _FusedLayerNorm(LayerNorm):
    """[fms_transformer.norm.LayerNorm][], computed by PyTorch's fused `F.layer_norm` kernel."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (self.d,), self.weight, self.bias, self.eps)


class _FusedRMSNorm(RMSNorm):
    """[fms_transformer.norm.RMSNorm][] with a hand-derived backward ([fms_llm.models.fused.rms_norm][])."""

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


class _FusedSwiGLU(SwiGLU):
    r"""[fms_transformer.ffn.SwiGLU][] with its gate $\mathrm{silu}(a) \odot b$ in one C pass
    ([fms_llm.models.cpu_kernels][]) when training where it can run, PyTorch's fused `F.silu`
    otherwise."""

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.gate_proj(x), self.up_proj(x)
        h = cpu_kernels.swiglu(a, b) if cpu_kernels.supports(a, b) else F.silu(a) * b
        return self.down_proj(self.dropout(h))  # type: ignore[no-any-return]


class _RotaryTable(RotaryEmbedding):
    """[fms_transformer.positional.RotaryEmbedding][] with its cos/sin precomputed for every
    position up to the model's context (as transformers does), instead of recomputed, and the
    positions re-validated, in every layer at every step. Same values, bit for bit: the table is
    the parent's `cos_sin` of `0 .. max_len - 1`. One table is shared by every layer.

    `rotate_at` rotates a block of consecutive positions by slicing the table (a view, no
    indexing kernel).
    """

    cos_table: Tensor
    sin_table: Tensor
    signed_sin_table: Tensor

    def __init__(self, rope: RotaryEmbedding, max_len: int) -> None:
        super().__init__(
            rope.head_dim, rope.theta, rope.style, scaling=rope.scaling, rotary_dim=rope.rotary_dim
        )
        cos, sin = super().cos_sin(torch.arange(max_len))
        half = sin.shape[-1] // 2
        # rotate_half(x) * sin == cat(x2, x1) * cat(-sin1, sin2): the negation moves into the table
        signed = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)
        # stored (position, 1, head_dim): a slice of positions broadcasts over the heads as it is
        self.register_buffer("cos_table", cos[:, None, :], persistent=False)
        self.register_buffer("sin_table", sin[:, None, :], persistent=False)
        self.register_buffer("signed_sin_table", signed[:, None, :], persistent=False)

    def cos_sin(
        self, positions: Tensor, dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        if positions.ndim != 1:
            return super().cos_sin(positions, dtype)
        return self.cos_table[positions, 0].to(dtype), self.sin_table[positions, 0].to(dtype)

    @property
    def fast(self) -> bool:
        """Whether `rotate_at` applies (split-half, every feature rotated)."""
        return self.style == "split_half" and self.rotary_dim == self.head_dim

    def rotate_at(self, x: Tensor, offset: int) -> Tensor:
        r"""Rotate `x` `(batch, seq, heads, head_dim)` to positions `offset .. offset + seq - 1`.

        $x \cos + \mathrm{rotate\_half}(x) \sin$ computed as
        $x \cos + \mathrm{roll}(x, d/2) \odot [-\sin_1, \sin_2]$: rolling the last dimension by
        half its size swaps the halves, $[x_2, x_1]$, in one kernel (its backward is the same
        roll), so three kernels (a roll, a multiply, a fused multiply-add) serve all the heads;
        with the C kernels (float32 on the CPU), one pass of
        [fms_llm.models.cpu_kernels.rope][] instead.
        """
        if x.ndim == 4 and cpu_kernels.supports(x, self.cos_table):  # one C pass each way
            return cpu_kernels.rope(x, self.cos_table, self.signed_sin_table, offset)
        seq = x.shape[1]
        cos = self.cos_table[offset : offset + seq]
        sin = self.signed_sin_table[offset : offset + seq]
        if cos.dtype != x.dtype:
            cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, -1), sin)


class _FusedSelfAttention(MultiHeadAttention):
    """[fms_transformer.attention.MultiHeadAttention][] whose RoPE comes from one shared table,
    sliced by the cache offset, with no per-call position tensor, validation or indexing.

    Same values as the parent's
    [project_self_attention][fms_transformer.attention.MultiHeadAttention.project_self_attention]
    (tested to 1e-5); explicit `positions` and other RoPE variants take the parent's path. The
    three projections stay three matrix multiplies: concatenating $[W^Q; W^K; W^V]$ at each call
    into one was measured slower for decoding at width 256 (the weight copy costs more memory
    traffic than the multiply of one row it feeds), and no faster for training.
    """

    def project_self_attention(
        self, x: Tensor, offset: int, positions: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        rope = self.rope
        if positions is not None or not (isinstance(rope, _RotaryTable) and rope.fast):
            return super().project_self_attention(x, offset, positions)
        b, s, _ = x.shape
        q = rope.rotate_at(self.q_proj(x).view(b, s, self.n_heads, self.head_dim), offset)
        k = rope.rotate_at(self.k_proj(x).view(b, s, self.n_kv_heads, self.head_dim), offset)
        v = self.v_proj(x).view(b, s, self.n_kv_heads, self.head_dim)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


class _LeanDecoderBlock(DecoderBlock):
    """[fms_transformer.blocks.DecoderBlock][] of a decoder-only, pre-norm model without dropout:
    the same two residual sub-layers with the same modules, called directly, without the
    cross-attention branch and the no-op dropout calls (fewer Python calls per decoded token)."""

    def forward(  # type: ignore[override]
        self,
        x: Tensor,
        *,
        is_causal: bool = True,
        kv_cache: KVCache | None = None,
        layer_idx: int = 0,
        mask: Tensor | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        attn = self.self_attn(
            self.attn_norm(x),
            mask=mask,
            is_causal=is_causal,
            kv_cache=kv_cache,
            layer_idx=layer_idx,
            positions=positions,
        )
        h = x + attn
        out: Tensor = h + self.ffn(self.ffn_norm(h))
        return out


def _gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x, approximate="tanh")


_FAST_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu_tanh": _gelu_tanh,
    "gelu": F.gelu,
    "quick_gelu": quick_gelu,
}


def use_fused_kernels(model: nn.Module) -> None:
    """Swap, in place, the readable reference norms and activations under `model` for PyTorch's
    fused kernels (same math, same parameters under the same names).

    The fms_transformer modules spell each operation out (a LayerNorm is a mean, a variance, a
    division: several kernels forward and backward). For speed the models use `F.layer_norm`,
    [rms_norm][fms_llm.models.fused.rms_norm] (a hand-derived backward), `F.silu` in SwiGLU,
    `F.gelu` (exact or tanh) and [quick_gelu][fms_llm.models.fused.quick_gelu] (its derivative
    written out) in the MLP, and drop the no-op dropouts of a `dropout=0` model. The language
    models here and fms-mm's vision towers call it at construction; the parity tests run through
    this fast path, and tests check it against the reference modules.
    """
    for name, child in list(model.named_children()):
        if type(child) is LayerNorm:
            new: nn.Module = _FusedLayerNorm(child.d, child.eps, bias=child.bias is not None)
        elif type(child) is RMSNorm:
            new = _FusedRMSNorm(child.d, child.eps)
        elif type(child) is SwiGLU:
            new = _FusedSwiGLU(
                child.up_proj.in_features,
                child.up_proj.out_features,
                bias=child.up_proj.bias is not None,
                dropout=child.dropout.p,
            )
        elif type(child) is nn.Dropout and child.p == 0.0:
            setattr(model, name, nn.Identity())  # skips a function call per sub-layer per step
            continue
        else:
            if type(child) is MLP and child.activation in _FAST_ACTIVATIONS:
                child.act = _FAST_ACTIVATIONS[child.activation]
            use_fused_kernels(child)
            continue
        new.load_state_dict(child.state_dict())
        setattr(model, name, new)
        use_fused_kernels(new)


def document_mask(
    document_ids: Tensor, shape: torch.Size | tuple[int, ...]
) -> tuple[Tensor, Tensor]:
    r"""The attention mask and positions of packed rows, from their document ids.

    For ids $d$ `(batch, seq)`, the mask `(batch, 1, seq, seq)` is True where $d_s = d_t$ (the
    causal part is added by the attention), and the position of token $t$ is $t$ minus the
    index where its document starts, so every document is seen from position 0.

    Raises:
        ValueError: ids of the wrong shape or dtype, or decreasing along a row (a document
            must be one contiguous run).
    """
    if tuple(document_ids.shape) != tuple(shape):
        raise ValueError(
            f"document_ids {tuple(document_ids.shape)} must have the shape of idx {tuple(shape)}"
        )
    if document_ids.dtype.is_floating_point or document_ids.dtype == torch.bool:
        raise ValueError(f"document_ids must be integers, got dtype {document_ids.dtype}")
    if bool((document_ids[:, 1:] < document_ids[:, :-1]).any()):
        raise ValueError(
            "document_ids must be non-decreasing along each row (each document one contiguous run)"
        )
    seq = document_ids.shape[1]
    index = torch.arange(seq, device=document_ids.device).expand_as(document_ids)
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]
    first = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    mask = document_ids[:, None, :, None] == document_ids[:, None, None, :]
    return mask, index - first


class GPT(nn.Module):
    """A decoder-only transformer language model, GPT-2 or Llama by its config.

    Args:
        config: a [GPTConfig][fms_llm.models.GPTConfig] or [LlamaConfig][fms_llm.models.LlamaConfig].
        fused: compute norms and activations with PyTorch's fused kernels (same math, faster);
            `False` runs the readable fms_transformer reference modules.

    Example:
        >>> model = GPT(GPTConfig(vocab_size=100, n_layers=2, d_model=32, n_heads=4, max_seq_len=16))
        >>> model(torch.zeros(1, 5, dtype=torch.long)).shape
        torch.Size([1, 5, 100])
    """

    config_class: ClassVar[type[ModelConfig]] = GPTConfig

    def __init__(self, config: ModelConfig, *, fused: bool = True) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
        self.config = config
        c = config
        assert c.d_ff is not None
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.pos_emb = (
            LearnedPositionalEmbedding(c.max_seq_len, c.d_model, c.init_std)
            if c.positional == "learned"
            else None
        )
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            DecoderBlock(
                c.d_model,
                c.n_heads,
                c.d_ff,
                n_kv_heads=c.n_kv_heads,
                cross_attention=False,
                dropout=c.dropout,
                norm=c.norm,
                norm_eps=c.norm_eps,
                ffn=c.ffn,
                bias=c.bias,
                positional="rope" if c.positional == "rope" else None,
                rope_theta=c.rope_theta,
                backend="torch",  # F.scaled_dot_product_attention: the fused fast path
            )
            for _ in range(c.n_layers)
        )
        self.norm_f = make_norm(c.norm, c.d_model, c.norm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        if fused:
            use_fused_kernels(self)
            table: _RotaryTable | None = None
            for block in self.blocks:
                assert isinstance(block, DecoderBlock)
                attn = block.self_attn
                assert isinstance(attn, MultiHeadAttention)
                if attn.rope is not None:
                    # same module, same parameters; only project_self_attention changes
                    attn.__class__ = _FusedSelfAttention
                    table = table if table is not None else _RotaryTable(attn.rope, c.max_seq_len)
                    attn.rope = table
                if c.dropout == 0.0 and block.norm_first and block.cross_attn is None:
                    block.__class__ = _LeanDecoderBlock  # same module, same parameters
        self.reset_parameters()

    # -- properties used by generation and the trainer --------------------------------------------

    @property
    def n_layers(self) -> int:
        """Number of blocks (the number of layers of a [KVCache][fms_transformer.kv_cache.KVCache])."""
        return self.config.n_layers

    @property
    def max_seq_len(self) -> int:
        """The longest context the model accepts."""
        return self.config.max_seq_len

    # -- initialisation -------------------------------------------------------------------------

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The published initialisations.

        GPT-2: $\\mathcal N(0, 0.02^2)$ for every matrix and embedding, zero biases, and the
        residual output projections (`out_proj`, `down_proj`) at $0.02/\\sqrt{2L}$.
        Llama (as in Hugging Face's `LlamaPreTrainedModel`): $\\mathcal N(0, 0.02^2)$ everywhere.
        Norms start at weight 1, bias 0.
        """
        c = self.config
        if c.family == "llama":
            for m in self.modules():
                if isinstance(m, nn.Linear | nn.Embedding):
                    nn.init.normal_(m.weight, 0.0, c.init_std)
                    if isinstance(m, nn.Linear) and m.bias is not None:
                        nn.init.zeros_(m.bias)
        else:
            init_gpt2_(self, c.n_layers, c.init_std)
        if self.pos_emb is not None:
            nn.init.normal_(self.pos_emb.weight, 0.0, c.init_std)
        for m in self.modules():
            if isinstance(m, LayerNorm | RMSNorm):
                nn.init.ones_(m.weight)
                if isinstance(m, LayerNorm) and m.bias is not None:
                    nn.init.zeros_(m.bias)

    # -- forward --------------------------------------------------------------------------------

    def forward(
        self,
        idx: Tensor | None = None,
        targets: Tensor | None = None,
        *,
        kv_cache: KVCache | None = None,
        ignore_index: int = -100,
        inputs_embeds: Tensor | None = None,
        document_ids: Tensor | None = None,
    ) -> Tensor:
        r"""Next-token logits for every position, or, given `targets`, the mean loss.

        Args:
            idx: token ids `(batch, seq)`.
            targets: the ids to predict `(batch, seq)` (usually `idx` shifted by one); with them
                the model returns the mean cross-entropy in nats instead of the logits, computed
                by [linear_cross_entropy][fms_llm.models.fused.linear_cross_entropy] without
                materialising the `(batch, seq, vocab)` logits.
            kv_cache: for incremental decoding: the new tokens sit at positions
                `kv_cache.offset ...`, and every block appends its keys and values to it.
            ignore_index: a target id that does not count towards the loss.
            inputs_embeds: token vectors `(batch, seq, d_model)` to read instead of `idx` (the
                rows of `tok_emb` for text, or another modality's vectors projected into this
                space, as a vision-language model does); positions are added as for ids.
            document_ids: for packed rows (several documents one after another in one row),
                `(batch, seq)` integers, constant over each document and non-decreasing along
                the row. Token $t$ then attends only to the tokens $s \le t$ of its own document
                ($d_s = d_t$), and positions restart at 0 where a document starts, so each
                document is computed exactly as if it were alone in its row. `None` (default):
                one document a row. Not with `kv_cache`.

        Returns:
            logits `(batch, seq, vocab_size)`, or the scalar loss when `targets` is given.
        """
        if (idx is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of idx (token ids) and inputs_embeds (vectors)")
        if inputs_embeds is not None:
            if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != self.config.d_model:
                raise ValueError(
                    f"inputs_embeds must be (batch, seq, d_model={self.config.d_model}), "
                    f"got shape {tuple(inputs_embeds.shape)}"
                )
            x = inputs_embeds
        else:
            assert idx is not None
            if idx.ndim != 2:
                raise ValueError(f"idx must be (batch, seq), got shape {tuple(idx.shape)}")
            x = self.tok_emb(idx)
        offset = kv_cache.offset if kv_cache is not None else 0
        batch, seq = x.shape[0], x.shape[1]
        if offset + seq > self.config.max_seq_len:
            raise ValueError(
                f"sequence of {offset + seq} tokens (offset {offset} + {seq} new) exceeds "
                f"max_seq_len={self.config.max_seq_len}"
            )
        mask = positions = None
        if document_ids is not None:
            if kv_cache is not None:
                raise ValueError("document_ids (packed rows) cannot be used with a kv_cache")
            mask, positions = document_mask(document_ids, (batch, seq))
        if positions is not None and self.pos_emb is not None:
            x = x + self.pos_emb(positions)
        elif self.pos_emb is not None:
            # positions offset .. offset + seq - 1, checked above: a slice of the table (a view),
            # not an index of it, so no positions tensor, no check on the device (which would
            # synchronise a GPU and break a torch.compile graph) and a slice's cheap backward
            x = x + self.pos_emb.weight[offset : offset + seq]
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            if mask is None:
                x = block(x, is_causal=True, kv_cache=kv_cache, layer_idx=i)
            else:
                x = block(x, is_causal=True, mask=mask, positions=positions)
        h = self.norm_f(x)
        if targets is not None:
            if tuple(targets.shape) != (batch, seq):
                source = "idx" if idx is not None else "inputs_embeds' (batch, seq)"
                raise ValueError(
                    f"targets {tuple(targets.shape)} must have the shape of {source} {(batch, seq)}"
                )
            return linear_cross_entropy(h, self.lm_head.weight, targets, ignore_index=ignore_index)
        logits: Tensor = self.lm_head(h)
        return logits

    # -- counting ---------------------------------------------------------------------------------

    def num_parameters(self, *, non_embedding: bool = False) -> int:
        """Number of distinct parameters (a tied head counts once).

        With `non_embedding=True`, the token and position tables are left out (the $N$ of the
        scaling laws of Kaplan et al., 2020); an untied head is kept, as it does matmul work.
        """
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.tok_emb.weight.numel()
            if self.pos_emb is not None:
                n -= self.pos_emb.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token: $6N + 12 L d T$ (Kaplan et al., 2020; PaLM appendix B).

        $N$ counts every weight used in a matrix multiply per token: the blocks' linear layers and
        the head (so the token table counts once, through the head, when tied); the factor 6 is 2
        for the forward multiply-add and 4 for the backward pass. $12 L d T$ is attention's
        scores and weighted sum over a context of $T$ (`seq_len`, default `max_seq_len`),
        forward and backward. Model FLOPs utilisation is then
        $\\mathrm{MFU} = \\text{tokens/s} \\times \\text{flops\\_per\\_token} / \\text{peak FLOP/s}$.
        """
        c = self.config
        t = c.max_seq_len if seq_len is None else seq_len
        n_matmul = (
            sum(m.weight.numel() for m in self.blocks.modules() if isinstance(m, nn.Linear))
            + self.lm_head.weight.numel()
        )
        return 6.0 * n_matmul + 12.0 * c.n_layers * c.d_model * t

    # -- Hugging Face round trip ------------------------------------------------------------------

    def save_pretrained(
        self, directory: str | Path, tokenizer: Any = None, *, eos_token: str | None = None
    ) -> Path:
        """Write `config.json` and `model.safetensors` in the Hugging Face layout (atomically).

        A GPT-2-family model is saved as `GPT2LMHeadModel`, a Llama-family one as
        `LlamaForCausalLM`; `transformers.AutoModelForCausalLM.from_pretrained(directory)` loads
        either. With a `tokenizer` (a [BPETokenizer][fms_llm.tokenizer.BPETokenizer]) the directory
        is complete: `tokenizer.json`, `tokenizer_config.json`, `generation_config.json` and the
        bos/eos/pad ids (see [save_pretrained][fms_llm.models.hf.save_pretrained]).
        """
        from fms_llm.models.hf import save_pretrained

        return save_pretrained(self, directory, tokenizer, eos_token=eos_token)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, map_location: str | torch.device | None = "cpu"
    ) -> GPT:
        """Load a model saved by [save_pretrained][fms_llm.models.gpt.GPT.save_pretrained] or by
        transformers (`GPT2LMHeadModel`, `LlamaForCausalLM`); the family comes from `config.json`.
        `map_location=None` picks CUDA if present, else the CPU.

        Raises:
            fms_llm.models.hf.ModelFileError: missing or corrupt files, unsupported architecture,
                missing/unexpected/mis-shaped weights.
            ValueError: `map_location` is not a device this machine has.
        """
        from fms_llm.models.hf import load_pretrained

        return load_pretrained(directory, map_location=map_location)


class Llama(GPT):
    """The same network as [GPT][fms_llm.models.GPT] with a [LlamaConfig][fms_llm.models.LlamaConfig].

    Example:
        >>> cfg = LlamaConfig(vocab_size=100, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2)
        >>> Llama(cfg)(torch.zeros(1, 3, dtype=torch.long)).shape
        torch.Size([1, 3, 100])
    """

    config_class: ClassVar[type[ModelConfig]] = LlamaConfig
