"""`fms_agent.llm`: the scripted back end, the http.client OpenAI back end against a fake endpoint
on 127.0.0.1 (compared with the official openai client on the same replies), its errors, and the
Hermes `<tool_call>` text protocol of the local back end."""

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
    parse_tool_calls,
    render_chatml,
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


def test_hermes_protocol_round_trip() -> None:
    """A tool call rendered into ChatML parses back to the same call; tools sit in <tools>."""
    tools = [{"type": "function", "function": {"name": "add", "parameters": {}}}]
    convo = [
        {"role": "system", "content": "Be brief."},
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_7", "content": "42"},
    ]
    prompt = render_chatml(convo, tools)
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\nYou may call tools")
    assert '<tools>\n{"name": "add", "parameters": {}}\n</tools>' in prompt
    assert "<tool_response>42</tool_response>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    body = prompt.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    parsed = parse_tool_calls(body)
    assert parsed.tool_calls[0].name == "add"
    assert json.loads(parsed.tool_calls[0].arguments) == {"a": 2, "b": 40}


def test_parse_tool_calls_keeps_malformed_blocks() -> None:
    msg = parse_tool_calls(
        'Let me add. <tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call><tool_call>{oops</tool_call>'
    )
    assert msg.content == "Let me add."
    assert msg.tool_calls[0] == ToolCall("call_0", "add", '{"a": 1}')
    assert msg.tool_calls[1] == ToolCall("call_1", "", "{oops")
    assert parse_tool_calls("plain").tool_calls == ()


def test_local_backend_runs_a_saved_fms_llm_model(tmp_path: Any) -> None:
    """A tiny random GPT saved with save_pretrained: LocalBackend loads it, renders the ChatML
    prompt, generates greedily (the same reply twice) and parses the result."""
    import torch

    from fms_agent.llm import LocalBackend
    from fms_llm.models import GPT, GPTConfig
    from fms_llm.tokenizer import BPETokenizer
    from fms_llm.train.pretrain import EOS_TOKEN

    tok = BPETokenizer.train(
        ["hello <tool_call> world </tool_call> 42"] * 4,
        300,
        special_tokens=[EOS_TOKEN],
        progress=False,
    )
    torch.manual_seed(0)
    GPT(
        GPTConfig(vocab_size=tok.vocab_size, n_layers=1, d_model=16, n_heads=2, max_seq_len=512)
    ).save_pretrained(tmp_path)
    tok.save(tmp_path / "tokenizer.json")
    backend = LocalBackend(tmp_path, max_new_tokens=8)
    first = backend.complete(MESSAGES)
    assert first == backend.complete(MESSAGES)
    assert isinstance(first, AssistantMessage)
    assert backend.stream(MESSAGES).__next__().message in (None, first)
