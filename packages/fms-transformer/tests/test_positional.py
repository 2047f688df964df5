"""Positional schemes against their references: Hugging Face Llama RoPE, BLOOM ALiBi, formulas."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.bloom.modeling_bloom import build_alibi_tensor
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from fms_transformer.positional import (
    LearnedPositionalEmbedding,
    PositionError,
    RopeScaling,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    alibi_bias,
    alibi_slopes,
)


def _hf_rope(head_dim: int, theta: float, rope_parameters: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
    params = {"rope_type": "default", "rope_theta": theta, **(rope_parameters or {})}
    config = LlamaConfig(
        hidden_size=head_dim * 4,
        num_attention_heads=4,
        head_dim=head_dim,
        max_position_embeddings=64,
        rope_parameters=params,
    )
    return LlamaRotaryEmbedding(config)


@pytest.mark.parametrize("theta", [10000.0, 500000.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rope_split_half_equals_hf_llama_rotation_1e6(theta: float, dtype: torch.dtype) -> None:
    """Our split-half RoPE == `apply_rotary_pos_emb` with `LlamaRotaryEmbedding` (1e-6, 1e-12 f64)."""
    head_dim, seq = 16, 37
    q = torch.randn(2, 4, seq, head_dim, dtype=dtype)
    k = torch.randn(2, 2, seq, head_dim, dtype=dtype)
    positions = torch.arange(5, 5 + seq)
    hf = _hf_rope(head_dim, theta)
    cos, sin = hf(q, positions.unsqueeze(0).expand(2, -1))
    q_ref, k_ref = apply_rotary_pos_emb(q, k, cos, sin)
    ours = RotaryEmbedding(head_dim, theta, "split_half")
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    # HF builds cos/sin in float32 then casts: identical rounding to ours
    torch.testing.assert_close(ours(q, positions), q_ref, atol=tol, rtol=0)
    torch.testing.assert_close(ours(k, positions), k_ref, atol=tol, rtol=0)


@pytest.mark.parametrize(
    ("ours", "hf"),
    [
        (RopeScaling("linear", 4.0), {"rope_type": "linear", "factor": 4.0}),
        (
            RopeScaling("llama3", 8.0, 1.0, 4.0, 32),
            {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
        ),
    ],
)
def test_rope_scaling_equals_hf_rope_types_1e6(ours: RopeScaling, hf: dict[str, object]) -> None:
    """Linear (position interpolation) and llama3 scaling match Hugging Face's rope_type (1e-6)."""
    head_dim, seq = 32, 50
    q = torch.randn(1, 2, seq, head_dim)
    positions = torch.arange(seq)
    ref_rope = _hf_rope(head_dim, 10000.0, hf)
    cos, sin = ref_rope(q, positions.unsqueeze(0))
    q_ref, _ = apply_rotary_pos_emb(q, q, cos, sin)
    out = RotaryEmbedding(head_dim, 10000.0, scaling=ours)(q, positions)
    torch.testing.assert_close(out, q_ref, atol=1e-5, rtol=0)


def test_rope_ntk_scaling_changes_theta_as_documented() -> None:
    rope = RotaryEmbedding(16, 10000.0, scaling=RopeScaling("ntk", 4.0))
    expected = RotaryEmbedding(16, 10000.0 * 4.0 ** (16 / 14))
    torch.testing.assert_close(rope.inv_freq, expected.inv_freq)


def test_rope_interleaved_is_split_half_up_to_a_feature_permutation_1e6() -> None:
    """interleaved(x) == P^-1 split_half(P x) where P gathers even features then odd features."""
    d = 12
    x = torch.randn(3, 7, d)
    pos = torch.arange(7)
    perm = torch.cat((torch.arange(0, d, 2), torch.arange(1, d, 2)))
    inv = torch.argsort(perm)
    split = RotaryEmbedding(d, style="split_half")(x[..., perm], pos)[..., inv]
    inter = RotaryEmbedding(d, style="interleaved")(x, pos)
    torch.testing.assert_close(inter, split, atol=1e-6, rtol=0)


def test_rope_dot_product_depends_only_on_offset_1e5() -> None:
    """<R_m q, R_n k> == <R_{m+s} q, R_{n+s} k>: RoPE encodes relative position."""
    rope = RotaryEmbedding(8)
    q, k = torch.randn(1, 8), torch.randn(1, 8)
    for style in ("split_half", "interleaved"):
        rope = RotaryEmbedding(8, style=style)  # type: ignore[arg-type]
        a = (rope(q, torch.tensor([3])) * rope(k, torch.tensor([10]))).sum()
        b = (rope(q, torch.tensor([103])) * rope(k, torch.tensor([110]))).sum()
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_rope_partial_rotary_dim_leaves_tail_untouched() -> None:
    x = torch.randn(2, 3, 5, 16)
    out = RotaryEmbedding(16, rotary_dim=8)(x, torch.arange(5))
    torch.testing.assert_close(out[..., 8:], x[..., 8:])
    torch.testing.assert_close(out[..., :8], RotaryEmbedding(8)(x[..., :8], torch.arange(5)))


def test_rope_batched_positions_rotate_each_row() -> None:
    x = torch.randn(2, 3, 4, 8)
    pos = torch.tensor([[0, 1, 2, 3], [5, 6, 7, 8]])
    rope = RotaryEmbedding(8)
    out = rope(x, pos)
    torch.testing.assert_close(out[1], rope(x[1:2], pos[1])[0])


def test_sinusoidal_matches_the_paper_formula_1e6() -> None:
    d = 10
    pe = SinusoidalPositionalEncoding(d)(torch.arange(50))
    pos = torch.arange(50, dtype=torch.float64).unsqueeze(-1)
    i = torch.arange(0, d, 2, dtype=torch.float64)
    ref = torch.zeros(50, d, dtype=torch.float64)
    ref[:, 0::2] = torch.sin(pos / 10000 ** (i / d))
    ref[:, 1::2] = torch.cos(pos / 10000 ** (i / d))
    torch.testing.assert_close(pe.double(), ref, atol=1e-5, rtol=0)


def test_alibi_slopes_and_bias_equal_hf_bloom_1e6() -> None:
    """Slopes (powers of two and not) and the causal bias equal BLOOM's `build_alibi_tensor`."""
    assert alibi_slopes(8).tolist() == pytest.approx([2 ** (-i) for i in range(1, 9)])
    for n_heads in (4, 6, 12):
        seq = 9
        ref = build_alibi_tensor(torch.ones(1, seq), n_heads, torch.float32)  # (heads, 1, seq)
        # BLOOM's bias slope*j differs from -slope*(i-j) by a per-row constant, which softmax ignores
        ours = alibi_bias(n_heads, seq, seq)
        causal = torch.tril(torch.ones(seq, seq, dtype=torch.bool))
        a = torch.softmax(ours.masked_fill(~causal, -math.inf), -1)
        b = torch.softmax(ref.expand(-1, seq, -1).masked_fill(~causal, -math.inf), -1)
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
        torch.testing.assert_close(-ours[:, 1, 0], ref[:, 0, 1], atol=1e-6, rtol=0)


def test_learned_table_rejects_a_sequence_longer_than_the_table() -> None:
    emb = LearnedPositionalEmbedding(8, 4)
    assert emb(torch.arange(8)).shape == (8, 4)
    with pytest.raises(
        PositionError, match=r"position 9 is outside the learned table of max_len=8"
    ):
        emb(torch.arange(10))


def test_positional_bad_input() -> None:
    with pytest.raises(PositionError, match="integer"):
        SinusoidalPositionalEncoding(8)(torch.arange(3.0))
    with pytest.raises(PositionError, match="even"):
        SinusoidalPositionalEncoding(7)
    with pytest.raises(PositionError, match=r"last dim 6.*head_dim=8"):
        RotaryEmbedding(8)(torch.randn(2, 3, 6), torch.arange(3))
    with pytest.raises(PositionError, match=r"positions has shape \(4,\).*seq length 3"):
        RotaryEmbedding(8)(torch.randn(2, 3, 8), torch.arange(4))
    with pytest.raises(PositionError, match="style"):
        RotaryEmbedding(8, style="complex")  # type: ignore[arg-type]
    with pytest.raises(PositionError, match="factor"):
        RopeScaling("linear", 0.5)
    with pytest.raises(PositionError, match=">= 0"):
        LearnedPositionalEmbedding(4, 2)(torch.tensor([-1]))
