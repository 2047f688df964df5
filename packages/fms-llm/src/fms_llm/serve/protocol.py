"""The OpenAI wire format: reading requests, OpenAI-style errors, stop strings and tool calls.

Nothing here imports a web framework: requests arrive as parsed JSON (`dict`), and every
problem with one is an [APIError][fms_llm.serve.protocol.APIError] that carries the HTTP status
and the body OpenAI's servers send,

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": null}}

which the `openai` client turns into `openai.BadRequestError` (400), `openai.NotFoundError`
(404), `openai.RateLimitError` (429) and so on.

The tool-call text protocol ([tools_system_prompt][fms_llm.finetune.chat.tools_system_prompt]
and [parse_tool_calls][fms_llm.finetune.chat.parse_tool_calls]) lives beside the chat template
in [fms_llm.finetune.chat][], so that clients that run a model in process (the agent's
`LocalBackend`) use it without FastAPI; it is re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fms_llm.finetune.chat import TOOL_CALL_START, parse_tool_calls, tools_system_prompt

__all__ = [
    "TOOL_CALL_START",
    "APIError",
    "CompletionRequest",
    "StopStringFilter",
    "parse_chat_request",
    "parse_completion_request",
    "parse_tool_calls",
    "tools_system_prompt",
]


class APIError(Exception):
    """An error answered as OpenAI's JSON error body with an HTTP status.

    Args:
        status: HTTP status (400 bad input, 404 unknown model, 429 queue full, ...).
        message: What was wrong, naming the parameter, what was received and what was expected.
        param: The request field at fault, if one.
        type_: OpenAI's error type.
        code: OpenAI's error code, if one.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        type_: str = "invalid_request_error",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = (
            status,
            message,
            param,
            type_,
            code,
        )

    def body(self) -> dict[str, Any]:
        """The JSON body: `{"error": {"message", "type", "param", "code"}}`."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _bad(param: str, message: str) -> APIError:
    return APIError(400, f"{param}: {message}", param=param)


@dataclass
class CompletionRequest:
    """One validated request of either endpoint.

    Attributes:
        model: The model name asked for.
        prompts: Prompt texts (`str`) or token ids (`list[int]`), one per prompt.
        messages: The conversation (chat requests), else `None`.
        tools: The OpenAI `tools` (chat requests), possibly empty.
        max_tokens: Tokens to generate at most (`None`: up to the context).
        temperature: Softmax temperature (OpenAI's default 1).
        top_p: Nucleus mass.
        seed: Sampling seed; choice `i` uses `seed + i`.
        n: Choices per prompt.
        stop: Stop strings (at most 4, as OpenAI).
        stream: Answer as server-sent events.
        include_usage: With `stream`, send a last chunk holding the token usage.
        echo: (completions) put the prompt before the answer.
    """

    model: str
    prompts: list[str | list[int]]
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    n: int = 1
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False
    echo: bool = False


def _number(body: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _bad(key, f"expected a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def _int(body: Mapping[str, Any], key: str, lo: int, hi: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(key, f"expected an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise _bad(key, f"expected an integer {bound}, got {value}")
    return value


def _common(body: Any, max_n: int) -> dict[str, Any]:
    if not isinstance(body, Mapping):
        raise APIError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", f"expected the model's name (a string), got {model!r}")
    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        stops = list(stop)
    else:
        raise _bad("stop", f"expected a string or a list of at most 4 strings, got {stop!r:.80}")
    stops = [s for s in stops if s]
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("stream", f"expected true or false, got {stream!r}")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, Mapping):
            raise _bad("stream_options", f"expected an object, got {options!r:.80}")
        if not stream:
            raise _bad("stream_options", "only allowed when stream is true")
        include_usage = bool(options.get("include_usage", False))
    max_tokens = _int(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _int(body, "max_tokens", 1)
    seed = _int(body, "seed", -(2**63), 2**63 - 1)
    return {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": _number(body, "temperature", 1.0, 0.0, 2.0),
        "top_p": _number(body, "top_p", 1.0, 0.0, 1.0) or 1.0,
        "seed": seed,
        "n": _int(body, "n", 1, max_n) or 1,
        "stop": stops,
        "stream": stream,
        "include_usage": include_usage,
    }


def _text_content(content: Any, where: str) -> str | None:
    """OpenAI content: a string, null, or a list of `{"type": "text", "text": ...}` parts."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text":
                raise _bad(
                    f"{where}.content[{j}]",
                    f"only text parts ({{'type': 'text', 'text': ...}}) are supported, got {part!r:.80}",
                )
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise _bad(
        f"{where}.content", f"expected a string or a list of text parts, got {content!r:.80}"
    )


def parse_chat_request(body: Any, *, max_n: int = 8) -> CompletionRequest:
    """Validate a `/v1/chat/completions` body.

    Raises:
        APIError: 400 naming the field at fault.
    """
    fields = _common(body, max_n)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", f"expected a non-empty list of messages, got {messages!r:.80}")
    clean: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise _bad(f"messages[{i}]", f"expected an object with role and content, got {m!r:.80}")
        item = dict(m)
        if "content" in item:
            item["content"] = _text_content(item["content"], f"messages[{i}]")
        if item.get("role") == "developer":  # OpenAI's newer name for the system role
            item["role"] = "system"
        clean.append(item)
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise _bad("tools", f"expected a list of tools, got {tools!r:.80}")
    for j, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise _bad(
                f"tools[{j}]",
                "expected {'type': 'function', 'function': {'name': ..., 'parameters': ...}}, "
                f"got {tool!r:.80}",
            )
    if body.get("tool_choice") == "none":
        tools = []
    return CompletionRequest(prompts=[], messages=clean, tools=list(tools), **fields)


def parse_completion_request(body: Any, *, max_n: int = 8) -> CompletionRequest:
    """Validate a `/v1/completions` body (`prompt`: a string, a list of strings, a list of
    token ids, or a list of such lists).

    Raises:
        APIError: 400 naming the field at fault.
    """
    fields = _common(body, max_n)
    prompt = body.get("prompt")
    prompts: list[str | list[int]]

    def ids(value: Any) -> bool:
        return (
            isinstance(value, list)
            and bool(value)
            and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
        )

    if isinstance(prompt, str):
        prompts = [prompt]
    elif ids(prompt):
        prompts = [list(prompt)]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) or ids(p) for p in prompt):
        prompts = [p if isinstance(p, str) else list(p) for p in prompt]
    else:
        raise _bad(
            "prompt",
            "expected a string, a list of strings, a list of token ids or a list of lists of "
            f"token ids, got {prompt!r:.80}",
        )
    echo = body.get("echo", False)
    if not isinstance(echo, bool):
        raise _bad("echo", f"expected true or false, got {echo!r}")
    return CompletionRequest(prompts=prompts, echo=echo, **fields)


class StopStringFilter:
    """Cut generated text at the first stop string, holding back what could still become one.

    Feed it the whole text generated so far; it returns the part that is safe to send (it will
    never be retracted) and whether a stop string was found. A suffix that is a prefix of some
    stop string is held back until the next token decides it; U+FFFD at the end (an unfinished
    UTF-8 character of byte-level tokens) is held back too.

    Args:
        stops: The stop strings.
        hold: Extra markers to hold back as if they were stop strings but not to stop at (the
            start of a tool call, which is sent as `tool_calls`, not as text).
    """

    def __init__(self, stops: Sequence[str], hold: Sequence[str] = ()) -> None:
        self.stops = [s for s in stops if s]
        self.hold = [h for h in hold if h]
        self.sent = 0

    def feed(self, text: str, *, final: bool = False) -> tuple[str, bool]:
        """Return `(new safe text, stopped)` for the text generated so far."""
        stopped = False
        cut = len(text)
        for s in self.stops:
            at = text.find(s)
            if at >= 0 and at < cut:
                cut, stopped = at, True
        visible = text[:cut]
        if not stopped and not final:
            safe = len(visible)
            while safe > 0 and visible[safe - 1] == "\ufffd":
                safe -= 1
            for marker in self.stops + self.hold:
                for k in range(min(len(marker) - 1, safe), 0, -1):
                    if visible[safe - k : safe] == marker[:k]:
                        safe -= k
                        break
            for marker in self.hold:
                at = visible.find(marker)
                if 0 <= at < safe:
                    safe = at
            visible = visible[:safe]
        elif self.hold:
            for marker in self.hold:
                at = visible.find(marker)
                if at >= 0:
                    visible = visible[:at]
        new = visible[self.sent :] if len(visible) > self.sent else ""
        self.sent = max(self.sent, len(visible))
        return new, stopped
