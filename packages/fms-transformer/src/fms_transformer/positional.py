"""Positional information: sinusoidal, learned absolute, rotary (RoPE) and ALiBi.

Self-attention is permutation-equivariant: shuffle the tokens and the outputs shuffle the same way.
Word order reaches the model only through one of these schemes.

- **Absolute, added to the input** ([`SinusoidalPositionalEncoding`][fms_transformer.positional.SinusoidalPositionalEncoding],
  Vaswani et al. 2017; [`LearnedPositionalEmbedding`][fms_transformer.positional.LearnedPositionalEmbedding],
  GPT-2): a vector $p_t$ is added to the embedding of token $t$.
- **Rotary** ([`RotaryEmbedding`][fms_transformer.positional.RotaryEmbedding], Su et al. 2021):
  queries and keys are rotated by an angle proportional to their position, so that
  $\\langle R_m q, R_n k\\rangle = \\langle q, R_{n-m} k\\rangle$ depends on the offset only.
- **ALiBi** ([`alibi_bias`][fms_transformer.positional.alibi_bias], Press et al. 2022): no
  embedding at all; a head-specific linear penalty $-m_h\\,|i-j|$ is added to the scores.
- **None**: a causal decoder can still infer position (it can count the tokens it sees).

Every module here takes explicit integer `positions`, so incremental decoding simply passes
`arange(offset, offset + new_tokens)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "LearnedPositionalEmbedding",
    "PositionError",
    "RopeScaling",
    "RotaryEmbedding",
    "SinusoidalPositionalEncoding",
    "alibi_bias",
    "alibi_slopes",
    "rotate_half",
    "rotate_interleaved",
]

RopeStyle = Literal["split_half", "interleaved"]


class PositionError(ValueError):
    """A position outside a table, or a positional argument of the wrong shape or value."""


def _check_positions(positions: Tensor) -> None:
    if not isinstance(positions, Tensor) or positions.is_floating_point() or positions.is_complex():
        raise PositionError(
            f"positions must be an integer tensor, got "
            f"{positions.dtype if isinstance(positions, Tensor) else type(positions).__name__}"
        )
    if positions.numel() and int(positions.min()) < 0:
        raise PositionError(f"positions must be >= 0, got minimum {int(positions.min())}")


class SinusoidalPositionalEncoding(nn.Module):
    """The fixed sinusoids of *Attention Is All You Need*.

    $$PE_{t, 2i} = \\sin\\!\\left(t / b^{2i/d}\\right), \\qquad PE_{t, 2i+1} = \\cos\\!\\left(t / b^{2i/d}\\right)$$

    with base $b = 10000$. For every offset $k$, $PE_{t+k}$ is a fixed linear function (a rotation
    per frequency pair) of $PE_t$, which is why the authors hoped it would extrapolate. It has no
    parameters and no maximum length.

    Args:
        d_model: Embedding size (even).
        base: The base $b$ of the geometric frequency ladder.
    """

    inv_freq: Tensor

    def __init__(self, d_model: int, base: float = 10000.0) -> None:
        super().__init__()
        if d_model <= 0 or d_model % 2:
            raise PositionError(f"d_model must be a positive even number, got {d_model}")
        self.d_model = d_model
        inv_freq = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        """Encodings for integer `positions` of any shape `(...)`; returns `(..., d_model)` float32."""
        _check_positions(positions)
        angles = positions.to(torch.float32).unsqueeze(-1) * self.inv_freq
        out = torch.stack((angles.sin(), angles.cos()), dim=-1)  # (..., d/2, 2): interleave sin/cos
        return out.flatten(-2)


class LearnedPositionalEmbedding(nn.Module):
    """A learned table of absolute position vectors (BERT, GPT-2), parameter `weight`.

    Args:
        max_len: Number of rows of the table: positions `0 .. max_len - 1` are allowed.
        d_model: Embedding size.
        init_std: Standard deviation of the normal initialisation (GPT-2 uses 0.01-0.02).
    """

    def __init__(self, max_len: int, d_model: int, init_std: float = 0.02) -> None:
        super().__init__()
        if max_len <= 0 or d_model <= 0:
            raise PositionError(f"max_len and d_model must be positive, got {max_len}, {d_model}")
        self.max_len = max_len
        self.weight = nn.Parameter(torch.randn(max_len, d_model) * init_std)

    def forward(self, positions: Tensor) -> Tensor:
        """Rows of the table for integer `positions` of shape `(...)`; returns `(..., d_model)`.

        Raises:
            PositionError: if a position is `>= max_len` (a sequence longer than the table).
        """
        _check_positions(positions)
        if positions.numel() and int(positions.max()) >= self.max_len:
            raise PositionError(
                f"position {int(positions.max())} is outside the learned table of max_len="
                f"{self.max_len} (positions shape {tuple(positions.shape)}): the sequence is longer "
                f"than the table"
            )
        return self.weight[positions]


@dataclass(frozen=True)
class RopeScaling:
    """How to stretch RoPE to contexts longer than the model was trained on.

    - `"linear"` (position interpolation, Chen et al. 2023): positions are divided by `factor`.
    - `"ntk"` (NTK-aware scaling of theta, bloc97 2023): the base becomes
      $\\theta' = \\theta \\cdot s^{d/(d-2)}$, so the lowest frequency is interpolated by $s$ while
      the highest is nearly unchanged.
    - `"llama3"` (Meta's Llama 3.1): wavelengths longer than
      `original_max_position_embeddings / low_freq_factor` are divided by `factor`, those shorter
      than `original_max_position_embeddings / high_freq_factor` are kept, and the band between
      is interpolated smoothly (the `rope_type="llama3"` of Hugging Face).

    Args:
        kind: `"linear"`, `"ntk"` or `"llama3"`.
        factor: The context extension factor $s \\ge 1$.
        low_freq_factor: llama3 only.
        high_freq_factor: llama3 only.
        original_max_position_embeddings: llama3 only: the pre-training context length.
    """

    kind: Literal["linear", "ntk", "llama3"] = "linear"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "ntk", "llama3"):
            raise PositionError(
                f"RopeScaling.kind must be 'linear', 'ntk' or 'llama3', got {self.kind!r}"
            )
        if self.factor < 1.0:
            raise PositionError(f"RopeScaling.factor must be >= 1, got {self.factor}")


def rotate_half(x: Tensor) -> Tensor:
    """Split-half convention: $(x_1, x_2) \\mapsto (-x_2, x_1)$ with $x_1, x_2$ the two halves."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotate_interleaved(x: Tensor) -> Tensor:
    """Interleaved convention: each pair $(x_{2i}, x_{2i+1}) \\mapsto (-x_{2i+1}, x_{2i})$."""
    x_even, x_odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((-x_odd, x_even), dim=-1).flatten(-2)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021), in both conventions found in the wild.

    Feature pairs are rotated by the angle $t\\,\\omega_i$ with $\\omega_i = \\theta^{-2i/d}$:

    $$\\begin{pmatrix} x'_a \\\\ x'_b \\end{pmatrix} =
      \\begin{pmatrix} \\cos t\\omega_i & -\\sin t\\omega_i \\\\ \\sin t\\omega_i & \\cos t\\omega_i \\end{pmatrix}
      \\begin{pmatrix} x_a \\\\ x_b \\end{pmatrix}$$

    The two conventions differ only in *which* features form pair $i$:

    - `"split_half"` (GPT-NeoX, Hugging Face Llama): $(a, b) = (i, i + d/2)$, computed as
      $x \\cos + \\mathrm{rotate\\_half}(x) \\sin$. Use it to load Hugging Face Llama weights.
    - `"interleaved"` (RoFormer, GPT-J, Meta's original Llama code): $(a, b) = (2i, 2i+1)$.

    `rope(x, positions)` (or its alias `rope.rotate(x, positions)`) applies it; the name
    `apply` is deliberately not used, as it would shadow `torch.nn.Module.apply`.

    They are the same function up to a fixed permutation of the features of $W_q$ and $W_k$, which is
    why checkpoints converted between the two permute those weight rows.

    Args:
        head_dim: Size of each attention head.
        theta: The base $\\theta$ (10000 in the paper and Llama 2, 500000 in Llama 3).
        style: `"split_half"` or `"interleaved"`.
        scaling: Optional [`RopeScaling`][fms_transformer.positional.RopeScaling].
        rotary_dim: Rotate only the first `rotary_dim` features (partial rotary, GPT-NeoX/Phi);
            defaults to `head_dim`.
    """

    inv_freq: Tensor

    def __init__(
        self,
        head_dim: int,
        theta: float = 10000.0,
        style: RopeStyle = "split_half",
        scaling: RopeScaling | None = None,
        rotary_dim: int | None = None,
    ) -> None:
        super().__init__()
        rotary_dim = head_dim if rotary_dim is None else rotary_dim
        if rotary_dim <= 0 or rotary_dim % 2 or rotary_dim > head_dim:
            raise PositionError(
                f"rotary_dim must be even and in (0, head_dim={head_dim}], got {rotary_dim}"
            )
        if style not in ("split_half", "interleaved"):
            raise PositionError(f"style must be 'split_half' or 'interleaved', got {style!r}")
        if theta <= 1.0:
            raise PositionError(f"theta must be > 1, got {theta}")
        self.head_dim, self.rotary_dim, self.theta, self.style = head_dim, rotary_dim, theta, style
        self.scaling = scaling
        self.register_buffer("inv_freq", self._inv_freq(), persistent=False)

    def _inv_freq(self) -> Tensor:
        d, theta, s = self.rotary_dim, self.theta, self.scaling
        if s is not None and s.kind == "ntk":
            theta = theta * s.factor ** (d / (d - 2)) if d > 2 else theta
        inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d)
        if s is not None and s.kind == "llama3":
            low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
            high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
            wavelen = 2 * math.pi / inv_freq
            scaled = torch.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
            smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
                s.high_freq_factor - s.low_freq_factor
            )
            smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
            is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
            inv_freq = torch.where(is_medium, smoothed, scaled)
        return inv_freq

    def cos_sin(
        self, positions: Tensor, dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        """`cos` and `sin` of the angles, each `(..., rotary_dim)` laid out for `style`.

        Computed in float32 (as Hugging Face does) and then cast to `dtype`.
        """
        _check_positions(positions)
        pos = positions.to(torch.float32)
        if self.scaling is not None and self.scaling.kind == "linear":
            pos = pos / self.scaling.factor
        angles = pos.unsqueeze(-1) * self.inv_freq.to(positions.device)  # (..., d/2)
        if self.style == "split_half":
            angles = torch.cat((angles, angles), dim=-1)
        else:
            angles = angles.repeat_interleave(2, dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate `x` of shape `(..., seq, head_dim)` (or `(batch, heads, seq, head_dim)`).

        Args:
            x: Queries or keys; the last dim is `head_dim`, the second to last is the sequence.
            positions: Integer positions `(seq,)`, or `(batch, seq)` for `x` of shape
                `(batch, heads, seq, head_dim)` (per-row positions, e.g. left padding).

        Returns:
            The rotated tensor, same shape and dtype as `x`.
        """
        if x.shape[-1] != self.head_dim:
            raise PositionError(
                f"x has last dim {x.shape[-1]} (shape {tuple(x.shape)}), expected head_dim="
                f"{self.head_dim}"
            )
        if positions.ndim == 1:
            if positions.shape[0] != x.shape[-2]:
                raise PositionError(
                    f"positions has shape {tuple(positions.shape)} but x has seq length "
                    f"{x.shape[-2]} (x shape {tuple(x.shape)})"
                )
        elif positions.ndim == 2:
            if x.ndim != 4 or positions.shape != (x.shape[0], x.shape[2]):
                raise PositionError(
                    f"2-D positions must be (batch, seq) for x of shape (batch, heads, seq, "
                    f"head_dim); got positions {tuple(positions.shape)}, x {tuple(x.shape)}"
                )
        else:
            raise PositionError(
                f"positions must be (seq,) or (batch, seq), got shape {tuple(positions.shape)}"
            )
        cos, sin = self.cos_sin(positions, x.dtype)
        if positions.ndim == 2:
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over heads
        rotate = rotate_half if self.style == "split_half" else rotate_interleaved
        if self.rotary_dim == self.head_dim:
            return x * cos + rotate(x) * sin
        x_rot, x_pass = x[..., : self.rotary_dim], x[..., self.rotary_dim :]
        return torch.cat((x_rot * cos + rotate(x_rot) * sin, x_pass), dim=-1)

    rotate = forward


def alibi_slopes(n_heads: int) -> Tensor:
    """ALiBi head slopes $m_h$: the geometric sequence $2^{-8h/n}$, $h = 1..n$ (Press et al. 2022).

    For `n_heads` not a power of two, the paper's recipe: the slopes of the closest smaller power of
    two, then every other slope of the next power of two.

    Returns:
        float32 tensor `(n_heads,)`.
    """
    if n_heads <= 0:
        raise PositionError(f"n_heads must be positive, got {n_heads}")

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start**i for i in range(1, n + 1)]

    if math.log2(n_heads).is_integer():
        slopes = power_of_two(n_heads)
    else:
        closest = 2 ** math.floor(math.log2(n_heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(
    n_heads: int,
    l_q: int,
    l_k: int,
    *,
    offset: int = 0,
    causal: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The ALiBi additive score bias `(n_heads, l_q, l_k)`: $-m_h\\,|(i + \\text{offset}) - j|$.

    For a causal model only $j \\le i$ matters, where this is $-m_h (i - j)$; pass the result as a
    floating `attn_mask` together with the causal mask.

    Args:
        n_heads: Number of heads.
        l_q: Number of queries.
        l_k: Number of keys.
        offset: Position of the first query (tokens already in a key/value cache).
        causal: Kept for symmetry: the bias is symmetric in $|i-j|$ either way.
        device: Device of the result.
        dtype: Dtype of the result.
    """
    del causal
    q_pos = torch.arange(l_q, device=device).unsqueeze(-1) + offset
    k_pos = torch.arange(l_k, device=device)
    distance = (q_pos - k_pos).abs().to(dtype)
    return -alibi_slopes(n_heads).to(device=device, dtype=dtype).view(-1, 1, 1) * distance
