"""`fms_agent.llm`: the scripted back end, the http.client OpenAI back end against a fake endpoint
on 127.0.0.1 (compared with the official openai client on the same replies), its errors, and the
local back end: the fms-llm server's ChatML template and tools' prompt, its `<tool_call>` parser."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from fms_agent.llm import (
    AssistantMessage,
    Backend,
    BackendError,
    OpenAIBackend,
    ScriptedBackend,
    ToolCall,
)

CALL = {
    "id": "call_7",
    "type": "function",
    "function": {"name": "add", "arguments": '{"a": 2, "b": 40}'},
}
TWO_CALLS = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        CALL,
        {
            "id": "call_8",
            "type": "function",
            "function": {"name": "neg", "arguments": '{"x": -3.5}'},
        },
    ],
}
TEXT = {"role": "assistant", "content": "The answer is 42 ."}
MESSAGES = [{"role": "user", "content": "add 2 and 40"}]


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_scripted_backend_replays_and_says_when_empty() -> None:
    b = ScriptedBackend(
        [
            "hi",
            AssistantMessage(None, (ToolCall("1", "f", "{}"),)),
            lambda m: AssistantMessage(str(len(m))),
        ]
    )
    assert isinstance(b, Backend)
    assert b.complete(MESSAGES).content == "hi"
    assert b.complete(MESSAGES).tool_calls[0].name == "f"
    assert b.complete(MESSAGES * 3).content == "3"
    with pytest.raises(
        BackendError, match="ran out of replies: it holds 3 and was asked for reply 4"
    ):
        b.complete(MESSAGES)
    chunks = list(ScriptedBackend(["a b  c"]).stream(MESSAGES))
    assert "".join(c.content for c in chunks) == "a b  c"
    assert chunks[-1].message == AssistantMessage("a b  c")


@pytest.mark.parametrize("reply", [TEXT, TWO_CALLS], ids=["text", "tool_calls"])
@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_openai_backend_sees_what_the_openai_client_sees(
    fake: Any, reply: dict[str, Any], stream: bool
) -> None:
    """Same endpoint, same reply: our http.client back end and the official openai client agree
    on the content and on every tool call (id, name, arguments), streamed or not."""
    import openai

    client = openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0, timeout=10)
    fake.replies = [reply, reply]
    if stream:
        content, calls = "", {}
        for ev in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
            d = ev.choices[0].delta if ev.choices else None
            content += (d.content or "") if d else ""
            for c in (d.tool_calls or []) if d else []:
                slot = calls.setdefault(c.index, ["", "", ""])
                slot[0] = c.id or slot[0]
                slot[1] += (c.function.name or "") if c.function else ""
                slot[2] += (c.function.arguments or "") if c.function else ""
        ref = AssistantMessage(content or None, tuple(ToolCall(*calls[i]) for i in sorted(calls)))
        chunks = list(OpenAIBackend(fake.base_url, "m", timeout=10).stream(MESSAGES))
        ours = chunks[-1].message
        assert "".join(c.content for c in chunks) == (content or "")
    else:
        r = client.chat.completions.create(model="m", messages=MESSAGES).choices[0].message
        ref = AssistantMessage(
            r.content,
            tuple(
                ToolCall(c.id, c.function.name, c.function.arguments) for c in r.tool_calls or []
            ),
        )
        ours = OpenAIBackend(fake.base_url, "m", timeout=10).complete(MESSAGES)
    assert ours is not None
    if ref.content is not None:
        assert ours.content is not None
        assert ours.content.strip() == ref.content.strip()
    else:
        assert ours.content is None
    assert ours.tool_calls == ref.tool_calls
    if reply is TWO_CALLS:
        assert [json.loads(c.arguments) for c in ours.tool_calls] == [
            {"a": 2, "b": 40},
            {"x": -3.5},
        ]


def test_request_carries_model_messages_tools_and_key(fake: Any) -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "add", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    OpenAIBackend(fake.base_url, "tiny", api_key="sk-x", temperature=0.0, max_tokens=9).complete(
        MESSAGES, tools
    )
    body = fake.requests[-1]
    assert body["model"] == "tiny"
    assert body["messages"] == MESSAGES
    assert body["tools"] == tools
    assert body["temperature"] == 0.0
    assert body["max_tokens"] == 9
    assert body["stream"] is False


def test_retries_500_then_succeeds(fake: Any) -> None:
    fake.fail, fake.replies = [500, 503], [TEXT]
    out = OpenAIBackend(fake.base_url, "m", max_retries=2, backoff=0.01).complete(MESSAGES)
    assert out.content == TEXT["content"]
    assert len(fake.requests) == 3


def test_persistent_500_is_a_clear_error_with_the_body(fake: Any) -> None:
    fake.fail = [500, 500, 500]
    with pytest.raises(BackendError, match=r"answered HTTP 500 .*injected 500.*after 3 attempts"):
        OpenAIBackend(fake.base_url, "m", max_retries=2, backoff=0.01).complete(MESSAGES)


def test_4xx_is_not_retried(fake: Any) -> None:
    fake.fail = [400]
    with pytest.raises(BackendError, match=r"HTTP 400 .*injected 400"):
        OpenAIBackend(fake.base_url, "m", max_retries=3, backoff=0.01).stream(MESSAGES).__next__()
    assert len(fake.requests) == 1


def test_malformed_json_answer(fake: Any) -> None:
    fake.garbage = True
    with pytest.raises(BackendError, match="not JSON"):
        OpenAIBackend(fake.base_url, "m", max_retries=0).complete(MESSAGES)


def test_endpoint_down_is_a_clear_bounded_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(
        BackendError, match=rf"cannot reach {url}/chat/completions: .*after 2 attempts"
    ):
        OpenAIBackend(url, "m", timeout=2, max_retries=1, backoff=0.01).complete(MESSAGES)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_url": "localhost:8000"}, "base_url must be an http"),
        ({"timeout": 0}, "timeout must be > 0"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, Any], message: str) -> None:
    args = {"base_url": "http://127.0.0.1:1/v1", "model": "m", **kwargs}
    with pytest.raises(ValueError, match=message):
        OpenAIBackend(**args)


def _chat_model_dir(path: Any, *, chat: bool = True, max_seq_len: int = 512) -> Any:
    """A tiny random GPT saved with its tokenizer (with ChatML's special tokens when `chat`)."""
    import torch

    from fms_llm.finetune.chat import IM_END, IM_START
    from fms_llm.models import GPT, GPTConfig
    from fms_llm.tokenizer import BPETokenizer
    from fms_llm.train.pretrain import EOS_TOKEN

    specials = [EOS_TOKEN, IM_START, IM_END] if chat else [EOS_TOKEN]
    tok = BPETokenizer.train(
        ['hello <tool_call> world </tool_call> {"name": "add"} 42'] * 4,
        300,
        special_tokens=specials,
        progress=False,
    )
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=tok.vocab_size, n_layers=1, d_model=16, n_heads=2, max_seq_len=max_seq_len
    )
    return GPT(config).save_pretrained(path, tok)


TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {}}}]


def test_local_backend_prompts_with_the_servers_template_and_tools_prompt(tmp_path: Any) -> None:
    """The prompt is fms_llm's ChatML with the tools' prompt of fms_llm.finetune.chat in the
    system turn (what `fms_llm.serve` renders), special tokens as their ids."""
    from fms_agent.llm import LocalBackend
    from fms_llm.finetune.chat import ChatTemplate, add_tools_prompt, tools_system_prompt

    backend = LocalBackend(_chat_model_dir(tmp_path), max_new_tokens=8)
    convo = [
        {"role": "system", "content": "Be brief."},
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_7", "content": "42"},
    ]
    ids = backend.prompt_ids(convo, TOOLS)
    expected, _ = ChatTemplate().encode(
        backend.tokenizer,
        add_tools_prompt(convo, TOOLS),
        add_generation_prompt=True,
        require_assistant=False,
    )
    assert ids == expected
    text = backend.tokenizer.decode(ids)
    assert text.startswith(f"<|im_start|>system\nBe brief.\n\n{tools_system_prompt(TOOLS)}")
    assert '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 40}}\n</tool_call>' in text
    assert "<|im_start|>tool\n42<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert ids[0] == backend.tokenizer.special_tokens["<|im_start|>"]


def test_local_backend_generates_greedily_and_reads_tool_calls(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fms_agent.llm import LocalBackend

    backend = LocalBackend(_chat_model_dir(tmp_path), max_new_tokens=8)
    first = backend.complete(MESSAGES)
    assert isinstance(first, AssistantMessage)
    assert first == backend.complete(MESSAGES)
    assert list(backend.stream(MESSAGES))[-1].message == first
    # the reply's <tool_call> blocks are read only when tools are on offer, as the server does
    reply = 'Adding. <tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>'
    monkeypatch.setattr(backend, "generate", lambda ids: reply)
    assert backend.complete(MESSAGES) == AssistantMessage(reply)
    msg = backend.complete(MESSAGES, TOOLS)
    assert msg.content == "Adding."
    assert [(c.name, json.loads(c.arguments)) for c in msg.tool_calls] == [("add", {"a": 1})]
    assert msg.tool_calls[0].id.startswith("call_")


def test_local_backend_refuses_what_the_server_refuses(tmp_path: Any) -> None:
    from fms_agent.llm import LocalBackend
    from fms_llm.models.hf import ModelFileError

    with pytest.raises(ModelFileError, match="lacks the chat special tokens"):
        LocalBackend(_chat_model_dir(tmp_path / "base", chat=False))
    foreign = _chat_model_dir(tmp_path / "foreign")
    (foreign / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    with pytest.raises(ModelFileError, match="not fms_llm's ChatML"):
        LocalBackend(foreign)
    with pytest.raises(ModelFileError, match="does not exist"):
        LocalBackend(tmp_path / "missing")
    short = LocalBackend(_chat_model_dir(tmp_path / "short", max_seq_len=8))
    with pytest.raises(BackendError, match="the model's context is 8"):
        short.complete(MESSAGES)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 1, got 0"):
        LocalBackend(foreign.parent / "short", max_new_tokens=0)
