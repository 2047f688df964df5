"""Layer 5 of Foundation Model Systems: multimodal models (vision, audio, image-to-LLM).

The package sits on ``fms_llm`` in the chain. ``fms_mm.vision`` holds the vision transformer and
``fms_mm.audio`` the audio front end (STFT, mel filters, log-mel) and encoder.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fms-mm")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
