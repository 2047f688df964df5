"""Data for language models: corpora, the synthetic story corpus, token shards, batching.

- [fms_llm.data.corpus][]: text files and folders, and the built-in King James Bible;
- [fms_llm.data.synthetic][]: stories with an exact log-probability, hence a known entropy floor;
- [fms_llm.data.shards][]: tokenised, memory-mapped uint16/uint32 shards, split by document;
- [fms_llm.data.batching][]: random windows as a pure function of `(seed, index)`.
"""

from fms_llm.data.batching import random_windows, sequential_windows
from fms_llm.data.corpus import CorpusError, kjv_documents, load_documents, text_documents
from fms_llm.data.shards import ShardError, TokenShards, split_documents, write_token_shards
from fms_llm.data.synthetic import Story, StoryError, StoryGenerator, entropy_floor, story_log_prob

__all__ = [
    "CorpusError",
    "ShardError",
    "Story",
    "StoryError",
    "StoryGenerator",
    "TokenShards",
    "entropy_floor",
    "kjv_documents",
    "load_documents",
    "random_windows",
    "sequential_windows",
    "split_documents",
    "story_log_prob",
    "text_documents",
    "write_token_shards",
]
