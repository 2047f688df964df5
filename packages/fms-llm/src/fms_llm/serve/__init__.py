"""An OpenAI-compatible server for fms_llm models (`pip install fms-llm[serve]`).

    fms-llm serve runs/tiny/model --port 8000
    fms-llm serve runs/tiny/model --quantize int8 --draft runs/draft/model

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
    client.chat.completions.create(model="model", messages=[{"role": "user", "content": "Hi"}])

[create_app][fms_llm.serve.app.create_app] builds the FastAPI app over a continuous-batching
[Engine][fms_llm.inference.engine.Engine] stepped in a background thread
([runtime][fms_llm.serve.runtime]); [protocol][fms_llm.serve.protocol] reads requests and
writes errors in OpenAI's format. FastAPI and uvicorn are imported here only, so `import fms_llm`
works without the `serve` extra.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
    import uvicorn
except ImportError as exc:  # pragma: no cover - exercised by the CLI test with the import blocked
    raise ImportError(
        f"fms_llm.serve needs FastAPI and uvicorn ({exc.name} is missing): "
        "pip install fms-llm[serve]"
    ) from exc

from fms_llm.serve.app import create_app
from fms_llm.serve.protocol import APIError
from fms_llm.serve.runtime import AsyncEngine, ServedModel, load_draft_model, load_served_model

__all__ = [
    "APIError",
    "AsyncEngine",
    "ServedModel",
    "create_app",
    "load_draft_model",
    "load_served_model",
    "serve",
]


def serve(
    app: object, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"
) -> None:
    """Run `app` with uvicorn on `host:port` until interrupted."""
    uvicorn.run(app, host=host, port=port, log_level=log_level)  # type: ignore[arg-type]
