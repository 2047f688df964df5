"""The fused fast path of the ViT and CLIP equals fms-transformer's reference modules it replaces:
outputs within 1e-6 and every gradient within 1e-5 of its own scale (float32 rounding of sums
taken in another order), with the parameters and their names unchanged."""

from __future__ import annotations

import torch

from fms_llm.models.fused import quick_gelu
from fms_mm.clip import CLIP, CLIPConfig, CLIPTextConfig, CLIPVisionConfig
from fms_mm.vision import ViT, ViTConfig
from fms_transformer.ffn import quick_gelu as reference_quick_gelu
from fms_transformer.norm import LayerNorm


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _close_to_scale(got: torch.Tensor, want: torch.Tensor, name: str) -> None:
    """Every element within 1e-5 of the gradient's own largest magnitude (float32 sums in another
    order round differently; an element near zero cannot be held to 1e-5 of itself)."""
    err, scale = float((got - want).abs().max()), float(want.abs().max())
    assert err <= 1e-6 + 1e-5 * scale, (
        f"{name}: max error {err:.3g} for a gradient of scale {scale:.3g}"
    )


def test_quick_gelu_and_its_written_out_derivative_equal_the_reference_1e6() -> None:
    x = torch.linspace(-8, 8, 2001, dtype=torch.float64).requires_grad_()
    y = x.detach().clone().requires_grad_()
    torch.testing.assert_close(quick_gelu(x), reference_quick_gelu(y), atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(quick_gelu, (x[::50].detach().clone().requires_grad_(),))
    g = torch.randn(2001, dtype=torch.float64)
    quick_gelu(x).backward(g)
    reference_quick_gelu(y).backward(g)
    torch.testing.assert_close(x.grad, y.grad, atol=1e-12, rtol=0)


def test_fused_vit_equals_the_reference_modules_1e5() -> None:
    cfg = ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32,
                    num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    num_labels=10)  # fmt: skip
    torch.manual_seed(0)
    ref = ViT(cfg, fused=False)
    fast = ViT(cfg)
    assert any(type(m) is LayerNorm for m in ref.modules())
    assert not any(type(m) is LayerNorm for m in fast.modules())  # every norm was swapped
    assert list(dict(fast.named_parameters())) == list(dict(ref.named_parameters()))
    fast.load_state_dict(ref.state_dict())
    x, y = torch.rand(5, 1, 8, 8), torch.arange(5)
    for m in (ref, fast):
        torch.nn.functional.cross_entropy(m.logits(x), y).backward()
    torch.testing.assert_close(fast.logits(x), ref.logits(x), atol=1e-6, rtol=0)
    for name, g in _grads(ref).items():
        _close_to_scale(_grads(fast)[name], g, name)


def test_fused_clip_equals_the_reference_modules_1e5() -> None:
    cfg = CLIPConfig(
        CLIPTextConfig(vocab_size=20, max_position_embeddings=6, hidden_size=16,
                       intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                       eos_token_id=3),
        CLIPVisionConfig(image_size=8, patch_size=4, num_channels=3, hidden_size=16,
                         intermediate_size=32, num_hidden_layers=2, num_attention_heads=2),
        projection_dim=8,
    )  # fmt: skip
    torch.manual_seed(0)
    ref, fast = CLIP(cfg, fused=False), CLIP(cfg)
    fast.load_state_dict(ref.state_dict())
    pixels = torch.rand(4, 3, 8, 8)
    ids = torch.tensor(
        [[1, 5, 6, 3, 0, 0], [1, 7, 3, 0, 0, 0], [1, 8, 9, 10, 11, 3], [1, 4, 3, 0, 0, 0]]
    )
    mask = (ids != 0).long()
    losses = [m(pixels, ids, mask, return_loss=True).loss for m in (ref, fast)]
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(losses[1], losses[0], atol=1e-6, rtol=0)
    for name, g in _grads(ref).items():
        _close_to_scale(_grads(fast)[name], g, name)
