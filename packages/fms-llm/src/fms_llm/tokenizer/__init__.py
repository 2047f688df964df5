"""Byte-level BPE tokenization from first principles, interchangeable with tiktoken and Hugging Face.

- [BPETokenizer][fms_llm.tokenizer.BPETokenizer]: train, encode, decode, and read/write
  `tokenizer.json`, GPT-2's `vocab.json` + `merges.txt`, and tiktoken encodings;
- [GPT2_PATTERN][fms_llm.tokenizer.GPT2_PATTERN] and [CL100K_PATTERN][fms_llm.tokenizer.CL100K_PATTERN]:
  the pre-tokenisation patterns of GPT-2 and of the cl100k family.

Modules: `bpe` (encoding), `train` (training), `formats` (file formats), `cli` (command line).
"""

from fms_llm.tokenizer.bpe import CL100K_PATTERN, GPT2_PATTERN, BPETokenizer

__all__ = ["CL100K_PATTERN", "GPT2_PATTERN", "BPETokenizer"]
