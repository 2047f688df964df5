"""Position-wise feed-forward networks: the MLP (ReLU, GELU) and SwiGLU.

Each token passes through the same two-layer network; this is where most of a transformer's
parameters and FLOPs live (with $d_{ff} = 4d$, two thirds of a block).

- **MLP** (Vaswani et al. 2017; GPT-2 with GELU): $\\mathrm{FFN}(x) = W_2\\,\\phi(W_1 x + b_1) + b_2$.
- **SwiGLU** (Shazeer 2020, used by PaLM and Llama): a gated unit,
  $\\mathrm{FFN}(x) = W_{down}\\left(\\mathrm{SiLU}(W_{gate} x) \\odot W_{up} x\\right)$. It has three
  matrices, so models using it take $d_{ff} \\approx \\tfrac{8}{3} d$ to keep the parameter count.

Activations, written from their definitions:

$$\\mathrm{GELU}(x) = x\\,\\Phi(x) = \\tfrac{x}{2}\\left(1 + \\mathrm{erf}(x/\\sqrt2)\\right), \\quad
  \\mathrm{GELU}_{\\tanh}(x) = \\tfrac{x}{2}\\left(1 + \\tanh\\!\\left(\\sqrt{2/\\pi}\\,(x + 0.044715 x^3)\\right)\\right),$$
$$\\mathrm{SiLU}(x) = x\\,\\sigma(x), \\qquad \\mathrm{ReLU}(x) = \\max(x, 0), \\qquad
  \\mathrm{QuickGELU}(x) = x\\,\\sigma(1.702\\,x).$$

QuickGELU is the sigmoid approximation of GELU (Hendrycks & Gimpel 2016, section 2) that OpenAI's
CLIP was trained with; a CLIP checkpoint needs it exactly, not GELU.

Parameter names follow Hugging Face Llama (`gate_proj`, `up_proj`, `down_proj`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "FFNError",
    "SwiGLU",
    "gelu",
    "gelu_tanh",
    "quick_gelu",
    "relu",
    "silu",
]

Activation = Literal["gelu", "gelu_tanh", "quick_gelu", "relu", "silu"]


class FFNError(ValueError):
    """An unknown activation or a bad layer size."""


def gelu(x: Tensor) -> Tensor:
    """Exact GELU, $x\\,\\Phi(x)$."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_tanh(x: Tensor) -> Tensor:
    """The tanh approximation of GELU used by GPT-2 (`gelu_new` in Hugging Face)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def quick_gelu(x: Tensor) -> Tensor:
    """QuickGELU, $x\\,\\sigma(1.702\\,x)$ (OpenAI CLIP's activation, `quick_gelu` in Hugging Face)."""
    return x * torch.sigmoid(1.702 * x)


def relu(x: Tensor) -> Tensor:
    """$\\max(x, 0)$."""
    return x.clamp_min(0.0)


def silu(x: Tensor) -> Tensor:
    """SiLU / swish, $x\\,\\sigma(x)$."""
    return x * torch.sigmoid(x)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": gelu,
    "gelu_tanh": gelu_tanh,
    "quick_gelu": quick_gelu,
    "relu": relu,
    "silu": silu,
}


def _check_sizes(d_model: int, d_hidden: int) -> None:
    if d_model <= 0 or d_hidden <= 0:
        raise FFNError(f"d_model and d_hidden must be positive, got {d_model}, {d_hidden}")


class MLP(nn.Module):
    """Two-layer feed-forward network $W_2\\,\\phi(W_1 x + b_1) + b_2$ (`up_proj`, `down_proj`).

    Args:
        d_model: Input and output size.
        d_hidden: Hidden size $d_{ff}$.
        activation: `"gelu"`, `"gelu_tanh"`, `"quick_gelu"`, `"relu"` or `"silu"`.
        bias: Biases on both linear layers.
        dropout: Dropout on the hidden activations (as `torch.nn.TransformerEncoderLayer`).
    """

    def __init__(
        self,
        d_model: int,
        d_hidden: int,
        activation: Activation = "gelu",
        bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_sizes(d_model, d_hidden)
        if activation not in ACTIVATIONS:
            raise FFNError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.act = ACTIVATIONS[activation]
        self.up_proj = nn.Linear(d_model, d_hidden, bias=bias)
        self.down_proj = nn.Linear(d_hidden, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """`(..., d_model)` -> `(..., d_model)`."""
        out: Tensor = self.down_proj(self.dropout(self.act(self.up_proj(x))))
        return out


class SwiGLU(nn.Module):
    """Gated feed-forward $W_{down}(\\mathrm{SiLU}(W_{gate} x) \\odot W_{up} x)$.

    Args:
        d_model: Input and output size.
        d_hidden: Hidden size (Llama: about $\\tfrac83 d$, rounded).
        bias: Biases on the three linear layers (Llama: none).
        dropout: Dropout on the gated hidden activations.
    """

    def __init__(
        self, d_model: int, d_hidden: int, bias: bool = False, dropout: float = 0.0
    ) -> None:
        super().__init__()
        _check_sizes(d_model, d_hidden)
        self.gate_proj = nn.Linear(d_model, d_hidden, bias=bias)
        self.up_proj = nn.Linear(d_model, d_hidden, bias=bias)
        self.down_proj = nn.Linear(d_hidden, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """`(..., d_model)` -> `(..., d_model)`."""
        out: Tensor = self.down_proj(self.dropout(silu(self.gate_proj(x)) * self.up_proj(x)))
        return out
