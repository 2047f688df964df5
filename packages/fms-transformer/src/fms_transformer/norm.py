"""Normalisation layers: LayerNorm and RMSNorm, written out.

**LayerNorm** (Ba et al. 2016) standardises each token's features, then rescales:

$$\\mathrm{LN}(x) = \\gamma \\odot \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} + \\beta, \\qquad
  \\mu = \\tfrac1d \\sum_i x_i, \\quad \\sigma^2 = \\tfrac1d \\sum_i (x_i - \\mu)^2 .$$

**RMSNorm** (Zhang & Sennrich 2019) drops the centring and the bias; it is cheaper and works as
well in practice (Llama, Mistral, Gemma):

$$\\mathrm{RMSNorm}(x) = \\gamma \\odot \\frac{x}{\\sqrt{\\tfrac1d \\sum_i x_i^2 + \\epsilon}} .$$

Both compute their statistics in float32 when given float16/bfloat16 inputs (as Hugging Face's
Llama does), then cast back. Parameters are `weight` (and `bias`), matching PyTorch and Hugging Face
state-dict keys.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LayerNorm", "NormError", "RMSNorm"]


class NormError(ValueError):
    """Input whose last dimension does not match the normalised size."""


def _check(x: Tensor, d: int, name: str) -> None:
    if x.shape[-1] != d:
        raise NormError(f"{name} expects input (..., {d}), got shape {tuple(x.shape)}")


class LayerNorm(nn.Module):
    """Layer normalisation over the last dimension.

    Args:
        d: Size of the normalised (last) dimension.
        eps: $\\epsilon$ added to the variance.
        bias: Learn the shift $\\beta$ (set False for the bias-free variant).
    """

    def __init__(self, d: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.d, self.eps = d, eps
        self.weight = nn.Parameter(torch.ones(d))
        self.bias = nn.Parameter(torch.zeros(d)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        """Normalise `x` of shape `(..., d)`."""
        _check(x, self.d, "LayerNorm")
        h = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        mean = h.mean(dim=-1, keepdim=True)
        var = (h - mean).pow(2).mean(dim=-1, keepdim=True)  # biased, as in the paper
        y = ((h - mean) * torch.rsqrt(var + self.eps)).to(x.dtype) * self.weight
        return y if self.bias is None else y + self.bias


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last dimension.

    Args:
        d: Size of the normalised (last) dimension.
        eps: $\\epsilon$ added to the mean square.
    """

    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.d, self.eps = d, eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise `x` of shape `(..., d)`."""
        _check(x, self.d, "RMSNorm")
        h = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        h = h * torch.rsqrt(h.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)
