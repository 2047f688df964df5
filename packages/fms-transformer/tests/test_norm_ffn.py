"""Norms against `torch.nn.LayerNorm`/`torch.nn.RMSNorm`; MLP and SwiGLU against their formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fms_transformer.blocks import make_ffn
from fms_transformer.ffn import MLP, FFNError, SwiGLU, gelu, gelu_tanh, quick_gelu, silu
from fms_transformer.norm import LayerNorm, NormError, RMSNorm


def test_rmsnorm_equals_torch_rmsnorm_fwd_and_grad_1e6() -> None:
    x = torch.randn(3, 5, 16, requires_grad=True)
    ours, ref = RMSNorm(16, eps=1e-6), torch.nn.RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        w = torch.randn(16)
        ours.weight.copy_(w)
        ref.weight.copy_(w)
    a, b = ours(x), ref(x)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    g = torch.randn_like(a)
    ga = torch.autograd.grad(a, (x, ours.weight), g)
    gb = torch.autograd.grad(b, (x, ref.weight), g)
    for u, v in zip(ga, gb, strict=True):
        torch.testing.assert_close(u, v, atol=1e-5, rtol=0)


@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_equals_torch_layernorm_fwd_and_grad_1e5(bias: bool) -> None:
    x = torch.randn(4, 7, 12, requires_grad=True) * 3 + 1
    ours, ref = LayerNorm(12, 1e-5, bias=bias), torch.nn.LayerNorm(12, 1e-5, bias=bias)
    with torch.no_grad():
        ours.weight.normal_()
        ref.weight.copy_(ours.weight)
        if bias:
            ours.bias.normal_()  # type: ignore[union-attr]
            ref.bias.copy_(ours.bias)  # type: ignore[union-attr, arg-type]
    a, b = ours(x), ref(x)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    ga = torch.autograd.grad(a.square().sum(), x)
    gb = torch.autograd.grad(b.square().sum(), x)
    torch.testing.assert_close(ga, gb, atol=1e-4, rtol=0)


def test_norms_in_bfloat16_compute_statistics_in_float32() -> None:
    x = torch.randn(2, 64) * 100
    out = RMSNorm(64).bfloat16()(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), RMSNorm(64)(x), atol=2e-2, rtol=1e-2)


def test_activations_equal_torch_1e6() -> None:
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    torch.testing.assert_close(gelu(x), F.gelu(x), atol=1e-12, rtol=0)
    torch.testing.assert_close(gelu_tanh(x), F.gelu(x, approximate="tanh"), atol=1e-12, rtol=0)
    torch.testing.assert_close(silu(x), F.silu(x), atol=1e-12, rtol=0)


def test_quick_gelu_equals_transformers_quick_gelu_1e12() -> None:
    """QuickGELU (CLIP's activation) against transformers' `QuickGELUActivation`, 1e-12 in float64;
    `make_ffn("quick_gelu_mlp")` is the MLP that uses it."""
    from transformers.activations import QuickGELUActivation

    x = torch.linspace(-8, 8, 1001, dtype=torch.float64)
    torch.testing.assert_close(quick_gelu(x), QuickGELUActivation()(x), atol=1e-12, rtol=0)
    mlp = make_ffn("quick_gelu_mlp", 8, 16)
    assert isinstance(mlp, MLP)
    assert mlp.activation == "quick_gelu"
    assert not torch.allclose(quick_gelu(x), gelu(x), atol=1e-3)  # not GELU under another name


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "relu"])
def test_mlp_equals_reference_formula_1e6(activation: str) -> None:
    mlp = MLP(8, 32, activation=activation)  # type: ignore[arg-type]
    x = torch.randn(2, 3, 8)
    h = x @ mlp.up_proj.weight.T + mlp.up_proj.bias
    if activation == "gelu":
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    elif activation == "gelu_tanh":
        h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    else:
        h = torch.where(h > 0, h, 0.0)
    ref = h @ mlp.down_proj.weight.T + mlp.down_proj.bias
    torch.testing.assert_close(mlp(x), ref, atol=1e-6, rtol=0)


def test_swiglu_equals_reference_formula_1e6() -> None:
    f = SwiGLU(8, 24)
    x = torch.randn(2, 3, 8)
    gate = x @ f.gate_proj.weight.T
    ref = ((gate * torch.sigmoid(gate)) * (x @ f.up_proj.weight.T)) @ f.down_proj.weight.T
    torch.testing.assert_close(f(x), ref, atol=1e-6, rtol=0)
    assert f.gate_proj.bias is None


def test_norm_ffn_bad_input() -> None:
    with pytest.raises(NormError, match=r"RMSNorm expects input \(\.\.\., 8\), got shape \(2, 4\)"):
        RMSNorm(8)(torch.randn(2, 4))
    with pytest.raises(NormError, match="LayerNorm"):
        LayerNorm(8)(torch.randn(2, 4))
    with pytest.raises(FFNError, match="activation"):
        MLP(4, 8, activation="tanh")  # type: ignore[arg-type]
    with pytest.raises(FFNError, match="positive"):
        SwiGLU(4, 0)
