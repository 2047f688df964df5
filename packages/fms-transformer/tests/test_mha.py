"""MultiHeadAttention against `torch.nn.MultiheadAttention`, and the KV cache against full passes."""

from __future__ import annotations

import pytest
import torch

from fms_transformer.attention import AttentionInputError, MultiHeadAttention
from fms_transformer.kv_cache import KVCache, KVCacheError


def _copy_from_torch(ours: MultiHeadAttention, ref: torch.nn.MultiheadAttention) -> None:
    d = ours.d_model
    with torch.no_grad():
        if ref.in_proj_weight is not None:
            wq, wk, wv = ref.in_proj_weight.split(d)
        else:
            wq, wk, wv = ref.q_proj_weight, ref.k_proj_weight, ref.v_proj_weight
        ours.q_proj.weight.copy_(wq)
        ours.k_proj.weight.copy_(wk)
        ours.v_proj.weight.copy_(wv)
        bq, bk, bv = ref.in_proj_bias.split(d)
        ours.q_proj.bias.copy_(bq)
        ours.k_proj.bias.copy_(bk)
        ours.v_proj.bias.copy_(bv)
        ours.out_proj.weight.copy_(ref.out_proj.weight)
        ours.out_proj.bias.copy_(ref.out_proj.bias)


@pytest.mark.parametrize("backend", ["naive", "tiled", "torch"])
def test_self_attention_equals_torch_multiheadattention_1e5(backend: str) -> None:
    """Copied weights; causal + key padding; forward 1e-5, input gradient 1e-4."""
    d, h, batch, seq = 32, 4, 3, 11
    ref = torch.nn.MultiheadAttention(d, h, batch_first=True)
    ours = MultiHeadAttention(d, h, backend=backend, block_size=4)  # type: ignore[arg-type]
    _copy_from_torch(ours, ref)
    x = torch.randn(batch, seq, d, requires_grad=True)
    lengths = torch.tensor([11, 7, 9])
    pad = torch.arange(seq) >= lengths.unsqueeze(-1)  # torch: True = ignore
    causal_block = torch.triu(torch.ones(seq, seq, dtype=torch.bool), 1)  # torch: True = ignore
    expected, _ = ref(x, x, x, key_padding_mask=pad, attn_mask=causal_block, need_weights=False)
    mask = (~pad).view(batch, 1, 1, seq)  # ours: True = attend
    out = ours(x, mask=mask, is_causal=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    g = torch.randn_like(out)
    (ga,) = torch.autograd.grad(out, x, g)
    (gb,) = torch.autograd.grad(expected, x, g)
    torch.testing.assert_close(ga, gb, atol=1e-4, rtol=0)


def test_cross_attention_with_other_kv_dim_equals_torch_1e5() -> None:
    d, kdim, h = 16, 24, 2
    ref = torch.nn.MultiheadAttention(d, h, batch_first=True, kdim=kdim, vdim=kdim)
    ours = MultiHeadAttention(d, h, kv_dim=kdim)
    _copy_from_torch(ours, ref)
    x, mem = torch.randn(2, 5, d), torch.randn(2, 9, kdim)
    expected, _ = ref(x, mem, mem, need_weights=False)
    torch.testing.assert_close(ours(x, key_value=mem), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_gqa_equals_mha_with_repeated_kv_weights_1e5(n_kv_heads: int) -> None:
    """GQA == MHA whose k/v projections repeat each kv head for its group of query heads."""
    d, h = 32, 4
    gqa = MultiHeadAttention(d, h, n_kv_heads)
    mha = MultiHeadAttention(d, h)
    group, hd = h // n_kv_heads, d // h
    with torch.no_grad():
        mha.q_proj.load_state_dict(gqa.q_proj.state_dict())
        mha.out_proj.load_state_dict(gqa.out_proj.state_dict())
        for name in ("k_proj", "v_proj"):
            src = getattr(gqa, name)
            w = src.weight.view(n_kv_heads, hd, d).repeat_interleave(group, 0).reshape(d, d)
            b = src.bias.view(n_kv_heads, hd).repeat_interleave(group, 0).reshape(d)
            getattr(mha, name).weight.copy_(w)
            getattr(mha, name).bias.copy_(b)
    x = torch.randn(2, 7, d)
    for backend in ("naive", "tiled", "torch"):
        gqa.backend = backend  # type: ignore[assignment]
        torch.testing.assert_close(
            gqa(x, is_causal=True), mha(x, is_causal=True), atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("positional", [None, "rope", "alibi"])
@pytest.mark.parametrize("backend", ["naive", "tiled", "torch"])
def test_incremental_decoding_equals_full_forward_token_by_token_1e5(
    positional: str | None, backend: str
) -> None:
    """Feeding tokens one at a time (and in chunks) through the cache == one causal pass."""
    torch.manual_seed(1)
    attn = MultiHeadAttention(
        32,
        4,
        2,
        positional=positional,
        backend=backend,
        block_size=3,  # type: ignore[arg-type]
    )
    x = torch.randn(2, 9, 32)
    full = attn(x, is_causal=True)
    cache = KVCache(1)
    steps = [attn(x[:, t : t + 1], is_causal=True, kv_cache=cache) for t in range(9)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)
    assert cache.offset == 9
    cache = KVCache(1)
    chunks = [attn(x[:, a:b], is_causal=True, kv_cache=cache) for a, b in ((0, 4), (4, 5), (5, 9))]
    torch.testing.assert_close(torch.cat(chunks, 1), full, atol=1e-5, rtol=0)


def test_cross_attention_cache_computes_memory_once() -> None:
    attn = MultiHeadAttention(16, 2)
    x, mem = torch.randn(1, 3, 16), torch.randn(1, 5, 16)
    cache = KVCache(1)
    a = attn(x, key_value=mem, kv_cache=cache)
    k_cached = cache.layer(0)
    b = attn(x, key_value=mem * 0, kv_cache=cache)  # memory ignored: cached keys/values reused
    torch.testing.assert_close(a, b)
    assert k_cached is not None
    assert cache.layer(0)[0] is k_cached[0]


def test_record_attention_keeps_probabilities() -> None:
    attn = MultiHeadAttention(16, 2)
    attn.record_attention = True
    attn(torch.randn(1, 4, 16), is_causal=True)
    w = attn.last_attention
    assert w is not None
    assert w.shape == (1, 2, 4, 4)
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 2, 4))
    assert torch.all(w[..., 0, 1:] == 0)


def test_kv_cache_crop_reorder_reset() -> None:
    cache = KVCache(2)
    k = torch.arange(2 * 1 * 4 * 1, dtype=torch.float32).view(2, 1, 4, 1)
    for layer in range(2):
        cache.append(layer, k, k)
    cache.crop(3)
    assert cache.offset == 3
    cache.reorder(torch.tensor([1, 1]))
    layer0 = cache.layer(0)
    assert layer0 is not None
    assert torch.equal(layer0[0][0], layer0[0][1])
    cache.reset()
    assert cache.offset == 0
    assert cache.layer(1) is None


def test_mha_and_cache_bad_input() -> None:
    with pytest.raises(AttentionInputError, match="n_heads=6 is not divisible by n_kv_heads=4"):
        MultiHeadAttention(48, 6, 4)
    with pytest.raises(AttentionInputError, match="d_model=10 is not divisible by n_heads=4"):
        MultiHeadAttention(10, 4)
    attn = MultiHeadAttention(16, 2)
    with pytest.raises(AttentionInputError, match=r"d_model=16\), got shape \(2, 3, 8\)"):
        attn(torch.randn(2, 3, 8))
    with pytest.raises(AttentionInputError, match="ambiguous"):
        attn(torch.randn(2, 3, 16), mask=torch.ones(2, 3, 3, dtype=torch.bool))
    with pytest.raises(AttentionInputError, match=r"attn_mask has shape \(3, 4\)"):
        attn(torch.randn(2, 3, 16), mask=torch.ones(3, 4, dtype=torch.bool), is_causal=False)
    cache = KVCache(1)
    with pytest.raises(KVCacheError, match="layer index 1 out of range"):
        cache.append(1, torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4))
    cache.append(0, torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))
    with pytest.raises(KVCacheError, match=r"new keys \(1, 3, 1, 4\).*\(1, 2, 1, 4\)"):
        cache.append(0, torch.zeros(1, 3, 1, 4), torch.zeros(1, 3, 1, 4))


@torch.no_grad()
def test_preallocated_cache_equals_growing_cache_and_rejects_overflow() -> None:
    """`KVCache(max_len=...)` fills buffers in place: same outputs as concatenation."""
    attn = MultiHeadAttention(32, 4, 2, positional="rope").eval()
    x = torch.randn(2, 7, 32)
    full = attn(x, is_causal=True)
    cache = KVCache(1, max_len=8)
    steps = [attn(x[:, t : t + 1], is_causal=True, kv_cache=cache) for t in range(7)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)
    layer = cache.layer(0)
    assert layer is not None
    assert layer[0].shape == (2, 2, 7, 8)
    assert layer[0].untyped_storage().nbytes() == 2 * 2 * 8 * 8 * 4  # one buffer, never regrown
    cache.reorder(torch.tensor([1, 0]))
    cache.crop(5)
    assert cache.offset == 5
    with pytest.raises(KVCacheError, match=r"would hold 9 tokens, more than max_len=8"):
        cache.append(0, torch.zeros(2, 2, 4, 8), torch.zeros(2, 2, 4, 8))
