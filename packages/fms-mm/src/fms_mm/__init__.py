"""Layer 5 of Foundation Model Systems: multimodal models (vision, audio, image-to-LLM).

The package sits on ``fms_llm`` in the chain; its components are planned and not yet written.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fms-mm")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
