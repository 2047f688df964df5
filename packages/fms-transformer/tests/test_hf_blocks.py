"""DecoderBlock configured as GPT-2 and as Llama equals Hugging Face's layers (random weights).

Both built from configs, no download. Hugging Face layers receive an explicit additive causal
mask (in transformers 5 the model, not the layer, builds it). Tolerance 1e-5 (float32).
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, LlamaConfig
from transformers.models.gpt2.modeling_gpt2 import GPT2Block
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from fms_transformer.blocks import DecoderBlock
from fms_transformer.kv_cache import KVCache

D, HEADS, SEQ, BATCH = 64, 4, 9, 2


def _causal_additive() -> torch.Tensor:
    mask = torch.full((SEQ, SEQ), float("-inf")).triu(1)
    return mask.view(1, 1, SEQ, SEQ).expand(BATCH, 1, SEQ, SEQ)


def _randomise(module: torch.nn.Module) -> None:
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.1)


def test_llama_layout_equals_hf_llama_decoder_layer_1e5() -> None:
    """RMSNorm + GQA + split-half RoPE + SwiGLU, no biases; state dict renamed key by key."""
    cfg = LlamaConfig(
        hidden_size=D, intermediate_size=160, num_attention_heads=HEADS, num_key_value_heads=2,
        rms_norm_eps=1e-6, max_position_embeddings=64, attn_implementation="eager",
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )  # fmt: skip
    ref = LlamaDecoderLayer(cfg, layer_idx=0).eval()
    _randomise(ref)
    ours = DecoderBlock(
        D, HEADS, 160, n_kv_heads=2, cross_attention=False, norm="rmsnorm", norm_eps=1e-6,
        ffn="swiglu", bias=False, positional="rope",
    ).eval()  # fmt: skip
    renames = {
        "self_attn.o_proj": "self_attn.out_proj",
        "mlp.": "ffn.",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    state = {}
    for key, value in ref.state_dict().items():
        for a, b in renames.items():
            key = key.replace(a, b)
        state[key] = value
    ours.load_state_dict(state, strict=True)
    x = torch.randn(BATCH, SEQ, D)
    pos = torch.arange(SEQ).unsqueeze(0).expand(BATCH, -1)
    cos, sin = LlamaRotaryEmbedding(cfg)(x, pos)
    out = ref(
        x, attention_mask=_causal_additive(), position_ids=pos, position_embeddings=(cos, sin)
    )
    expected = out[0] if isinstance(out, tuple) else out
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=0)
    cache = KVCache(1)
    steps = [ours(x[:, t : t + 1], kv_cache=cache) for t in range(SEQ)]
    torch.testing.assert_close(torch.cat(steps, 1), expected, atol=1e-5, rtol=0)


def test_gpt2_layout_equals_hf_gpt2_block_1e5() -> None:
    """LayerNorm + MHA with biases + GELU-tanh MLP; GPT-2's fused, transposed Conv1D weights split."""
    cfg = GPT2Config(
        n_embd=D, n_head=HEADS, n_layer=1, n_positions=64, attn_implementation="eager",
        resid_pdrop=0.0, attn_pdrop=0.0, embd_pdrop=0.0,
    )  # fmt: skip
    ref = GPT2Block(cfg, layer_idx=0).eval()
    _randomise(ref)
    ours = DecoderBlock(
        D, HEADS, 4 * D, cross_attention=False, ffn="gelu_tanh_mlp", norm_eps=cfg.layer_norm_epsilon
    ).eval()
    r = ref.state_dict()
    state = {
        "attn_norm.weight": r["ln_1.weight"],
        "attn_norm.bias": r["ln_1.bias"],
        "ffn_norm.weight": r["ln_2.weight"],
        "ffn_norm.bias": r["ln_2.bias"],
        "self_attn.out_proj.weight": r["attn.c_proj.weight"].T,
        "self_attn.out_proj.bias": r["attn.c_proj.bias"],
        "ffn.up_proj.weight": r["mlp.c_fc.weight"].T,
        "ffn.up_proj.bias": r["mlp.c_fc.bias"],
        "ffn.down_proj.weight": r["mlp.c_proj.weight"].T,
        "ffn.down_proj.bias": r["mlp.c_proj.bias"],
    }
    w, b = r["attn.c_attn.weight"], r["attn.c_attn.bias"]
    for i, name in enumerate("qkv"):
        state[f"self_attn.{name}_proj.weight"] = w[:, i * D : (i + 1) * D].T
        state[f"self_attn.{name}_proj.bias"] = b[i * D : (i + 1) * D]
    ours.load_state_dict(state, strict=True)
    x = torch.randn(BATCH, SEQ, D)
    out = ref(x, attention_mask=_causal_additive())
    expected = out[0] if isinstance(out, tuple) else out
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=0)
