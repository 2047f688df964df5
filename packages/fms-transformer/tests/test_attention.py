"""Naive and tiled attention against `torch.nn.functional.scaled_dot_product_attention`.

Tolerances: float32 forward 1e-5 and gradients 1e-4 (absolute, inputs of unit scale); float64
forward and gradients 1e-10.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from fms_transformer.attention import (
    AttentionInputError,
    attention_weights,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
    tiled_attention,
)

TOL = {torch.float32: (1e-5, 1e-4), torch.float64: (1e-10, 1e-10)}


@st.composite
def attention_case(draw: st.DrawFn) -> dict[str, object]:
    lead = draw(st.lists(st.integers(1, 2), min_size=0, max_size=2))
    h_kv = draw(st.integers(1, 3))
    group = draw(st.integers(1, 3))
    l_q = draw(st.integers(1, 19))
    l_k = draw(st.integers(1, 19))
    e = draw(st.sampled_from([4, 8]))
    e_v = draw(st.sampled_from([4, 6]))
    mask_kind = draw(st.sampled_from(["none", "bool", "float", "causal"]))
    # broadcastable mask shape: each dim of (..., H_q, L_q, L_k) kept or set to 1
    full = [*lead, h_kv * group, l_q, l_k]
    mask_shape = [d if draw(st.booleans()) else 1 for d in full]
    mask_shape = mask_shape[draw(st.integers(0, len(full) - 2)) :]  # may drop leading dims
    return {
        "lead": lead,
        "h_kv": h_kv,
        "group": group,
        "l_q": l_q,
        "l_k": l_k,
        "e": e,
        "e_v": e_v,
        "mask_kind": mask_kind,
        "mask_shape": mask_shape,
        "block": draw(st.integers(1, 8)),
        "block_k": draw(st.integers(1, 8)),
        "seed": draw(st.integers(0, 2**16)),
    }


def _make(case: dict[str, object], dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(int(case["seed"]))  # type: ignore[call-overload]
    lead = list(case["lead"])  # type: ignore[call-overload]
    h_kv, group = int(case["h_kv"]), int(case["group"])  # type: ignore[call-overload]
    l_q, l_k, e, e_v = (int(case[n]) for n in ("l_q", "l_k", "e", "e_v"))  # type: ignore[call-overload]
    q = torch.randn(*lead, h_kv * group, l_q, e, generator=g, dtype=dtype, requires_grad=True)
    k = torch.randn(*lead, h_kv, l_k, e, generator=g, dtype=dtype, requires_grad=True)
    v = torch.randn(*lead, h_kv, l_k, e_v, generator=g, dtype=dtype, requires_grad=True)
    shape = list(case["mask_shape"])  # type: ignore[call-overload]
    kind = case["mask_kind"]
    if kind == "bool":
        mask = torch.rand(*shape, generator=g) > 0.3
        mask[..., 0] = (
            True  # keep every row attendable: PyTorch's fused kernels return nan otherwise
        )
    elif kind == "float":
        mask = torch.randn(*shape, generator=g, dtype=dtype)
    else:
        mask = None
    return q, k, v, mask


def _reference(q, k, v, mask, causal):  # type: ignore[no-untyped-def]
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=q.shape[-3] != k.shape[-3]
    )


def _check_against_torch(case: dict[str, object], dtype: torch.dtype, impl: str) -> None:
    q, k, v, mask = _make(case, dtype)
    causal = case["mask_kind"] == "causal"
    ref = _reference(q, k, v, mask, causal)
    if impl == "naive":
        out = scaled_dot_product_attention(q, k, v, mask, causal)
    else:
        out = tiled_attention(
            q, k, v, mask, causal, block_size=int(case["block"]),  # type: ignore[call-overload]
            block_size_k=int(case["block_k"]),  # type: ignore[call-overload]
        )  # fmt: skip
    fwd_tol, grad_tol = TOL[dtype]
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=fwd_tol, rtol=0)
    grad_out = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad_out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    for ours, theirs in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(ours, theirs, atol=grad_tol, rtol=0)


@pytest.mark.parametrize("impl", ["naive", "tiled"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@settings(max_examples=25, deadline=None)
@given(case=attention_case())
def test_matches_torch_sdpa_fwd_1e5_grad_1e4_f32_1e10_f64(
    impl: str, dtype: torch.dtype, case: dict[str, object]
) -> None:
    """Naive/tiled vs `F.scaled_dot_product_attention`: shapes, masks, causal, GQA (hypothesis)."""
    _check_against_torch(case, dtype, impl)


@pytest.mark.parametrize("impl", [scaled_dot_product_attention, tiled_attention])
def test_fully_masked_rows_give_zeros_like_torch_math_backend(impl) -> None:  # type: ignore[no-untyped-def]
    """A query that may attend nothing returns 0 (PyTorch's math backend convention), no nan."""
    q, k, v = (torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.ones(5, 5, dtype=torch.bool)
    mask[2] = False
    out = impl(q, k, v, mask)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    assert torch.all(out[..., 2, :] == 0)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()
    assert torch.all(q.grad[..., 2, :] == 0)


def test_mask_and_causal_combined_equals_merged_mask_1e12() -> None:
    """Unlike PyTorch we accept mask and is_causal together: equal to the AND of the two masks."""
    q, k, v = (torch.randn(2, 3, 7, 4, dtype=torch.float64) for _ in range(3))
    mask = torch.rand(2, 1, 7, 7) > 0.4
    mask[..., 0] = True
    merged = mask & causal_mask(7, 7)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=merged)
    for impl in (scaled_dot_product_attention, tiled_attention):
        torch.testing.assert_close(impl(q, k, v, mask, True), ref, atol=1e-12, rtol=0)


def test_tiled_float64_gradcheck_with_additive_mask_and_dropout() -> None:
    """`torch.autograd.gradcheck` (finite differences) of the tiled backward, mask gradient too."""
    q = torch.randn(1, 2, 6, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 1, 7, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 1, 7, 3, dtype=torch.float64, requires_grad=True)
    m = torch.randn(1, 1, 6, 7, dtype=torch.float64, requires_grad=True)

    def f(q, k, v, m):  # type: ignore[no-untyped-def]
        return tiled_attention(q, k, v, m, True, dropout_p=0.25, dropout_seed=3, block_size=4)

    assert torch.autograd.gradcheck(f, (q, k, v, m))


def test_dropout_naive_and_tiled_drop_the_same_entries_1e12() -> None:
    """The counter-based dropout mask is independent of tiling: naive == tiled for one seed."""
    q = torch.randn(2, 4, 9, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 2, 11, 8, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 2, 11, 8, dtype=torch.float64, requires_grad=True)
    a = scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=0.3, dropout_seed=11)
    b = tiled_attention(q, k, v, None, True, dropout_p=0.3, dropout_seed=11, block_size=4)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    ga = torch.autograd.grad(a.square().sum(), (q, k, v))
    gb = torch.autograd.grad(b.square().sum(), (q, k, v))
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y, atol=1e-12, rtol=0)
    c = scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=0.3, dropout_seed=12)
    assert not torch.allclose(a, c)


def test_dropout_keeps_expected_fraction_and_is_unbiased() -> None:
    """Kept fraction ~ 1-p (binomial, 6 sigma) and E[output] ~ the no-dropout output."""
    q = torch.zeros(1, 1, 200, 4)  # uniform attention over 200 keys
    k = torch.randn(1, 1, 200, 4)
    v = torch.ones(1, 1, 200, 1)
    out = tiled_attention(q, k, v, dropout_p=0.2, dropout_seed=1, block_size=64)
    kept = out.sum() * 0.8  # each kept entry contributes (1/200) / 0.8
    n, p = 200 * 200, 0.8
    assert abs(float(kept) * 200 - n * p) < 6 * math.sqrt(n * p * (1 - p))
    assert abs(float(out.mean()) - 1.0) < 0.02


def test_attention_weights_rows_sum_to_one_and_match_softmax() -> None:
    q, k = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 6, 4)
    w = attention_weights(q, k)
    torch.testing.assert_close(w, torch.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1))


def test_low_precision_inputs_run_in_float32_and_return_input_dtype() -> None:
    q, k, v = (torch.randn(1, 2, 16, 8) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    out = tiled_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), is_causal=True, block_size=4)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=0)


def test_padding_mask_shape_and_values() -> None:
    m = padding_mask(torch.tensor([2, 3]), 4)
    assert m.shape == (2, 1, 1, 4)
    assert m[0, 0, 0].tolist() == [True, True, False, False]


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("impl", [scaled_dot_product_attention, tiled_attention])
def test_mismatched_head_dims_name_the_shapes(impl) -> None:  # type: ignore[no-untyped-def]
    q, k, v = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    with pytest.raises(AttentionInputError, match=r"head_dim.*\(1, 2, 3, 8\).*\(1, 2, 3, 4\)"):
        impl(q, k, v)


@pytest.mark.parametrize("impl", [scaled_dot_product_attention, tiled_attention])
def test_heads_not_divisible_names_the_counts(impl) -> None:  # type: ignore[no-untyped-def]
    q, k = torch.randn(1, 3, 4, 8), torch.randn(1, 2, 4, 8)
    with pytest.raises(AttentionInputError, match=r"query heads \(3.*key/value heads \(2"):
        impl(q, k, k)


@pytest.mark.parametrize("impl", [scaled_dot_product_attention, tiled_attention])
def test_mask_of_wrong_shape_names_the_shapes(impl) -> None:  # type: ignore[no-untyped-def]
    q = torch.randn(2, 2, 4, 8)
    with pytest.raises(AttentionInputError, match=r"attn_mask has shape \(3, 4\).*\(2, 2, 4, 4\)"):
        impl(q, q, q, torch.ones(3, 4, dtype=torch.bool))


@pytest.mark.parametrize("impl", [scaled_dot_product_attention, tiled_attention])
def test_mask_of_wrong_dtype_names_the_dtype(impl) -> None:  # type: ignore[no-untyped-def]
    q = torch.randn(2, 2, 4, 8)
    with pytest.raises(AttentionInputError, match=r"attn_mask must be bool.*torch.int64"):
        impl(q, q, q, torch.ones(4, 4, dtype=torch.int64))
    with pytest.raises(AttentionInputError, match=r"torch.float64"):
        impl(q, q, q, torch.zeros(4, 4, dtype=torch.float64))


def test_other_bad_inputs() -> None:
    q = torch.randn(2, 2, 4, 8)
    with pytest.raises(AttentionInputError, match=r"at least 3 dims, got shape \(4, 8\)"):
        scaled_dot_product_attention(q[0, 0], q[0, 0], q[0, 0])
    with pytest.raises(AttentionInputError, match="dropout_p"):
        tiled_attention(q, q, q, dropout_p=1.0)
    with pytest.raises(AttentionInputError, match="block sizes"):
        tiled_attention(q, q, q, block_size=0)
    with pytest.raises(AttentionInputError, match="leading"):
        tiled_attention(q, q[:1], q[:1])
    with pytest.raises(AttentionInputError, match=r"k and v.*\(2, 2, 4, 8\).*\(2, 2, 5, 8\)"):
        tiled_attention(q, q, torch.randn(2, 2, 5, 8))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tiled_on_cuda_matches_torch_sdpa_fwd_1e5_grad_1e4() -> None:
    """The tiled kernel is device-agnostic PyTorch: same result on CUDA (float32, TF32 off)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    q = torch.randn(2, 4, 300, 32, device="cuda", requires_grad=True)
    k = torch.randn(2, 2, 300, 32, device="cuda", requires_grad=True)
    v = torch.randn(2, 2, 300, 32, device="cuda", requires_grad=True)
    out = tiled_attention(q, k, v, is_causal=True, block_size=64, dropout_p=0.0)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    g = torch.randn_like(ref)
    for a, b in zip(
        torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g), strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


@pytest.mark.parametrize("impl", [scaled_dot_product_attention, tiled_attention])
def test_custom_scale_matches_torch_1e12(impl) -> None:  # type: ignore[no-untyped-def]
    q, k, v = (torch.randn(3, 2, 9, 8, dtype=torch.float64) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3)
    torch.testing.assert_close(impl(q, k, v, None, True, 0.3), ref, atol=1e-12, rtol=0)
