r"""LLM back ends: what the agent talks to. Messages and tool schemas in, one assistant message out.

Every back end speaks the OpenAI chat format, the de-facto standard of tool-calling models:
a conversation is a list of messages `{"role": ..., "content": ...}` with roles `system`,
`user`, `assistant` and `tool`; an assistant message may carry `tool_calls`
(`{"id", "type": "function", "function": {"name", "arguments"}}`, the arguments a JSON *string*,
because a model can write malformed JSON and the agent must see exactly what it wrote); a `tool`
message answers one call by its `tool_call_id`.

- [ScriptedBackend][fms_agent.llm.ScriptedBackend] replays replies given in advance:
  deterministic, for tests and for timing the agent's own overhead.
- [OpenAIBackend][fms_agent.llm.OpenAIBackend] talks to any OpenAI-compatible endpoint
  (`POST {base_url}/chat/completions`), written on the standard library's `http.client`: no
  run-time dependency. Streaming reads server-sent events (`data: {...}` lines ending with
  `data: [DONE]`) and reassembles tool calls from their deltas, which arrive as fragments keyed by
  `index` (the id and name in the first, the arguments string in pieces). Connection failures,
  HTTP 429 and 5xx are retried a bounded number of times with exponential back-off; other 4xx
  fail at once with the server's body in the message.
- [LocalBackend][fms_agent.llm.LocalBackend] runs a saved fms-llm model in process. Its tool
  calls follow the text protocol of the Hermes/Qwen chat templates: the tools' schemas sit in the
  system prompt between `<tools>` and `</tools>`, and the model calls a tool by writing
  `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`; results come back inside
  `<tool_response>...</tool_response>`. [render_chatml][fms_agent.llm.render_chatml] and
  [parse_tool_calls][fms_agent.llm.parse_tool_calls] are that protocol's two halves.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "AssistantMessage",
    "Backend",
    "BackendError",
    "Chunk",
    "LocalBackend",
    "OpenAIBackend",
    "ScriptedBackend",
    "ToolCall",
    "parse_tool_calls",
    "render_chatml",
]

JSON = dict[str, Any]
Message = dict[str, Any]


class BackendError(RuntimeError):
    """A back end could not produce a reply: unreachable, an HTTP error, a malformed answer."""


@dataclass(frozen=True)
class ToolCall:
    """One tool call as the model wrote it. `arguments` is the raw JSON text, parsed later."""

    id: str
    name: str
    arguments: str

    def to_dict(self) -> JSON:
        """The OpenAI wire form."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class AssistantMessage:
    """A model's reply: text, tool calls, or both."""

    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()

    def to_dict(self) -> Message:
        """The OpenAI wire form of the message (as it goes back into the conversation)."""
        out: Message = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        return out

    @classmethod
    def from_dict(cls, message: Any, where: str = "message") -> AssistantMessage:
        """Read the OpenAI wire form.

        Raises:
            BackendError: the message is not an object or its tool calls are malformed.
        """
        if not isinstance(message, dict):
            raise BackendError(f"{where}: expected a JSON object, got {message!r}")
        content = message.get("content")
        calls = []
        for i, c in enumerate(message.get("tool_calls") or []):
            try:
                fn = c["function"]
                args = fn.get("arguments") or ""
                calls.append(ToolCall(str(c.get("id") or f"call_{i}"), str(fn["name"]), str(args)))
            except (KeyError, TypeError, AttributeError) as e:
                raise BackendError(f"{where}.tool_calls[{i}] is malformed: {c!r}") from e
        return cls(content if isinstance(content, str) else None, tuple(calls))


@dataclass(frozen=True)
class Chunk:
    """One streamed piece: new text (`content`), and on the last chunk the whole `message`."""

    content: str = ""
    message: AssistantMessage | None = None


@runtime_checkable
class Backend(Protocol):
    """What the agent needs of a model."""

    def complete(self, messages: Sequence[Message], tools: Sequence[JSON] = ()) -> AssistantMessage:
        """One assistant reply to `messages`, with `tools` (OpenAI `tools` entries) on offer."""
        ...

    def stream(self, messages: Sequence[Message], tools: Sequence[JSON] = ()) -> Iterator[Chunk]:
        """The same reply as chunks of text; the last chunk carries the whole message."""
        ...


# -- scripted ---------------------------------------------------------------------------------

Reply = AssistantMessage | str | Callable[[Sequence[Message]], AssistantMessage]


class ScriptedBackend:
    """Replays `replies` in order: an `AssistantMessage`, a plain string (a final answer), or a
    function of the conversation so far. Records each request in `requests`.

    Example:
        >>> b = ScriptedBackend(["hello"])
        >>> b.complete([{"role": "user", "content": "hi"}]).content
        'hello'
    """

    def __init__(self, replies: Sequence[Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[list[Message], list[JSON]]] = []
        self._next = 0

    def complete(self, messages: Sequence[Message], tools: Sequence[JSON] = ()) -> AssistantMessage:
        """The next scripted reply.

        Raises:
            BackendError: the script is used up.
        """
        self.requests.append(([dict(m) for m in messages], list(tools)))
        if self._next >= len(self.replies):
            raise BackendError(
                f"ScriptedBackend ran out of replies: it holds {len(self.replies)} and was asked "
                f"for reply {self._next + 1}"
            )
        reply = self.replies[self._next]
        self._next += 1
        if isinstance(reply, str):
            return AssistantMessage(reply)
        if isinstance(reply, AssistantMessage):
            return reply
        return reply(messages)

    def stream(self, messages: Sequence[Message], tools: Sequence[JSON] = ()) -> Iterator[Chunk]:
        """The next reply, its text in word-sized chunks."""
        msg = self.complete(messages, tools)
        for piece in re.findall(r"\S+\s*|\s+", msg.content or ""):
            yield Chunk(piece)
        yield Chunk("", msg)


# -- OpenAI-compatible HTTP -------------------------------------------------------------------


class _Assembler:
    """Reassemble a streamed reply from OpenAI `chat.completion.chunk` deltas."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}

    def add(self, delta: JSON) -> str:
        piece = delta.get("content") or ""
        self.text.append(piece)
        for c in delta.get("tool_calls") or []:
            slot = self.calls.setdefault(int(c.get("index", 0)), {"id": "", "name": "", "args": []})
            if c.get("id"):
                slot["id"] = c["id"]
            fn = c.get("function") or {}
            if fn.get("name"):
                slot["name"] += fn["name"]
            if fn.get("arguments"):
                slot["args"].append(fn["arguments"])
        return str(piece)

    def message(self) -> AssistantMessage:
        calls = tuple(
            ToolCall(s["id"] or f"call_{i}", s["name"], "".join(s["args"]))
            for i, s in sorted(self.calls.items())
        )
        text = "".join(self.text)
        return AssistantMessage(text if text or not calls else None, calls)


class OpenAIBackend:
    """A chat-completions client for any OpenAI-compatible endpoint, on `http.client`.

    Args:
        base_url: the API root, e.g. `http://127.0.0.1:8000/v1`.
        model: the model name sent with each request.
        api_key: sent as `Authorization: Bearer ...` when given.
        timeout: seconds to wait on the connection and on each read.
        max_retries: extra attempts after a connection failure, HTTP 429 or 5xx.
        backoff: seconds before the first retry; doubled for each later one.
        temperature: sent with each request when not None.
        max_tokens: sent with each request when not None.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        *,
        max_retries: int = 2,
        backoff: float = 0.5,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(
                f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}"
            )
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._url = url

    # the request ---------------------------------------------------------------------------

    def _body(self, messages: Sequence[Message], tools: Sequence[JSON], stream: bool) -> bytes:
        body: JSON = {"model": self.model, "messages": list(messages), "stream": stream}
        if tools:
            body["tools"] = list(tools)
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return json.dumps(body).encode()

    def _open(self, body: bytes) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """POST the body, retrying connection failures, 429 and 5xx; return a 200 response."""
        path = (self._url.path.rstrip("/") or "") + "/chat/completions"
        endpoint = f"{self.base_url}/chat/completions"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        cls = (
            http.client.HTTPSConnection
            if self._url.scheme == "https"
            else http.client.HTTPConnection
        )
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            conn = cls(self._url.hostname or "", self._url.port, timeout=self.timeout)
            try:
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                last = f"cannot reach {endpoint}: {type(e).__name__}: {e}"
                continue
            if resp.status == 200:
                return conn, resp
            text = resp.read(4096).decode("utf-8", "replace")
            conn.close()
            last = f"{endpoint} answered HTTP {resp.status} {resp.reason}: {text}"
            if resp.status != 429 and resp.status < 500:
                raise BackendError(last)
        attempts = self.max_retries + 1
        raise BackendError(f"{last} (after {attempts} attempt{'s' * (attempts > 1)})")

    def complete(self, messages: Sequence[Message], tools: Sequence[JSON] = ()) -> AssistantMessage:
        """One reply (non-streaming request).

        Raises:
            BackendError: the endpoint is down, answers an HTTP error (its body is shown), or
                answers something that is not a chat completion.
        """
        conn, resp = self._open(self._body(messages, tools, stream=False))
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise BackendError(f"{self.base_url}: the reply broke off: {e}") from e
        finally:
            conn.close()
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise BackendError(
                f"{self.base_url}/chat/completions answered a body that is not JSON ({e}): "
                f"{raw[:200]!r}"
            ) from e
        try:
            message = data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError) as e:
            raise BackendError(
                f"{self.base_url}/chat/completions answered JSON without choices[0].message: "
                f"{str(data)[:200]}"
            ) from e
        return AssistantMessage.from_dict(message, "choices[0].message")

    def stream(self, messages: Sequence[Message], tools: Sequence[JSON] = ()) -> Iterator[Chunk]:
        """One reply over server-sent events, tool calls reassembled from their deltas.

        Raises:
            BackendError: as [complete][fms_agent.llm.OpenAIBackend.complete], or an event whose
                data is not JSON, or a stream that ends without `data: [DONE]`.
        """
        conn, resp = self._open(self._body(messages, tools, stream=True))
        acc = _Assembler()
        try:
            while True:
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException) as e:
                    raise BackendError(f"{self.base_url}: the stream broke off: {e}") from e
                if not line:
                    raise BackendError(
                        f"{self.base_url}/chat/completions: the stream ended without data: [DONE]"
                    )
                text = line.decode("utf-8", "replace").strip()
                if not text.startswith("data:"):
                    continue  # comments (":"), event names, blank separators
                data = text[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                    choices = event.get("choices") or []
                    delta = choices[0].get("delta") or {} if choices else {}
                except (json.JSONDecodeError, AttributeError, IndexError) as e:
                    raise BackendError(f"a stream event is not a chat chunk: {data[:200]!r}") from e
                piece = acc.add(delta)
                if piece:
                    yield Chunk(piece)
        except TimeoutError as e:
            raise BackendError(f"{self.base_url}: no data for {self.timeout} s") from e
        finally:
            conn.close()
        yield Chunk("", acc.message())


# -- in-process fms-llm model ------------------------------------------------------------------

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def render_chatml(messages: Sequence[Message], tools: Sequence[JSON] = ()) -> str:
    """The conversation as a ChatML prompt with Hermes-style tools, ending where the assistant
    speaks next.

    The tools' `function` objects go into the system turn, one JSON per line between `<tools>`
    and `</tools>`; an assistant's tool calls are written as `<tool_call>{json}</tool_call>`;
    a `tool` message becomes a `tool` turn holding `<tool_response>...</tool_response>`.
    """
    parts: list[str] = []
    system = [str(m.get("content") or "") for m in messages if m.get("role") == "system"]
    if tools:
        listing = "\n".join(json.dumps(t.get("function", t)) for t in tools)
        system.append(
            "You may call tools. Their signatures are given in <tools></tools>:\n"
            f"<tools>\n{listing}\n</tools>\n"
            'Call one by writing <tool_call>{"name": NAME, "arguments": {...}}</tool_call>.'
        )
    if system:
        parts.append(f"{IM_START}system\n" + "\n\n".join(s for s in system if s) + f"{IM_END}\n")
    for m in messages:
        role = m.get("role")
        if role == "system":
            continue
        content = str(m.get("content") or "")
        if role == "assistant":
            for c in m.get("tool_calls") or []:
                fn = c["function"]
                try:
                    args: Any = json.loads(fn.get("arguments") or "{}")
                except json.JSONDecodeError:
                    args = fn.get("arguments")
                call = json.dumps({"name": fn["name"], "arguments": args})
                content += ("\n" if content else "") + f"<tool_call>{call}</tool_call>"
        elif role == "tool":
            content = f"<tool_response>{content}</tool_response>"
        parts.append(f"{IM_START}{role}\n{content}{IM_END}\n")
    parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


def parse_tool_calls(text: str) -> AssistantMessage:
    """Split a model's text into content and `<tool_call>` blocks.

    A block whose JSON does not parse, or lacks `name`, is kept as a call named `""` with the raw
    text as its arguments, so that the agent can tell the model what was wrong with it.
    """
    calls: list[ToolCall] = []
    for i, m in enumerate(_CALL.finditer(text)):
        raw = m.group(1)
        try:
            obj = json.loads(raw)
            name = obj["name"]
            args = obj.get("arguments", {})
            if not isinstance(name, str):
                raise TypeError(name)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            calls.append(ToolCall(f"call_{i}", "", raw))
            continue
        calls.append(
            ToolCall(f"call_{i}", name, args if isinstance(args, str) else json.dumps(args))
        )
    content = _CALL.sub("", text).strip()
    return AssistantMessage(content or None, tuple(calls))


class _ChatMLTokenizer:
    """The model's tokenizer with ChatML's `<|im_start|>` and `<|im_end|>` read as their special
    ids (as the fms-llm chat template and server encode them) when the tokenizer has them, and as
    text otherwise; every other special token's text stays refused."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.allowed = {s for s in (IM_START, IM_END) if s in tokenizer.special_tokens}

    def encode(self, text: str) -> list[int]:
        if not self.allowed:
            return list(self.tokenizer.encode(text))
        return list(self.tokenizer.encode(text, allowed_special=self.allowed))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(ids))


class LocalBackend:
    """A saved fms-llm model (`config.json`, `model.safetensors`, `tokenizer.json`) in process.

    Args:
        model_dir: the directory `GPT.save_pretrained` and `BPETokenizer.save` wrote.
        max_new_tokens: tokens generated per reply at most.
        temperature: 0 is greedy (deterministic); above 0 samples, seeded by `seed`.
        seed: the sampling seed.
        device: where to run the model; None picks CUDA when present.

    Raises:
        fms_llm.models.hf.ModelFileError: the directory has no model or no tokenizer, or they
            do not match.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        seed: int = 0,
        device: str | None = None,
    ) -> None:
        from fms_llm.models import GPT
        from fms_llm.models.hf import ModelFileError
        from fms_llm.tokenizer import BPETokenizer
        from fms_llm.train.pretrain import EOS_TOKEN

        path = Path(model_dir)
        tok_path = path / "tokenizer.json"
        if not tok_path.is_file():
            raise ModelFileError(f"{tok_path} does not exist: the model directory has no tokenizer")
        self.model = GPT.from_pretrained(path, map_location=device)
        self.model.eval()
        self.tokenizer = BPETokenizer.load(tok_path)
        if self.tokenizer.vocab_size != self.model.config.vocab_size:
            raise ModelFileError(
                f"tokenizer {tok_path} has vocab_size={self.tokenizer.vocab_size} but the model in "
                f"{path} has vocab_size={self.model.config.vocab_size}"
            )
        self.eos_id = self.tokenizer.special_tokens.get(EOS_TOKEN)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed

    def generate(self, prompt: str) -> str:
        """The model's continuation of `prompt`, cut at `<|im_end|>`."""
        import torch

        from fms_llm.generate import generate_text

        with torch.no_grad():
            return generate_text(
                self.model,
                _ChatMLTokenizer(self.tokenizer),
                prompt,
                self.max_new_tokens,
                temperature=self.temperature,
                top_k=None,
                seed=self.seed,
                eos_id=self.eos_id,
                stop=(IM_END,),
            )

    def complete(self, messages: Sequence[Message], tools: Sequence[JSON] = ()) -> AssistantMessage:
        """Render the conversation (ChatML), generate, and parse `<tool_call>` blocks."""
        return parse_tool_calls(self.generate(render_chatml(messages, tools)))

    def stream(self, messages: Sequence[Message], tools: Sequence[JSON] = ()) -> Iterator[Chunk]:
        """The reply as one chunk of text, then the parsed message."""
        msg = self.complete(messages, tools)
        if msg.content:
            yield Chunk(msg.content)
        yield Chunk("", msg)
