"""Blocks and models: EncoderDecoder against `torch.nn.Transformer`, decoder-only with a cache."""

from __future__ import annotations

import math

import pytest
import torch

from fms_transformer.blocks import BlockError, DecoderBlock, EncoderBlock
from fms_transformer.init import init_gpt2_, init_small_, init_xavier_
from fms_transformer.kv_cache import KVCache
from fms_transformer.models import EncoderDecoder, ModelError, TransformerLM


def _torch_to_fms_state(ref_state: dict[str, torch.Tensor], d: int) -> dict[str, torch.Tensor]:
    """Rename/split a `torch.nn.Transformer` state dict into our parameter names."""
    renames = {
        "linear1": "ffn.up_proj",
        "linear2": "ffn.down_proj",
        "multihead_attn": "cross_attn",
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in ref_state.items():
        stack = key.split(".")[0]
        is_decoder = stack == "decoder"
        new = key
        for a, b in renames.items():
            new = new.replace(f".{a}.", f".{b}.")
        norm_names = (
            {"norm1": "attn_norm", "norm2": "cross_norm", "norm3": "ffn_norm"}
            if is_decoder
            else {"norm1": "attn_norm", "norm2": "ffn_norm"}
        )
        for a, b in norm_names.items():
            new = new.replace(f".{a}.", f".{b}.")
        if new.endswith(("in_proj_weight", "in_proj_bias")):
            prefix, kind = new.rsplit(".", 1)
            suffix = "weight" if kind == "in_proj_weight" else "bias"
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.split(d), strict=True):
                out[f"{prefix}.{name}.{suffix}"] = part
        else:
            out[new] = value
    return out


@pytest.mark.filterwarnings("ignore:enable_nested_tensor:UserWarning")
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_decoder_equals_torch_transformer_fwd_1e5_grad_1e4(norm_first: bool) -> None:
    """Copied weights, post-norm and pre-norm, source padding + causal target."""
    d, h, ff = 32, 4, 64
    ref = torch.nn.Transformer(d, h, 2, 2, ff, dropout=0.0, batch_first=True, norm_first=norm_first)
    ours = EncoderDecoder(d, h, 2, 2, ff, final_norm=True, ffn="relu_mlp", norm_first=norm_first)
    ours.load_state_dict(_torch_to_fms_state(ref.state_dict(), d), strict=True)
    src = torch.randn(2, 7, d, requires_grad=True)
    tgt = torch.randn(2, 5, d, requires_grad=True)
    src_pad = torch.tensor([[False] * 7, [False] * 4 + [True] * 3])  # torch: True = padding
    causal = torch.nn.Transformer.generate_square_subsequent_mask(5)
    expected = ref(
        src, tgt, tgt_mask=causal, src_key_padding_mask=src_pad,
        memory_key_padding_mask=src_pad, tgt_is_causal=True,
    )  # fmt: skip
    keep = (~src_pad).view(2, 1, 1, 7)  # ours: True = attend
    out = ours(src, tgt, src_mask=keep, memory_mask=keep)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    g = torch.randn_like(out)
    ga = torch.autograd.grad(out, (src, tgt), g)
    gb = torch.autograd.grad(expected, (src, tgt), g)
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_encoder_decoder_incremental_decoding_equals_full_1e5() -> None:
    model = EncoderDecoder(16, 2, 1, 2, 32, positional="rope").eval()
    src, tgt = torch.randn(2, 6, 16), torch.randn(2, 5, 16)
    memory = model.encode(src)
    full = model.decode(tgt, memory)
    cache, cross = KVCache(2), KVCache(2)
    steps = [
        model.decode(tgt[:, t : t + 1], memory, kv_cache=cache, cross_kv_cache=cross)
        for t in range(5)
    ]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("positional", ["none", "sinusoidal", "learned", "rope", "alibi"])
def test_decoder_only_lm_cache_equals_full_forward_token_by_token_1e5(positional: str) -> None:
    """Logits from one token at a time through the KV cache == logits of the full causal pass."""
    model = TransformerLM(13, 32, 2, 4, positional=positional, max_len=32)  # type: ignore[arg-type]
    init_gpt2_(model, n_layers=2)
    model.eval()
    x = torch.randint(0, 13, (2, 10))
    full = model(x)
    cache = KVCache(2)
    steps = [model(x[:, t : t + 1], kv_cache=cache) for t in range(10)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)
    generated = model.generate(x[:, :3], 4)
    assert generated.shape == (2, 7)
    torch.testing.assert_close(generated[:, :3], x[:, :3])
    greedy = model(generated[:, :-1]).argmax(-1)[:, 2:]
    torch.testing.assert_close(generated[:, 3:], greedy)


def test_gpt2_and_llama_block_layouts_have_plain_parameter_names() -> None:
    gpt2 = DecoderBlock(16, 2, 64, cross_attention=False, ffn="gelu_tanh_mlp")
    assert {n for n, _ in gpt2.named_parameters()} == {
        "attn_norm.weight", "attn_norm.bias", "ffn_norm.weight", "ffn_norm.bias",
        *(f"self_attn.{p}_proj.{w}" for p in ("q", "k", "v", "out") for w in ("weight", "bias")),
        "ffn.up_proj.weight", "ffn.up_proj.bias", "ffn.down_proj.weight", "ffn.down_proj.bias",
    }  # fmt: skip
    llama = DecoderBlock(
        16, 4, 40, n_kv_heads=2, cross_attention=False, norm="rmsnorm", ffn="swiglu",
        bias=False, positional="rope",
    )  # fmt: skip
    names = {n for n, _ in llama.named_parameters()}
    assert "ffn.gate_proj.weight" in names
    assert not any(n.endswith("bias") for n in names)
    assert llama.self_attn.k_proj.weight.shape == (8, 16)


def test_post_norm_block_normalises_its_output() -> None:
    block = EncoderBlock(16, 2, 32, norm_first=False)
    y = block(torch.randn(3, 5, 16) * 10)
    torch.testing.assert_close(y.mean(-1), torch.zeros(3, 5), atol=1e-5, rtol=0)


def test_init_schemes() -> None:
    model = TransformerLM(50, 64, 4, 4, positional="learned")
    init_gpt2_(model, n_layers=4)
    out_std = model.decoder.layers[0].self_attn.out_proj.weight.std().item()
    q_std = model.decoder.layers[0].self_attn.q_proj.weight.std().item()
    assert abs(q_std - 0.02) < 0.003
    assert abs(out_std - 0.02 / math.sqrt(8)) < 0.001
    init_small_(model, 64, 4)
    assert abs(model.embed.weight.std().item() - math.sqrt(2 / 320)) < 0.01
    init_xavier_(model)
    w = model.decoder.layers[0].ffn.up_proj.weight
    assert w.abs().max().item() <= math.sqrt(6 / (64 + 256)) + 1e-6
    assert torch.all(model.decoder.layers[0].attn_norm.weight == 1)


def test_block_and_model_bad_input() -> None:
    with pytest.raises(BlockError, match="norm must be"):
        EncoderBlock(8, 2, 16, norm="batchnorm")  # type: ignore[arg-type]
    with pytest.raises(BlockError, match="ffn must be"):
        EncoderBlock(8, 2, 16, ffn="moe")  # type: ignore[arg-type]
    with pytest.raises(BlockError, match="pass memory"):
        DecoderBlock(8, 2, 16)(torch.randn(1, 2, 8))
    with pytest.raises(BlockError, match="no cross-attention"):
        DecoderBlock(8, 2, 16, cross_attention=False)(
            torch.randn(1, 2, 8), memory=torch.randn(1, 2, 8)
        )
    with pytest.raises(ModelError, match="positional"):
        TransformerLM(5, 8, 1, 2, positional="xpos")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=r"tokens must be \(batch, seq\), got shape \(3,\)"):
        TransformerLM(5, 8, 1, 2)(torch.tensor([1, 2, 3]))
