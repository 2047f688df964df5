"""Decoder-only language models: GPT-2 and Llama, one network, two configs.

- [fms_llm.models.gpt][]: the configs and the model, read top-down;
- [fms_llm.models.fused][]: hand-derived backward passes for RMSNorm and for the head fused with
  the cross-entropy;
- [fms_llm.models.decode][]: incremental decoding as plain function calls (what `generate` runs);
- [fms_llm.models.hf][]: the Hugging Face `config.json` + `model.safetensors` round trip.
"""

from fms_llm.models.fused import linear_cross_entropy, rms_norm
from fms_llm.models.gpt import (
    GPT,
    GPTConfig,
    Llama,
    LlamaConfig,
    ModelConfig,
    ModelConfigError,
)
from fms_llm.models.hf import ModelFileError, load_pretrained

__all__ = [
    "GPT",
    "GPTConfig",
    "Llama",
    "LlamaConfig",
    "ModelConfig",
    "ModelConfigError",
    "ModelFileError",
    "linear_cross_entropy",
    "load_pretrained",
    "rms_norm",
]
