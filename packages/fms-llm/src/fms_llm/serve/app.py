"""The OpenAI-compatible HTTP API, as a FastAPI (ASGI) application.

| endpoint | what it does |
|---|---|
| `POST /v1/chat/completions` | a chat answer; `stream: true` sends server-sent events ending `data: [DONE]`; `tools` give OpenAI `tool_calls` |
| `POST /v1/completions` | a text continuation, same options, `prompt` as text or token ids |
| `GET /v1/models` | the served model |
| `GET /health` | `{"status": "ok"}` while the engine thread is alive |
| `GET /metrics` | Prometheus text: requests, tokens, tokens/s, queue depth, KV blocks, speculative acceptance |

Every error is OpenAI's JSON error body with a 4xx status for bad input (malformed JSON, a
field out of range, an unknown model, a prompt longer than the context) and 429 when the
bounded queue is full. A client that disconnects cancels its request: the engine frees its
blocks at the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fms_llm.finetune.chat import add_tools_prompt
from fms_llm.inference.engine import Engine, RequestOutput, SamplingParams
from fms_llm.serve.protocol import (
    TOOL_CALL_START,
    APIError,
    CompletionRequest,
    StopStringFilter,
    parse_chat_request,
    parse_completion_request,
    parse_tool_calls,
)
from fms_llm.serve.runtime import AsyncEngine, ServedModel

__all__ = ["create_app"]


@dataclass
class _Choice:
    """The state of one choice while it is generated."""

    index: int
    request_id: str
    queue: asyncio.Queue[Any]
    filter: StopStringFilter
    prompt_len: int
    ids: list[int]
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0


def create_app(
    served: ServedModel,
    *,
    engine: Engine | None = None,
    max_queue: int = 64,
    max_n: int = 8,
) -> FastAPI:
    """The ASGI app serving `served` (run it with uvicorn, or see [serve][fms_llm.serve.serve]).

    Args:
        served: The model, tokenizer and chat template.
        engine: The engine to drive (default: an [Engine][fms_llm.inference.engine.Engine] with
            its defaults over `served.model`, speculative with `served.draft` when there is one).
        max_queue: Requests allowed to wait beyond the engine's `max_num_seqs` running ones;
            more get 429.
        max_n: The largest `n` (choices per prompt) accepted.
    """
    runtime = AsyncEngine(engine or Engine(served.model, draft=served.draft), max_queue=max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime.start()
        try:
            yield
        finally:
            runtime.stop()

    app = FastAPI(
        title="fms-llm",
        description="An OpenAI-compatible server for fms_llm models",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.served = served
    tok = served.tokenizer

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(APIError(400, str(exc)).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            APIError(exc.status_code, str(exc.detail)).body(), status_code=exc.status_code
        )

    async def body_of(request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise APIError(400, f"the request body is not valid JSON ({exc})") from None

    def check_model(req: CompletionRequest) -> None:
        if req.model != served.name:
            raise APIError(
                404,
                f"model {req.model!r} does not exist; this server serves {served.name!r}",
                param="model",
                code="model_not_found",
            )

    def params_for(
        req: CompletionRequest, i: int, stop_ids: tuple[int, ...], n_prompt: int
    ) -> SamplingParams:
        room = served.model.config.max_seq_len - n_prompt
        max_tokens = req.max_tokens if req.max_tokens is not None else max(room, 1)
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=None if req.seed is None else req.seed + i,
            stop_token_ids=stop_ids,
        )

    async def start(
        req: CompletionRequest,
        prompts: Sequence[list[int]],
        stop_ids: tuple[int, ...],
        hold: Sequence[str],
    ) -> list[_Choice]:
        ids: list[list[int]] = []
        params: list[SamplingParams] = []
        for p in prompts:
            for _ in range(req.n):
                ids.append(p)
                params.append(params_for(req, len(params), stop_ids, len(p)))
        handles = runtime.submit(ids, params)
        return [
            _Choice(k, rid, q, StopStringFilter(req.stop, hold), len(ids[k]), [])
            for k, (rid, q) in enumerate(handles)
        ]

    async def next_piece(choice: _Choice) -> str:
        """Wait for the choice's next output; returns the text now safe to send."""
        out = await choice.queue.get()
        if isinstance(out, BaseException):
            raise APIError(500, f"the engine failed: {out}", type_="server_error")
        assert isinstance(out, RequestOutput)
        choice.ids.extend(out.new_token_ids)
        choice.completion_tokens = out.num_output_tokens
        text = tok.decode(choice.ids)
        piece, stopped = choice.filter.feed(text, final=out.finished)
        if stopped:
            runtime.abort(choice.request_id)
            choice.finish_reason = "stop"
        elif out.finished:
            choice.finish_reason = "length" if out.finish_reason == "length" else "stop"
        choice.text += piece
        return piece

    def cancel(choices: Sequence[_Choice]) -> None:
        for c in choices:
            if c.finish_reason is None:
                runtime.abort(c.request_id)

    async def run_to_end(request: Request, choices: list[_Choice]) -> bool:
        """Collect every choice; `False` if the client went away (the requests are cancelled)."""

        async def one(c: _Choice) -> None:
            while c.finish_reason is None:
                await next_piece(c)

        task = asyncio.gather(*(one(c) for c in choices))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.5)
                if done:
                    task.result()
                    return True
                if await request.is_disconnected():
                    task.cancel()
                    cancel(choices)
                    return False
        except BaseException:
            cancel(choices)
            raise

    def usage(prompt_tokens: int, choices: Sequence[_Choice]) -> dict[str, int]:
        completion = sum(c.completion_tokens for c in choices)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }

    def sse(obj: Any) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    # -- chat --------------------------------------------------------------------------------

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Response:
        req = parse_chat_request(await body_of(request), max_n=max_n)
        check_model(req)
        template = served.chat_template
        if template is None:
            raise APIError(
                400,
                f"model {served.name!r} has no chat template (its tokenizer lacks <|im_start|> "
                "and <|im_end|>); use /v1/completions",
                param="messages",
            )
        tools = req.tools if served.supports_tools else []
        messages = add_tools_prompt(req.messages or [], tools)  # what LocalBackend renders too
        try:
            prompt, _ = template.encode(
                tok, messages, add_generation_prompt=True, require_assistant=False
            )
        except ValueError as exc:
            raise APIError(400, str(exc), param="messages") from None
        hold = [TOOL_CALL_START] if tools else []
        choices = await start(req, [prompt], served.chat_stop_ids, hold)
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        head = {"id": cid, "created": created, "model": served.name}

        def final_message(c: _Choice) -> tuple[dict[str, Any], str | None]:
            if not tools:
                return {"role": "assistant", "content": c.text}, c.finish_reason
            content, calls = parse_tool_calls(_visible(tok.decode(c.ids), req.stop))
            if not calls:
                return {"role": "assistant", "content": content}, c.finish_reason
            return {"role": "assistant", "content": content, "tool_calls": calls}, "tool_calls"

        if not req.stream:
            if not await run_to_end(request, choices):
                return Response(status_code=499)
            body_choices = []
            for c in choices:
                msg, reason = final_message(c)
                body_choices.append(
                    {"index": c.index, "message": msg, "logprobs": None, "finish_reason": reason}
                )
            return JSONResponse(
                {
                    "object": "chat.completion",
                    **head,
                    "choices": body_choices,
                    "usage": usage(len(prompt), choices),
                }
            )

        async def events() -> AsyncIterator[str]:
            extra = {"usage": None} if req.include_usage else {}
            chunk = {"object": "chat.completion.chunk", **head}
            try:
                for c in choices:
                    yield sse(
                        {
                            **chunk,
                            "choices": [
                                {
                                    "index": c.index,
                                    "delta": {"role": "assistant", "content": ""},
                                    "logprobs": None,
                                    "finish_reason": None,
                                }
                            ],
                            **extra,
                        }
                    )
                async for c, piece in _merged(choices, next_piece):
                    if piece:
                        delta = {
                            "index": c.index,
                            "delta": {"content": piece},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                        yield sse({**chunk, "choices": [delta], **extra})
                    if c.finish_reason is not None:
                        reason = c.finish_reason
                        end_delta: dict[str, Any] = {}
                        if tools:
                            content, calls = parse_tool_calls(_visible(tok.decode(c.ids), req.stop))
                            if calls:
                                reason = "tool_calls"
                                end_delta = {
                                    "tool_calls": [
                                        {"index": k, **call} for k, call in enumerate(calls)
                                    ]
                                }
                            elif content and len(content) > len(c.text):
                                end_delta = {"content": content[len(c.text) :]}
                        yield sse(
                            {
                                **chunk,
                                "choices": [
                                    {
                                        "index": c.index,
                                        "delta": end_delta,
                                        "logprobs": None,
                                        "finish_reason": reason,
                                    }
                                ],
                                **extra,
                            }
                        )
                if req.include_usage:
                    yield sse({**chunk, "choices": [], "usage": usage(len(prompt), choices)})
                yield "data: [DONE]\n\n"
            finally:
                cancel(choices)

        return StreamingResponse(events(), media_type="text/event-stream")

    # -- completions -------------------------------------------------------------------------

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Response:
        req = parse_completion_request(await body_of(request), max_n=max_n)
        check_model(req)
        prompts: list[list[int]] = []
        for i, p in enumerate(req.prompts):
            ids = tok.encode(p) if isinstance(p, str) else p
            if not ids:
                raise APIError(400, f"prompt[{i}] is empty (no tokens)", param="prompt")
            prompts.append(ids)
        choices = await start(req, prompts, served.stop_token_ids, [])
        cid = f"cmpl-{uuid.uuid4().hex}"
        head = {"id": cid, "created": int(time.time()), "model": served.name}
        n_prompt = sum(len(p) for p in prompts)

        def echo_of(c: _Choice) -> str:
            if not req.echo:
                return ""
            p = req.prompts[c.index // req.n]
            return p if isinstance(p, str) else tok.decode(p)

        if not req.stream:
            if not await run_to_end(request, choices):
                return Response(status_code=499)
            return JSONResponse(
                {
                    "object": "text_completion",
                    **head,
                    "choices": [
                        {
                            "index": c.index,
                            "text": echo_of(c) + c.text,
                            "logprobs": None,
                            "finish_reason": c.finish_reason,
                        }
                        for c in choices
                    ],
                    "usage": usage(n_prompt, choices),
                }
            )

        async def events() -> AsyncIterator[str]:
            extra = {"usage": None} if req.include_usage else {}
            chunk = {"object": "text_completion", **head}
            try:
                for c in choices:
                    if req.echo:
                        yield sse(
                            {
                                **chunk,
                                "choices": [
                                    {
                                        "index": c.index,
                                        "text": echo_of(c),
                                        "logprobs": None,
                                        "finish_reason": None,
                                    }
                                ],
                                **extra,
                            }
                        )
                async for c, piece in _merged(choices, next_piece):
                    if piece or c.finish_reason is not None:
                        yield sse(
                            {
                                **chunk,
                                "choices": [
                                    {
                                        "index": c.index,
                                        "text": piece,
                                        "logprobs": None,
                                        "finish_reason": c.finish_reason,
                                    }
                                ],
                                **extra,
                            }
                        )
                if req.include_usage:
                    yield sse({**chunk, "choices": [], "usage": usage(n_prompt, choices)})
                yield "data: [DONE]\n\n"
            finally:
                cancel(choices)

        return StreamingResponse(events(), media_type="text/event-stream")

    # -- the rest ----------------------------------------------------------------------------

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": served.name,
                    "object": "model",
                    "created": served.created,
                    "owned_by": "fms-llm",
                }
            ],
        }

    @app.get("/health", response_model=None)
    async def health() -> JSONResponse:
        alive = runtime._thread is not None and runtime._thread.is_alive()
        body = {"status": "ok" if alive else "engine stopped"}
        return JSONResponse(body, status_code=200 if alive else 503)

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        e = runtime.engine
        s = e.stats
        rows = [
            ("fms_requests_total", "counter", "Requests accepted.", runtime.requests_total),
            (
                "fms_requests_rejected_total",
                "counter",
                "Requests refused with 429.",
                runtime.rejected_total,
            ),
            ("fms_requests_running", "gauge", "Sequences in the batch.", e.num_running),
            ("fms_queue_depth", "gauge", "Sequences waiting to be scheduled.", e.num_waiting),
            (
                "fms_prompt_tokens_total",
                "counter",
                "Prompt tokens fed to the model.",
                s.prompt_tokens,
            ),
            ("fms_generation_tokens_total", "counter", "Tokens generated.", s.generated_tokens),
            (
                "fms_generation_tokens_per_second",
                "gauge",
                "Tokens generated per second over the last 10 s.",
                runtime.tokens_per_second(),
            ),
            (
                "fms_prefix_cache_hit_tokens_total",
                "counter",
                "Prompt tokens served from shared cache blocks.",
                s.prefix_cached_tokens,
            ),
            (
                "fms_preemptions_total",
                "counter",
                "Sequences preempted for lack of KV blocks.",
                s.preemptions,
            ),
            ("fms_kv_blocks_in_use", "gauge", "KV cache blocks held.", e.num_blocks_in_use),
            ("fms_kv_blocks_total", "gauge", "KV cache blocks in the pool.", e.num_blocks),
            ("fms_engine_steps_total", "counter", "Forward passes run.", s.steps),
            (
                "fms_speculative_draft_tokens_total",
                "counter",
                "Draft tokens proposed (speculative decoding).",
                s.draft_tokens,
            ),
            (
                "fms_speculative_accepted_tokens_total",
                "counter",
                "Draft tokens the target accepted.",
                s.accepted_tokens,
            ),
            (
                "fms_speculative_acceptance_rate",
                "gauge",
                "Accepted over proposed draft tokens since start (0 without a draft).",
                s.acceptance_rate,
            ),
        ]
        lines = []
        for name, kind, text, value in rows:
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    return app


def _visible(text: str, stops: Sequence[str]) -> str:
    """`text` cut at its first stop string."""
    cut = len(text)
    for s in stops:
        at = text.find(s)
        if 0 <= at < cut:
            cut = at
    return text[:cut]


async def _merged(
    choices: Sequence[_Choice], next_piece: Any
) -> AsyncIterator[tuple[_Choice, str]]:
    """Yield `(choice, piece)` as any choice produces text, until every choice finished."""
    pending: dict[asyncio.Task[str], _Choice] = {}
    for c in choices:
        pending[asyncio.ensure_future(next_piece(c))] = c
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                c = pending.pop(task)
                yield c, task.result()
                if c.finish_reason is None:
                    pending[asyncio.ensure_future(next_piece(c))] = c
    finally:
        for task in pending:
            task.cancel()
