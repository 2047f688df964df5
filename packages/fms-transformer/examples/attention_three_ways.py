"""Attention three ways (naive, tiled with the online softmax, PyTorch's fused kernel), and a
key/value cache that decodes token by token exactly as the full causal forward pass.

Run from the repository root: `uv run python packages/fms-transformer/examples/attention_three_ways.py`.
"""

import torch
import torch.nn.functional as F

from fms_transformer.attention import (
    KVCache,
    MultiHeadAttention,
    scaled_dot_product_attention,
    tiled_attention,
)

torch.manual_seed(0)
q, k, v = (torch.randn(2, 4, 512, 32, dtype=torch.float64, requires_grad=True) for _ in range(3))

outputs = {
    "naive": scaled_dot_product_attention(q, k, v, is_causal=True),  # the full 512 x 512 scores
    "tiled": tiled_attention(q, k, v, is_causal=True, block_size=64),  # 64 x 64 tiles at a time
    "torch": F.scaled_dot_product_attention(q, k, v, is_causal=True),  # the reference
}
grads = {}
for name, out in outputs.items():
    grads[name] = torch.autograd.grad(out.square().sum(), (q, k, v))
for name in ("naive", "tiled"):
    forward = (outputs[name] - outputs["torch"]).abs().max().item()
    backward = max(
        (a - b).abs().max().item() for a, b in zip(grads[name], grads["torch"], strict=True)
    )
    print(f"{name} vs torch: output {forward:.0e}, gradients {backward:.0e}")

# Grouped-query attention (8 query heads share 2 key/value heads) with rotary positions:
# feeding 6 tokens one at a time through a cache gives the rows of one causal pass over all 6.
attn = MultiHeadAttention(64, n_heads=8, n_kv_heads=2, positional="rope", bias=False).double()
x = torch.randn(1, 6, 64, dtype=torch.float64)
with torch.no_grad():
    full = attn(x, is_causal=True)
    cache = KVCache(n_layers=1)
    steps = [attn(x[:, t : t + 1], is_causal=True, kv_cache=cache) for t in range(6)]
print(f"cached decoding vs full pass: {(torch.cat(steps, dim=1) - full).abs().max().item():.0e}")
