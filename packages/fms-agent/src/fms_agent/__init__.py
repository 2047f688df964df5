"""Layer 6 of Foundation Model Systems: agents (tool use, dialogue, planning, memory).

The package sits on ``fms_mm`` in the chain. Its modules: ``tools`` (schemas and validation),
``llm`` (back ends), ``agent`` (the ReAct loop), ``session``, ``sandbox``, ``memory``,
``planning`` and ``cli`` (the ``fms-agent`` command).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fms-agent")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
