"""Inference for the language models of [fms_llm.models][]: a paged key/value cache
([paged][fms_llm.inference.paged]) and a forward pass over many sequences' new tokens at once
that reads and writes it ([runner][fms_llm.inference.runner]), and the continuous-batching
[engine][fms_llm.inference.engine] built on them; speculative decoding with a draft model
([speculative][fms_llm.inference.speculative]); GGUF files with Q8_0/Q4_0 tensors
([gguf][fms_llm.inference.gguf])."""

from fms_llm.inference.engine import (
    Engine,
    EngineStats,
    FinishReason,
    RequestOutput,
    SamplingParams,
)
from fms_llm.inference.paged import BlockAllocator, NoFreeBlocks, PagedKVCache, slots_for
from fms_llm.inference.runner import Chunk, PagedModel
from fms_llm.inference.speculative import (
    SpeculativeDecoder,
    SpeculativeError,
    SpeculativeStats,
    verify,
)

__all__ = [
    "BlockAllocator",
    "Chunk",
    "Engine",
    "EngineStats",
    "FinishReason",
    "NoFreeBlocks",
    "PagedKVCache",
    "PagedModel",
    "RequestOutput",
    "SamplingParams",
    "SpeculativeDecoder",
    "SpeculativeError",
    "SpeculativeStats",
    "slots_for",
    "verify",
]
