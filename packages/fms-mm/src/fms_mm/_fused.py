r"""The fast path of the vision towers: PyTorch's fused kernels for the same maths.

fms-transformer's modules spell every operation out (a LayerNorm is a mean, a variance, a
division and a scale: several kernels forward and several more backward; GELU is
$\tfrac{x}{2}(1 + \mathrm{erf}(x/\sqrt2))$ in five). `use_fused_kernels` swaps them, in place,
for modules with the same parameters under the same names that compute the same function with
fewer kernels:

- `LayerNorm` -> `F.layer_norm` (one kernel each way);
- the MLP's exact GELU -> `F.gelu`;
- the MLP's QuickGELU $x\,\sigma(1.702x)$ -> one autograd function whose backward is the
  derivative written out, $\sigma\,(1 + 1.702\,x\,(1 - \sigma))$, instead of autograd's chain
  through three operations;
- `Dropout(p=0)` -> `Identity` (a no-op call fewer per sub-layer per step).

The parity tests against transformers run through this path, and a test checks it against the
reference modules it replaces.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fms_transformer.ffn import MLP
from fms_transformer.norm import LayerNorm

QUICK_GELU_ALPHA = 1.702
"""The slope inside QuickGELU's sigmoid (Hendrycks & Gimpel 2016; OpenAI's CLIP)."""


class _FusedLayerNorm(LayerNorm):
    """[fms_transformer.norm.LayerNorm][] computed by PyTorch's fused `F.layer_norm` kernel."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (self.d,), self.weight, self.bias, self.eps)


class _QuickGELU(torch.autograd.Function):
    r"""$y = x\,\sigma(\alpha x)$ with $\frac{dy}{dx} = \sigma\,(1 + \alpha x (1 - \sigma))$.

    The forward keeps $\alpha x$ and $\sigma$; the backward is two new tensors and three in-place
    updates (autograd's chain through the product, the sigmoid and the scale allocates more).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ax = x * QUICK_GELU_ALPHA
        s = torch.sigmoid(ax)
        ctx.save_for_backward(ax, s)
        return x * s

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        ax, s = ctx.saved_tensors
        slope = (1.0 - s).mul_(ax).add_(1.0)  # 1 + a x (1 - s)
        return grad.mul(s).mul_(slope)


def quick_gelu(x: Tensor) -> Tensor:
    """QuickGELU with its derivative written out (same values as `fms_transformer.ffn.quick_gelu`)."""
    out: Tensor = _QuickGELU.apply(x)
    return out


def _exact_gelu(x: Tensor) -> Tensor:
    return F.gelu(x)


_FAST_ACTIVATIONS = {"gelu": _exact_gelu, "quick_gelu": quick_gelu}


def use_fused_kernels(module: nn.Module) -> None:
    """Swap, in place, every reference LayerNorm, GELU/QuickGELU activation and zero dropout
    under `module` for its fused equivalent (same parameters, same names, same function)."""
    for name, child in list(module.named_children()):
        if type(child) is LayerNorm:
            fused = _FusedLayerNorm(child.d, child.eps, bias=child.bias is not None)
            fused.load_state_dict(child.state_dict())
            setattr(module, name, fused.to(child.weight.device, child.weight.dtype))
            continue
        if type(child) is nn.Dropout and child.p == 0.0:
            setattr(module, name, nn.Identity())
            continue
        if type(child) is MLP and child.activation in _FAST_ACTIVATIONS:
            child.act = _FAST_ACTIVATIONS[child.activation]
        use_fused_kernels(child)
