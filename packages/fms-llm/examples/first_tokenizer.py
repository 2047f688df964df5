"""Train a byte-level BPE tokenizer on Genesis, look at its tokens, and check that Hugging Face's
tokenizers and tiktoken, handed our files, produce exactly our ids.

Run from the repository root: `uv run python packages/fms-llm/examples/first_tokenizer.py`
(tokenizers and tiktoken, for the comparison, are in the workspace's test dependencies;
`to_tiktoken` needs tiktoken installed).
"""

import tempfile
from pathlib import Path

from tokenizers import Tokenizer

from fms_llm.data import kjv_documents
from fms_llm.tokenizer import CL100K_PATTERN, BPETokenizer

genesis = kjv_documents()[:50]  # the 50 chapters of Genesis, about 200 kB
tok = BPETokenizer.train(
    genesis,
    vocab_size=1000,
    special_tokens=["<|endoftext|>"],
    pattern=CL100K_PATTERN,
    progress=False,
)
print(f"{len(tok.merges)} merges; the first five: {[(a + b).decode() for a, b in tok.merges[:5]]}")

text = "And Abraham said, God will provide himself a lamb: 1,234 sheep<|endoftext|>"
ids = tok.encode(text, allowed_special="all")
print(
    len(text.encode()), "bytes ->", len(ids), "tokens:", [tok.id_to_token(i).decode() for i in ids]
)
assert tok.decode(ids) == text  # byte-level: every string round-trips

with tempfile.TemporaryDirectory() as tmp:
    tok.save(Path(tmp) / "tokenizer.json")  # Hugging Face's format
    hf = Tokenizer.from_file(str(Path(tmp) / "tokenizer.json"))
print("Hugging Face tokenizers, same ids:", hf.encode(text).ids == ids)
print("tiktoken, same ids:", tok.to_tiktoken().encode(text, allowed_special="all") == ids)
