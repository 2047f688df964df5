"""Decoder-only language models: GPT-2 and Llama, one network, two configs.

- [fms_llm.models.gpt][]: the configs and the model, read top-down;
- [fms_llm.models.hf][]: the Hugging Face `config.json` + `model.safetensors` round trip.
"""

from fms_llm.models.gpt import (
    GPT,
    GPTConfig,
    Llama,
    LlamaConfig,
    ModelConfig,
    ModelConfigError,
    lm_loss,
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
    "lm_loss",
    "load_pretrained",
]
