"""fms_llm: language models from first principles (Layer 4 of Foundation Model Systems).

- [fms_llm.tokenizer][]: byte-level BPE, interchangeable with tiktoken and Hugging Face;
- [fms_llm.models][]: GPT-2 and Llama over fms_transformer blocks, with the Hugging Face round trip;
- [fms_llm.data][]: corpora (files, the King James Bible, synthetic stories with a known entropy
  floor), token shards and batching;
- [fms_llm.train][]: run configs and pretraining;
- [fms_llm.generate][] and [fms_llm.evaluate][]: sampling and evaluation;
- [fms_llm.cli][]: the `fms-llm` command (`train`, `generate`, `eval`, `tokenizer`).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fms-llm")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
