r"""The chat template: a conversation as one token sequence, and which of its tokens the model must learn.

A chat model sees a conversation, a list of OpenAI-style messages
(`{"role": "system" | "user" | "assistant" | "tool", "content": ...}`), flattened into one string
with markers around each turn. We use the ChatML layout (OpenAI, also Qwen's):

```text
<|im_start|>system
You answer questions about stories.<|im_end|>
<|im_start|>user
Where did Ada go?<|im_end|>
<|im_start|>assistant
The garden.<|im_end|>
```

`<|im_start|>` and `<|im_end|>` are special tokens (one id each, never merged with text). Supervised
fine-tuning learns $p(\text{assistant turn} \mid \text{everything before it})$, so the loss counts
only the tokens the model would have to produce: each assistant turn's content and its closing
`<|im_end|>` (the stop signal), not the `<|im_start|>assistant\n` header the runtime writes, nor
the user's or the system's words. That set is the *assistant mask*.

Tool use in the same format (for agents): an assistant message may carry OpenAI `tool_calls`,
each rendered as `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>` inside the
assistant turn (so the model learns to emit them), and the tool's answer comes back as a
`tool` turn (not learned).

The same layout is also written as a Hugging Face `chat_template` (Jinja, with
`{% generation %}` around what the mask covers), saved into `tokenizer_config.json`, so
`transformers`' `apply_chat_template` renders the same ids and its `assistant_masks` (what TRL's
`assistant_only_loss` trains on) equal ours; both are tested.

The tools on offer reach the model as text too, in the Hermes / Qwen 2.5 convention:
[tools_system_prompt][fms_llm.finetune.chat.tools_system_prompt] lists their JSON schemas
between `<tools>` and `</tools>` in the system turn
([add_tools_prompt][fms_llm.finetune.chat.add_tools_prompt] puts it there), and
[parse_tool_calls][fms_llm.finetune.chat.parse_tool_calls] reads the model's `<tool_call>`
blocks back into OpenAI `tool_calls`. The server (`fms_llm.serve`) and in-process clients (the
agent's `LocalBackend`) both use these, so a model sees the same prompt and its calls are read
the same way whichever way it is run.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from fms_dl.files import atomic_write_text

__all__ = [
    "CHATML_TEMPLATE",
    "IM_END",
    "IM_START",
    "TOOL_CALL_START",
    "ChatError",
    "ChatTemplate",
    "Message",
    "add_tools_prompt",
    "parse_tool_calls",
    "saved_chat_setup",
    "tools_system_prompt",
    "validate_messages",
]

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ROLES = ("system", "user", "assistant", "tool")

Message = Mapping[str, Any]

# One line, no Jinja whitespace control needed; `\n` inside the Jinja string literals is a newline.
CHATML_TEMPLATE = "".join(
    [
        "{% for message in messages %}",
        "{% if message['role'] == 'assistant' %}",
        r"{{ '<|im_start|>assistant\n' }}",
        "{% generation %}",
        "{% if message['content'] %}{{ message['content'] }}{% endif %}",
        "{% if message['tool_calls'] is defined and message['tool_calls'] %}",
        "{% for tc in message['tool_calls'] %}",
        r"{% if message['content'] or not loop.first %}{{ '\n' }}{% endif %}",
        r"{{ '<tool_call>\n{\"name\": ' }}{{ tc['function']['name'] | tojson }}",
        r"{{ ', \"arguments\": ' }}",
        "{% if tc['function']['arguments'] is string %}{{ tc['function']['arguments'] }}",
        "{% else %}{{ tc['function']['arguments'] | tojson }}{% endif %}",
        r"{{ '}\n</tool_call>' }}",
        "{% endfor %}",
        "{% endif %}",
        "{{ '<|im_end|>' }}",
        "{% endgeneration %}",
        r"{{ '\n' }}",
        "{% else %}",
        r"{{ '<|im_start|>' + message['role'] + '\n' }}",
        "{% if message['content'] %}{{ message['content'] }}{% endif %}",
        r"{{ '<|im_end|>\n' }}",
        "{% endif %}",
        "{% endfor %}",
        r"{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    ]
)
"""The Hugging Face `chat_template` (Jinja) equal to [ChatTemplate.render][fms_llm.finetune.chat.ChatTemplate.render]."""


class ChatError(ValueError):
    """A conversation that cannot be rendered or trained on."""


class _Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def token_to_id(self, token: str | bytes) -> int: ...


def _content(message: Message, where: str) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if not isinstance(content, str):
        raise ChatError(f"{where}: content must be a string or None, got {type(content).__name__}")
    return content


def _tool_call_text(call: Any, where: str) -> str:
    if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
        raise ChatError(
            f"{where}: a tool call must be {{'type': 'function', 'function': {{'name': ..., "
            f"'arguments': ...}}}} (OpenAI's format), got {call!r}"
        )
    fn = call["function"]
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise ChatError(
            f"{where}: tool call function name must be a non-empty string, got {name!r}"
        )
    args = fn.get("arguments", {})
    args_text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return (
        '<tool_call>\n{"name": '
        + json.dumps(name, ensure_ascii=False)
        + ', "arguments": '
        + args_text
        + "}\n</tool_call>"
    )


def validate_messages(messages: Sequence[Message], *, require_assistant: bool = True) -> None:
    """Check a conversation before any work: roles, contents, tool calls, an assistant turn.

    Raises:
        ChatError: naming the message index and what is wrong; with `require_assistant`, a
            conversation without an assistant turn (nothing to learn from).
    """
    if isinstance(messages, str | bytes):  # type: ignore[unreachable]
        raise ChatError("messages must be a non-empty list of dicts, got a string")
    if not messages:
        raise ChatError("messages must be a non-empty list of dicts, got an empty list")
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            raise ChatError(f"{where} must be a dict with 'role' and 'content', got {m!r:.80}")
        role = m.get("role")
        if role not in ROLES:
            raise ChatError(f"{where}: role must be one of {ROLES}, got {role!r}")
        _content(m, where)
        calls = m.get("tool_calls")
        if calls:
            if role != "assistant":
                raise ChatError(f"{where}: only assistant messages carry tool_calls, not {role!r}")
            for j, call in enumerate(calls):
                _tool_call_text(call, f"{where}.tool_calls[{j}]")
    if require_assistant and not any(m["role"] == "assistant" for m in messages):
        raise ChatError(
            f"the conversation has no assistant turn (roles: {[m['role'] for m in messages]}); "
            "there is nothing to learn from it"
        )


class ChatTemplate:
    r"""Render conversations in ChatML and mark the assistant tokens.

    The Python rendering here is the definition; [CHATML_TEMPLATE][fms_llm.finetune.chat.CHATML_TEMPLATE]
    is the same as Jinja for Hugging Face tools, tested equal.

    Example:
        >>> t = ChatTemplate()
        >>> print(t.render([{"role": "user", "content": "Hi"}], add_generation_prompt=True))
        <|im_start|>user
        Hi<|im_end|>
        <|im_start|>assistant
        <BLANKLINE>
    """

    special_tokens: tuple[str, str] = (IM_START, IM_END)
    jinja: str = CHATML_TEMPLATE

    def segments(
        self, messages: Sequence[Message], *, add_generation_prompt: bool = False
    ) -> list[tuple[str, bool]]:
        """The rendered text as `(piece, is_assistant)` pieces, in order (concatenated: `render`)."""
        validate_messages(messages, require_assistant=False)
        out: list[tuple[str, bool]] = []
        for i, m in enumerate(messages):
            role, content = m["role"], _content(m, f"messages[{i}]")
            if role == "assistant":
                out.append((f"{IM_START}assistant\n", False))
                body = content
                for j, call in enumerate(m.get("tool_calls") or ()):
                    if content or j > 0:
                        body += "\n"
                    body += _tool_call_text(call, f"messages[{i}].tool_calls[{j}]")
                out.append((body + IM_END, True))
                out.append(("\n", False))
            else:
                out.append((f"{IM_START}{role}\n{content}{IM_END}\n", False))
        if add_generation_prompt:
            out.append((f"{IM_START}assistant\n", False))
        return out

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> str:
        """The conversation as one string (with a trailing assistant header if asked)."""
        return "".join(
            p for p, _ in self.segments(messages, add_generation_prompt=add_generation_prompt)
        )

    def encode(
        self,
        tokenizer: _Tokenizer,
        messages: Sequence[Message],
        *,
        add_generation_prompt: bool = False,
        require_assistant: bool = True,
    ) -> tuple[list[int], list[int]]:
        """Token ids and the assistant mask (1 on tokens the model must learn, else 0).

        The text is cut at the special tokens, which become their single ids; the text between
        them is encoded by `tokenizer.encode` (special tokens always split pre-tokenisation, so
        this equals encoding the whole string). Where an assistant turn starts inside a piece,
        the token holding its first character is the first masked one (as Hugging Face finds
        it from character offsets).

        Args:
            tokenizer: a [BPETokenizer][fms_llm.tokenizer.BPETokenizer] (or anything with
                `encode` and `token_to_id`) that has `<|im_start|>` and `<|im_end|>` as specials.
            messages: the conversation.
            add_generation_prompt: end with the assistant header (for generation).
            require_assistant: raise if no assistant turn (training data must have one).

        Raises:
            ChatError: a malformed conversation, no assistant turn (with `require_assistant`),
                or a tokenizer without the two special tokens.
        """
        validate_messages(messages, require_assistant=require_assistant)
        try:
            special = {s: tokenizer.token_to_id(s) for s in self.special_tokens}
        except (KeyError, ValueError) as err:
            raise ChatError(
                f"the tokenizer lacks the chat special tokens {self.special_tokens}; train or "
                f"extend it with special_tokens={list(self.special_tokens)} ({err})"
            ) from None
        ids: list[int] = []
        mask: list[int] = []
        pending = ""  # text since the last special token
        pending_mask_from: int | None = None  # where, in `pending`, the assistant text starts

        def flush() -> None:
            nonlocal pending, pending_mask_from
            if not pending:
                pending_mask_from = None
                return
            piece_ids = tokenizer.encode(pending)
            if pending_mask_from is None:
                ids.extend(piece_ids)
                mask.extend([0] * len(piece_ids))
            elif pending_mask_from == 0:
                ids.extend(piece_ids)
                mask.extend([1] * len(piece_ids))
            else:
                head = tokenizer.encode(pending[:pending_mask_from])
                k = 0
                while k < min(len(head), len(piece_ids)) and head[k] == piece_ids[k]:
                    k += 1
                ids.extend(piece_ids)
                mask.extend([0] * k + [1] * (len(piece_ids) - k))
            pending = ""
            pending_mask_from = None

        for text, is_assistant in self.segments(
            messages, add_generation_prompt=add_generation_prompt
        ):
            pos = 0
            while pos < len(text):
                hits = [(text.find(s, pos), s) for s in self.special_tokens]
                hits = [(at, s) for at, s in hits if at >= 0]
                at, tok = min(hits) if hits else (len(text), "")
                chunk = text[pos:at]
                if chunk:
                    if is_assistant and pending_mask_from is None:
                        pending_mask_from = len(pending)
                    pending += chunk
                if tok:
                    flush()
                    ids.append(special[tok])
                    mask.append(1 if is_assistant else 0)
                    pos = at + len(tok)
                else:
                    pos = at
        flush()
        return ids, mask

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write `chat_template` into `directory/tokenizer_config.json`, keeping what is there.

        The file is read (if present), the `chat_template` key set, and the result written
        atomically (temporary file, fsync, rename). Returns the file's path.
        """
        path = Path(directory) / "tokenizer_config.json"
        config: dict[str, Any] = {}
        if path.exists():
            try:
                config = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ChatError(f"{path}: not valid JSON ({err}); not overwriting it") from None
            if not isinstance(config, dict):
                raise ChatError(f"{path}: expected a JSON object, got {type(config).__name__}")
        config["chat_template"] = self.jinja
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        return path


# -- tools as text ------------------------------------------------------------------------

_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
TOOL_CALL_START = "<tool_call>"


def parse_tool_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """Split an assistant answer into its text and its OpenAI `tool_calls`.

    A call is `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, the layout the chat
    template renders ([ChatTemplate][fms_llm.finetune.chat.ChatTemplate]). A block that is not
    valid JSON with a string `name` stays text. Arguments are sent as a JSON string, as OpenAI
    does.
    """
    calls: list[dict[str, Any]] = []
    kept: list[str] = []
    at = 0
    for match in _TOOL_CALL.finditer(text):
        try:
            obj = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            continue
        args = obj.get("arguments", {})
        kept.append(text[at : match.start()])
        at = match.end()
        calls.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {
                    "name": obj["name"],
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
        )
    kept.append(text[at:])
    content = "".join(kept).strip() if calls else text
    return (content or None) if calls else content, calls


def tools_system_prompt(tools: Sequence[Mapping[str, Any]]) -> str:
    """The tool list as system-prompt text (the Hermes / Qwen 2.5 convention): the functions'
    JSON schemas inside `<tools></tools>` and how to call one."""
    listing = "\n".join(json.dumps(t.get("function", t), ensure_ascii=False) for t in tools)
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{listing}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )


def add_tools_prompt(
    messages: Sequence[Message], tools: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The conversation with the tools' prompt in its system turn, as the server sends it.

    The [tools_system_prompt][fms_llm.finetune.chat.tools_system_prompt] text is appended to the
    first message's content (after a blank line) when that message is a system turn, and is
    a new system turn at the front otherwise. Without tools the messages are returned as they
    are (copied). The input is not modified.
    """
    out = [dict(m) for m in messages]
    if not tools:
        return out
    prefix = tools_system_prompt(tools)
    if out and out[0].get("role") == "system":
        out[0]["content"] = f"{out[0].get('content') or ''}\n\n{prefix}".lstrip()
    else:
        out.insert(0, {"role": "system", "content": prefix})
    return out


def _read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object file's contents; `{}` when the file is absent or holds no object."""
    from fms_llm.models.hf import ModelFileError

    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path} is unreadable or not JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def saved_chat_setup(
    directory: str | os.PathLike[str], special_tokens: Mapping[str, int]
) -> tuple[ChatTemplate | None, tuple[int, ...]]:
    """How a saved model directory says chats are rendered and where a reply ends.

    The one reading of `tokenizer_config.json` and `generation_config.json` that the server
    ([load_served_model][fms_llm.serve.runtime.load_served_model]) and fms-agent's in-process
    back end share, so both render and stop alike.

    Args:
        directory: The model directory.
        special_tokens: Its tokenizer's special tokens (name to id).

    Returns:
        The chat template (ChatML when the tokenizer has `<|im_start|>` and `<|im_end|>`, else
        None) and the end-of-text ids (`generation_config.json`'s `eos_token_id`, one or a list,
        else `<|endoftext|>` when the tokenizer has it).

    Raises:
        fms_llm.models.hf.ModelFileError: a file is unreadable or not JSON, or the saved
            `chat_template` is not fms_llm's ChatML template (the only one rendered here).
    """
    from fms_llm.models.hf import ModelFileError
    from fms_llm.train.pretrain import EOS_TOKEN

    path = Path(directory)
    template: ChatTemplate | None = None
    if all(s in special_tokens for s in ChatTemplate.special_tokens):
        template = ChatTemplate()
        jinja = _read_json_object(path / "tokenizer_config.json").get("chat_template")
        if isinstance(jinja, str) and jinja != template.jinja:
            raise ModelFileError(
                f"{path / 'tokenizer_config.json'} holds a chat_template that is not fms_llm's "
                "ChatML template; fms-llm (its server, and fms-agent's LocalBackend) renders "
                "ChatML only"
            )
    eos = _read_json_object(path / "generation_config.json").get("eos_token_id")
    eos_ids = eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else []
    if not eos_ids and EOS_TOKEN in special_tokens:
        eos_ids = [special_tokens[EOS_TOKEN]]
    return template, tuple(int(i) for i in eos_ids)
