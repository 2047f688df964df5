"""fms_transformer: attention and transformer architectures from first principles.

Layer 3 of Foundation Model Systems, in PyTorch. Modules, one concept each:

- `attention`: naive scaled dot-product attention, multi-head / grouped-query attention;
- `tiled_attention`: FlashAttention's online softmax as an autograd function;
- `kv_cache`: the key/value cache for incremental decoding;
- `positional`: sinusoidal, learned, rotary (RoPE) and ALiBi positions;
- `norm`, `ffn`: LayerNorm/RMSNorm, GELU MLP/SwiGLU;
- `blocks`, `models`, `init`: encoder/decoder blocks, Encoder/Decoder/EncoderDecoder and a
  decoder-only language model, weight initialisation schemes;
- `tasks`: toy sequence tasks (copy, reverse, sort, modular addition) and their training loop.
"""

from importlib.metadata import PackageNotFoundError, version

from fms_transformer.attention import (
    AttentionInputError,
    MultiHeadAttention,
    scaled_dot_product_attention,
)
from fms_transformer.kv_cache import KVCache
from fms_transformer.tiled_attention import tiled_attention

try:
    __version__ = version("fms-transformer")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "AttentionInputError",
    "KVCache",
    "MultiHeadAttention",
    "__version__",
    "scaled_dot_product_attention",
    "tiled_attention",
]
