"""ChatTemplate against transformers' apply_chat_template: same text, same ids, same assistant
mask; the tool-call text protocol (the tools' prompt and the `<tool_call>` parser) it shares with
the server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from fms_llm.finetune.chat import (
    CHATML_TEMPLATE,
    IM_END,
    IM_START,
    ChatError,
    ChatTemplate,
    add_tools_prompt,
    parse_tool_calls,
    tools_system_prompt,
)
from fms_llm.tokenizer import BPETokenizer

CONVERSATIONS = [
    [
        {"role": "system", "content": "You answer questions about stories."},
        {"role": "user", "content": "Where did Ada go?"},
        {"role": "assistant", "content": "The garden."},
    ],
    [
        {"role": "user", "content": "What is 17 + 25?"},
        {"role": "assistant", "content": " 42"},
        {"role": "user", "content": "And   times two?\n"},
        {"role": "assistant", "content": "\n84 — ça va."},
    ],
    [  # tool use, OpenAI's message format
        {"role": "user", "content": "What is 123 * 45?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expr": "123 * 45"}'},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "note", "arguments": {"text": "ok", "n": 2}},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "5535"},
        {"role": "assistant", "content": "5535"},
    ],
]


@pytest.fixture(scope="module")
def tokenizers(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[BPETokenizer, PreTrainedTokenizerFast]:
    text = [json.dumps(c, ensure_ascii=False) for c in CONVERSATIONS] * 20
    text += ["Ada went to the garden. Then the cat slept. 17 + 25 = 42."] * 20
    ours = BPETokenizer.train(
        text, vocab_size=400, special_tokens=[IM_START, IM_END], progress=False
    )
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    ours.save(path)
    hf = PreTrainedTokenizerFast(tokenizer_file=str(path))
    hf.chat_template = CHATML_TEMPLATE
    return ours, hf


@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("gen", [False, True])
def test_render_and_ids_equal_apply_chat_template(
    tokenizers: tuple[BPETokenizer, PreTrainedTokenizerFast], conv: int, gen: bool
) -> None:
    ours, hf = tokenizers
    messages = CONVERSATIONS[conv]
    t = ChatTemplate()
    text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
    assert t.render(messages, add_generation_prompt=gen) == text
    ids, _ = t.encode(ours, messages, add_generation_prompt=gen)
    theirs = hf.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=gen, return_dict=True
    )
    assert ids == list(theirs["input_ids"])


@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
def test_assistant_mask_equals_transformers_assistant_masks(
    tokenizers: tuple[BPETokenizer, PreTrainedTokenizerFast], conv: int
) -> None:
    """The mask TRL's `assistant_only_loss` trains on (`assistant_masks` from apply_chat_template)."""
    ours, hf = tokenizers
    messages = CONVERSATIONS[conv]
    ids, mask = ChatTemplate().encode(ours, messages)
    out = hf.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert mask == list(out["assistant_masks"])
    assert ids == list(out["input_ids"])
    # the masked tokens decode to the assistant turns, each with its closing <|im_end|>
    learned = ours.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert learned.count(IM_END) == sum(m["role"] == "assistant" for m in messages)


def test_save_merges_into_an_existing_tokenizer_config(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": IM_END, "x": 1}))
    path = ChatTemplate().save(tmp_path)
    saved = json.loads(path.read_text())
    assert saved == {"eos_token": IM_END, "x": 1, "chat_template": CHATML_TEMPLATE}
    assert not list(tmp_path.glob(".tokenizer_config.*"))  # no temporary file left
    fresh = ChatTemplate().save(tmp_path / "new")
    assert json.loads(fresh.read_text()) == {"chat_template": CHATML_TEMPLATE}


def test_bad_conversations_are_clear_errors(
    tokenizers: tuple[BPETokenizer, PreTrainedTokenizerFast],
) -> None:
    ours, _ = tokenizers
    t = ChatTemplate()
    with pytest.raises(ChatError, match="no assistant turn"):
        t.encode(ours, [{"role": "user", "content": "hi"}])
    with pytest.raises(ChatError, match=r"messages\[1\]: role must be one of"):
        t.render([{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}])
    with pytest.raises(ChatError, match=r"tool_calls\[0\]: a tool call must be"):
        t.render([{"role": "assistant", "content": "", "tool_calls": [{"name": "f"}]}])
    plain = BPETokenizer.train(["hello world"] * 5, vocab_size=260, progress=False)
    with pytest.raises(ChatError, match="lacks the chat special tokens"):
        t.encode(plain, CONVERSATIONS[0])


# -- tools as text: the prompt and the parser the server and in-process clients share ----------

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate an arithmetic expression.",
            "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}},
        },
    }
]


def test_a_rendered_tool_call_parses_back_to_the_same_call() -> None:
    """ChatTemplate's `<tool_call>` layout is what parse_tool_calls reads (name, arguments as a
    JSON string), with text around the calls kept as the content."""
    conv = CONVERSATIONS[2]
    body = ChatTemplate().render(conv[:2]).split(f"{IM_START}assistant\n")[1].split(IM_END)[0]
    content, calls = parse_tool_calls("Let me see. " + body)
    assert content == "Let me see."
    assert [c["function"]["name"] for c in calls] == ["calculator", "note"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"expr": "123 * 45"}
    assert json.loads(calls[1]["function"]["arguments"]) == {"text": "ok", "n": 2}
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
    assert calls[0]["id"] != calls[1]["id"]


def test_parse_tool_calls_leaves_what_is_not_a_call_as_text() -> None:
    assert parse_tool_calls("plain answer") == ("plain answer", [])
    bad = 'x <tool_call>{oops</tool_call> <tool_call>{"arguments": {}}</tool_call>'
    assert parse_tool_calls(bad) == (bad, [])
    content, calls = parse_tool_calls('<tool_call>{"name": "f", "arguments": "{}"}</tool_call>')
    assert content is None
    assert calls[0]["function"]["arguments"] == "{}"


def test_tools_prompt_lists_the_schemas_and_joins_the_system_turn() -> None:
    prompt = tools_system_prompt(TOOLS)
    assert f"<tools>\n{json.dumps(TOOLS[0]['function'])}\n</tools>" in prompt
    assert prompt.endswith(
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )
    user = [{"role": "user", "content": "hi"}]
    assert add_tools_prompt(user, TOOLS) == [{"role": "system", "content": prompt}, *user]
    system = [{"role": "system", "content": "Be brief."}, *user]
    joined = add_tools_prompt(system, TOOLS)
    assert joined[0] == {"role": "system", "content": f"Be brief.\n\n{prompt}"}
    assert system[0]["content"] == "Be brief."  # the input is not modified
    assert add_tools_prompt(system, []) == system


def test_the_tool_protocol_imports_without_fastapi() -> None:
    """fms_llm.finetune.chat holds the protocol so that in-process clients need no web
    framework: it imports with FastAPI blocked."""
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None\n"
        "from fms_llm.finetune.chat import add_tools_prompt, parse_tool_calls\n"
        "print(parse_tool_calls('hi')[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "hi"
