"""Inference for the language models of [fms_llm.models][]: a paged key/value cache
([paged][fms_llm.inference.paged]) and a forward pass over many sequences' new tokens at once
that reads and writes it ([runner][fms_llm.inference.runner]), the parts a continuous-batching
engine is built on."""

from fms_llm.inference.paged import BlockAllocator, NoFreeBlocks, PagedKVCache, slots_for
from fms_llm.inference.runner import Chunk, PagedModel

__all__ = ["BlockAllocator", "Chunk", "NoFreeBlocks", "PagedKVCache", "PagedModel", "slots_for"]
