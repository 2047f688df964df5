"""Shared fixtures. `fake`: a fake OpenAI chat-completions endpoint (FastAPI on uvicorn, 127.0.0.1, a free port) for tests.

The server replays `replies` (each an assistant message dict) and records the requests; `fail`
holds HTTP statuses to answer, in order, before the next reply; `garbage` makes the next answer a
body that is not JSON. Streaming splits the content into words and a tool call's arguments into
3-character pieces, the way real servers stream deltas.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse


class FakeOpenAI:
    def __init__(self) -> None:
        self.replies: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.fail: list[int] = []
        self.garbage = False
        app = FastAPI()
        app.post("/v1/chat/completions")(self._chat)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        config = uvicorn.Config(app, log_level="error", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake server did not start in 10 s")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(5)
        self.sock.close()

    async def _chat(self, request: Request) -> Any:
        body = await request.json()
        self.requests.append(body)
        if self.fail:
            status = self.fail.pop(0)
            return JSONResponse({"error": {"message": f"injected {status}"}}, status_code=status)
        if self.garbage:
            self.garbage = False
            return PlainTextResponse("<html>not json</html>")
        msg = self.replies.pop(0) if self.replies else {"role": "assistant", "content": "done"}
        if not body.get("stream"):
            return {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
            }
        return StreamingResponse(self._events(msg, body["model"]), media_type="text/event-stream")

    def _events(self, msg: dict[str, Any], model: str) -> Iterator[str]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            event = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(event)}\n\n"

        yield ": keep-alive comment\n\n"
        yield chunk({"role": "assistant", "content": ""})
        for word in (msg.get("content") or "").split(" "):
            if word:
                yield chunk({"content": word + " "})
        for i, c in enumerate(msg.get("tool_calls") or []):
            args = c["function"]["arguments"]
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": c["id"],
                            "type": "function",
                            "function": {"name": c["function"]["name"], "arguments": ""},
                        }
                    ]
                }
            )
            for k in range(0, len(args), 3):
                yield chunk(
                    {"tool_calls": [{"index": i, "function": {"arguments": args[k : k + 3]}}]}
                )
        yield chunk({}, "tool_calls" if msg.get("tool_calls") else "stop")
        yield "data: [DONE]\n\n"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    """A running fake endpoint, stopped after the test."""
    with FakeOpenAI() as f:
        yield f
