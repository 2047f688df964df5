"""Weight initialisation schemes for transformers.

- [`init_xavier_`][fms_transformer.init.init_xavier_]: Glorot-uniform on every matrix, biases
  zero: what `torch.nn.Transformer` does (`_reset_parameters`), and the original paper's setting.
  $W \\sim U(-a, a)$, $a = \\sqrt{6 / (n_{in} + n_{out})}$, keeping activation variance constant.
- [`init_gpt2_`][fms_transformer.init.init_gpt2_]: $\\mathcal N(0, 0.02^2)$ for weights and
  embeddings, and the residual output projections (`out_proj`, `down_proj`) scaled by
  $1/\\sqrt{2L}$ (GPT-2): each of the $2L$ residual branches adds variance to the stream, so
  shrinking them keeps the stream's variance $O(1)$ at any depth.
- [`init_small_`][fms_transformer.init.init_small_]: "small init" of Nguyen & Salazar (2019),
  $\\mathcal N(0, 2/(5d))$, with the residual projections at $2/(L\\sqrt d)$ (Wang, GPT-NeoX).

Norm weights are set to one and norm biases to zero by all three.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fms_transformer.norm import LayerNorm, RMSNorm

__all__ = ["RESIDUAL_PROJECTIONS", "init_gpt2_", "init_small_", "init_xavier_"]

RESIDUAL_PROJECTIONS = ("out_proj", "down_proj")
"""Names of the linear layers whose output is added to the residual stream."""


def _reset_norms(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, LayerNorm | RMSNorm | nn.LayerNorm | nn.RMSNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            bias = getattr(m, "bias", None)
            if bias is not None:
                nn.init.zeros_(bias)


@torch.no_grad()
def init_xavier_(model: nn.Module) -> nn.Module:
    """Xavier-uniform for every parameter with more than one dim, zeros for linear biases."""
    for name, p in model.named_parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
        elif name.endswith("bias"):
            nn.init.zeros_(p)
    _reset_norms(model)
    return model


def _normal(model: nn.Module, std: float, residual_std: float) -> nn.Module:
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            is_residual = name.rsplit(".", 1)[-1] in RESIDUAL_PROJECTIONS
            nn.init.normal_(m.weight, 0.0, residual_std if is_residual else std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, std)
    for name, p in model.named_parameters():  # bare parameters, e.g. learned position tables
        if name.endswith("pos.weight"):
            nn.init.normal_(p, 0.0, std)
    _reset_norms(model)
    return model


@torch.no_grad()
def init_gpt2_(model: nn.Module, n_layers: int, std: float = 0.02) -> nn.Module:
    """GPT-2: $\\mathcal N(0, \\sigma^2)$, residual projections $\\sigma/\\sqrt{2 L}$."""
    if n_layers <= 0:
        raise ValueError(f"n_layers must be positive, got {n_layers}")
    return _normal(model, std, std / math.sqrt(2 * n_layers))


@torch.no_grad()
def init_small_(model: nn.Module, d_model: int, n_layers: int) -> nn.Module:
    """Small init: std $\\sqrt{2/(5d)}$, residual projections $2/(L\\sqrt d)$."""
    if d_model <= 0 or n_layers <= 0:
        raise ValueError(f"d_model and n_layers must be positive, got {d_model}, {n_layers}")
    return _normal(model, math.sqrt(2 / (5 * d_model)), 2 / (n_layers * math.sqrt(d_model)))
