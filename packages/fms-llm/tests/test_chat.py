"""ChatTemplate against transformers' apply_chat_template: same text, same ids, same assistant mask."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from fms_llm.finetune.chat import CHATML_TEMPLATE, IM_END, IM_START, ChatError, ChatTemplate
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
