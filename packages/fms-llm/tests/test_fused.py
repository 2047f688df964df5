"""Hand-derived backward passes against autograd: RMSNorm and the fused head + cross-entropy.

Tolerances: float64 `gradcheck` (finite differences, its defaults); float32 values and
gradients against PyTorch's own `F.rms_norm` / `F.linear` + `F.cross_entropy` within 1e-5.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fms_llm.models.fused import linear_cross_entropy, rms_norm
from fms_transformer.norm import RMSNorm

TOL = 1e-5


# -- RMSNorm --------------------------------------------------------------------------------------


def test_rms_norm_gradcheck_float64() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: rms_norm(a, b, 1e-6), (x, w))


def test_rms_norm_equals_pytorch_and_the_reference_module_float32() -> None:
    """Values and both gradients against `F.rms_norm` and fms_transformer's readable RMSNorm."""
    torch.manual_seed(1)
    x = torch.randn(4, 9, 32, requires_grad=True)
    w = (1 + 0.1 * torch.randn(32)).requires_grad_()
    g = torch.randn(4, 9, 32)
    ours = rms_norm(x, w, 1e-6)
    (gx, gw) = torch.autograd.grad(ours, (x, w), g)
    ref = F.rms_norm(x, (32,), w, 1e-6)
    (rx, rw) = torch.autograd.grad(ref, (x, w), g)
    torch.testing.assert_close(ours, ref, atol=TOL, rtol=0)
    torch.testing.assert_close(gx, rx, atol=TOL, rtol=0)
    torch.testing.assert_close(gw, rw, atol=TOL, rtol=1e-5)
    module = RMSNorm(32, 1e-6)
    with torch.no_grad():
        module.weight.copy_(w)
    torch.testing.assert_close(ours, module(x), atol=TOL, rtol=0)


def test_rms_norm_without_gradients_is_the_same_function() -> None:
    torch.manual_seed(2)
    x, w = torch.randn(2, 3, 8), torch.randn(8)
    with torch.no_grad():
        plain = rms_norm(x, w)
    torch.testing.assert_close(rms_norm(x.requires_grad_(), w), plain, atol=TOL, rtol=0)


def test_rms_norm_half_precision_is_computed_in_float32() -> None:
    """bfloat16 input: statistics in float32, the result in the promoted dtype of weight * x."""
    torch.manual_seed(3)
    x = torch.randn(2, 4, 64)
    w = torch.randn(64)
    out = rms_norm(x.bfloat16().requires_grad_(), w.bfloat16().requires_grad_())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), F.rms_norm(x, (64,), w, 1e-6), atol=0.05, rtol=0.02)
    out.float().sum().backward()


def test_rms_norm_rejects_a_mismatched_weight() -> None:
    with pytest.raises(ValueError, match=r"does not end in weight's \(8,\)"):
        rms_norm(torch.randn(2, 6), torch.ones(8))


# -- linear cross-entropy -------------------------------------------------------------------------


def _reference(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(F.linear(h, w).flatten(0, -2), y.flatten())


@pytest.mark.parametrize("ignored", [False, True], ids=["all-counted", "some-ignored"])
def test_linear_cross_entropy_gradcheck_float64(ignored: bool) -> None:
    """Chunks of 5 rows over 2 x 7 tokens: several chunks, the last one short."""
    torch.manual_seed(4)
    h = torch.randn(2, 7, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(11, 6, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 11, (2, 7))
    if ignored:
        y[0, :3] = -100
    assert torch.autograd.gradcheck(
        lambda a, b: linear_cross_entropy(a, b, y, chunk_rows=5), (h, w)
    )


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, None])
def test_linear_cross_entropy_equals_pytorch_float32(chunk_rows: int | None) -> None:
    """Loss and both gradients against F.linear + F.cross_entropy, for any chunking."""
    torch.manual_seed(5)
    h = torch.randn(3, 10, 32, requires_grad=True)
    w = (0.1 * torch.randn(257, 32)).requires_grad_()
    y = torch.randint(0, 257, (3, 10))
    y[1, 4] = -100
    ours = linear_cross_entropy(h, w, y, chunk_rows=chunk_rows)
    ref = _reference(h, w, y)
    torch.testing.assert_close(ours, ref, atol=TOL, rtol=0)
    g_ours = torch.autograd.grad(3.0 * ours, (h, w))  # the incoming gradient scales both
    g_ref = torch.autograd.grad(3.0 * ref, (h, w))
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)


def test_linear_cross_entropy_gradient_of_one_input_only() -> None:
    """A frozen head (only hidden states need a gradient) and a frozen trunk (only the head)."""
    torch.manual_seed(6)
    h = torch.randn(8, 16)
    w = torch.randn(40, 16)
    y = torch.randint(0, 40, (8,))
    for need_h, need_w in [(True, False), (False, True)]:
        a, b = h.clone().requires_grad_(need_h), w.clone().requires_grad_(need_w)
        ours = linear_cross_entropy(a, b, y)
        ours.backward()
        ref_a, ref_b = h.clone().requires_grad_(need_h), w.clone().requires_grad_(need_w)
        _reference(ref_a, ref_b, y).backward()
        for got, want in [(a, ref_a), (b, ref_b)]:
            if want.grad is None:
                assert got.grad is None
            else:
                assert got.grad is not None
                torch.testing.assert_close(got.grad, want.grad, atol=TOL, rtol=0)


def test_linear_cross_entropy_without_gradients_gives_the_loss() -> None:
    torch.manual_seed(7)
    h, w, y = torch.randn(5, 8), torch.randn(30, 8), torch.randint(0, 30, (5,))
    with torch.no_grad():
        torch.testing.assert_close(
            linear_cross_entropy(h, w, y, chunk_rows=2), _reference(h, w, y), atol=TOL, rtol=0
        )


def test_every_target_ignored_gives_nan_and_zero_gradients() -> None:
    """As F.cross_entropy: the mean over no tokens is NaN; nothing flows back."""
    h = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(10, 8, requires_grad=True)
    y = torch.full((4,), -100)
    loss = linear_cross_entropy(h, w, y)
    assert torch.isnan(loss)
    assert torch.isnan(_reference(h, w, y))
    loss.backward()
    assert h.grad is not None
    assert w.grad is not None
    assert not h.grad.any()
    assert not w.grad.any()


def test_linear_cross_entropy_bad_inputs_name_the_problem() -> None:
    h, w = torch.randn(2, 3, 8), torch.randn(10, 8)
    with pytest.raises(ValueError, match=r"target id 10 is outside the vocabulary \[0, 10\)"):
        linear_cross_entropy(h, w, torch.tensor([[1, 2, 10], [0, 0, 0]]))
    with pytest.raises(ValueError, match=r"target id -3 is outside"):
        linear_cross_entropy(h, w, torch.tensor([[1, 2, -3], [0, 0, 0]]))
    with pytest.raises(ValueError, match=r"must agree in every dimension but the last"):
        linear_cross_entropy(h, w, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"weight must be \(vocab, d=8\)"):
        linear_cross_entropy(h, torch.randn(10, 7), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="targets must be int64 ids"):
        linear_cross_entropy(h, w, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="chunk_rows must be >= 1"):
        linear_cross_entropy(h, w, torch.zeros(2, 3, dtype=torch.long), chunk_rows=0)
