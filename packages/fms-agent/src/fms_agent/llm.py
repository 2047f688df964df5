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
- [LocalBackend][fms_agent.llm.LocalBackend] runs a saved fms-llm model in process, with the
  fms-llm server's own tool-call text protocol (the Hermes/Qwen convention, in
  [fms_llm.finetune.chat][]): the tools' schemas sit in the system turn between `<tools>` and
  `</tools>` ([tools_system_prompt][fms_llm.finetune.chat.tools_system_prompt]), the model calls
  a tool by writing `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
  ([parse_tool_calls][fms_llm.finetune.chat.parse_tool_calls] reads it), and a result comes
  back as a `tool` turn. One format, whichever way the model runs: what the server would answer
  is what runs in process.
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


class LocalBackend:
    """A saved fms-llm chat model (`config.json`, `model.safetensors`, `tokenizer.json`) in process,
    prompted and read exactly as the fms-llm server prompts and reads it.

    The conversation goes through the directory's chat template (the `chat_template` saved in
    `tokenizer_config.json`, which must be fms-llm's ChatML; ChatML when none is saved), with the
    tools' prompt of [add_tools_prompt][fms_llm.finetune.chat.add_tools_prompt] in its system
    turn; generation stops at the model's end-of-text id (`generation_config.json`'s
    `eos_token_id`, else `<|endoftext|>`) or `<|im_end|>`, or at the context's end; with tools on
    offer, the reply's `<tool_call>` blocks are read by
    [parse_tool_calls][fms_llm.finetune.chat.parse_tool_calls]. These are the server's own
    functions (`fms_llm.serve` imports them from [fms_llm.finetune.chat][]), so greedy decoding
    gives the same reply here as over HTTP; only the random tool-call ids differ.

    Args:
        model_dir: the directory `GPT.save_pretrained` and `BPETokenizer.save` wrote, with a
            tokenizer that has `<|im_start|>` and `<|im_end|>` (as `fms-llm finetune` saves).
        max_new_tokens: tokens generated per reply at most (fewer when the context ends first).
        temperature: 0 is greedy (deterministic); above 0 samples, seeded by `seed`.
        seed: the sampling seed.
        device: where to run the model; None picks CUDA when present.

    Raises:
        fms_llm.models.hf.ModelFileError: the directory has no model or no tokenizer, they do
            not match, the tokenizer lacks the ChatML special tokens, or the saved chat template
            is not fms-llm's ChatML.
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
        from fms_llm.finetune.chat import IM_END, ChatTemplate, saved_chat_setup
        from fms_llm.models.hf import ModelFileError, load_with_tokenizer

        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
            raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        path = Path(model_dir)
        self.model, self.tokenizer = load_with_tokenizer(path, map_location=device)
        self.model.eval()
        specials = self.tokenizer.special_tokens
        self.template = ChatTemplate()
        missing = [s for s in self.template.special_tokens if s not in specials]
        if missing:
            raise ModelFileError(
                f"the tokenizer in {path} lacks the chat special tokens {missing}: LocalBackend "
                "renders chats as the fms-llm server does, in ChatML; fine-tune the model with "
                "fms-llm finetune (which adds them) first"
            )
        _, eos_ids = saved_chat_setup(path, specials)  # the server's reading of the directory
        self.stop_ids = frozenset(int(i) for i in [*eos_ids, specials[IM_END]])
        self.max_new_tokens = max_new_tokens
        self.temperature = float(temperature)
        self.seed = seed

    def prompt_ids(self, messages: Sequence[Message], tools: Sequence[JSON] = ()) -> list[int]:
        """The token ids the model reads: the conversation with the tools' prompt, in ChatML,
        ending with the assistant's header.

        Raises:
            BackendError: a malformed conversation.
        """
        from fms_llm.finetune.chat import ChatError, add_tools_prompt

        try:
            ids, _ = self.template.encode(
                self.tokenizer,
                add_tools_prompt(messages, tools),
                add_generation_prompt=True,
                require_assistant=False,
            )
        except ChatError as e:
            raise BackendError(f"messages cannot be rendered: {e}") from e
        return ids

    def generate(self, ids: Sequence[int]) -> str:
        """The model's continuation of the prompt `ids`, up to a stop id (not included).

        Raises:
            BackendError: the prompt fills the model's context.
        """
        import torch

        from fms_llm.generate import generate

        room = self.model.max_seq_len - len(ids)
        if room < 1:
            raise BackendError(
                f"the prompt has {len(ids)} tokens; the model's context is "
                f"{self.model.max_seq_len}: shorten the conversation"
            )
        device = next(iter(self.model.parameters())).device
        prompt = torch.tensor([list(ids)], dtype=torch.long, device=device)
        out = generate(
            self.model,
            prompt,
            min(self.max_new_tokens, room),
            temperature=self.temperature,
            top_k=None,
            seed=self.seed,
            on_token=lambda t: int(t[0]) in self.stop_ids,
        )
        new = [int(t) for t in out[0, len(ids) :]]
        if new and new[-1] in self.stop_ids:
            new = new[:-1]
        return str(self.tokenizer.decode(new))

    def complete(self, messages: Sequence[Message], tools: Sequence[JSON] = ()) -> AssistantMessage:
        """Render the conversation (with the tools' prompt), generate, and, when tools are on
        offer, read the `<tool_call>` blocks."""
        from fms_llm.finetune.chat import parse_tool_calls

        text = self.generate(self.prompt_ids(messages, tools))
        if not tools:
            return AssistantMessage(text)
        content, calls = parse_tool_calls(text)
        return AssistantMessage.from_dict({"content": content, "tool_calls": calls})

    def stream(self, messages: Sequence[Message], tools: Sequence[JSON] = ()) -> Iterator[Chunk]:
        """The reply as one chunk of text, then the parsed message."""
        msg = self.complete(messages, tools)
        if msg.content:
            yield Chunk(msg.content)
        yield Chunk("", msg)
