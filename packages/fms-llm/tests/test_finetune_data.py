"""Fine-tuning data: exact answers, held-out splits, preference pairs, reward, dialogues; SFT's mask."""

from __future__ import annotations

import pytest
import torch

from fms_llm.finetune.chat import IM_END, ChatError, ChatTemplate
from fms_llm.finetune.common import TrainArgs
from fms_llm.finetune.data import (
    QUESTION_TEMPLATES,
    DataError,
    arithmetic,
    chatterbot_dialogues,
    exact_match_reward,
    preference_pairs,
    split,
    story_documents,
    story_qa,
)
from fms_llm.finetune.sft import accuracy, encode_conversations, pad_batch, sft
from fms_llm.models import Llama, LlamaConfig
from fms_llm.tokenizer import BPETokenizer


def test_answers_are_exact_and_in_the_story() -> None:
    for e in arithmetic(300, seed=3):
        a, op, b = (
            e.messages[1]["content"].split("?")[0].split()[-3:]
            if e.template == 0
            else (None, None, None)
        )
        if a is not None:
            assert str(eval(f"{a} {op} {b}")) == e.answer
        assert e.answer not in e.wrong
    for e in story_qa(300, seed=3):
        story = e.messages[1]["content"]
        assert e.answer in story
        assert e.answer not in e.wrong
        assert e.messages[-1] == {"role": "assistant", "content": e.answer}
    assert story_qa(20, seed=5) == story_qa(20, seed=5)


def test_story_documents_ask_every_kind_about_one_story() -> None:
    docs = story_documents(200, seed=4)
    assert story_documents(5, seed=4) == docs[:5]
    templates = set()
    for doc in docs:
        assert sorted(e.kind for e in doc) == ["found", "met", "next", "where"]
        stories = {e.messages[1]["content"].split("\n")[0] for e in doc}
        assert len(stories) == 1
        for e in doc:
            assert e.answer in e.messages[1]["content"].split("\n")[0]
            assert e.answer not in e.wrong
            templates.add((e.kind, e.template))
    assert len(templates) == sum(
        len(QUESTION_TEMPLATES[k]) for k in ("where", "found", "met", "next")
    )
    with pytest.raises(DataError, match="n must be >= 0"):
        story_documents(-1)


def test_held_out_splits_share_no_template_or_entity() -> None:
    ex = story_qa(600) + arithmetic(200)
    train, test = split(ex, "template")
    assert test
    assert all(e.template < len(QUESTION_TEMPLATES[e.kind]) - 1 for e in train)
    assert all(e.template == len(QUESTION_TEMPLATES[e.kind]) - 1 for e in test)
    train, test = split(ex, "entity")
    assert test
    assert not {e.entity for e in train} & {e.entity for e in test}
    with pytest.raises(DataError, match="by must be"):
        split(ex, "kind")  # type: ignore[arg-type]


def test_preference_pairs_and_reward() -> None:
    ex = story_qa(50) + arithmetic(50)
    pairs = preference_pairs(ex)
    assert len(pairs) == 100
    assert all(
        exact_match_reward(p.chosen, e.answer) == 1.0 for p, e in zip(pairs, ex, strict=True)
    )
    assert all(
        exact_match_reward(p.rejected, e.answer) == 0.0 for p, e in zip(pairs, ex, strict=True)
    )
    assert exact_match_reward(" The Garden.<|im_end|>junk", "the garden") == 1.0
    assert exact_match_reward("42 ", "41") == 0.0


def test_chatterbot_dialogues_are_multi_turn_conversations() -> None:
    convs = chatterbot_dialogues()
    assert len(convs) > 500
    assert all(c[0]["role"] == "user" and c[1]["role"] == "assistant" for c in convs)
    ChatTemplate().render(convs[0])
    with pytest.raises(DataError, match="no data for language"):
        chatterbot_dialogues("klingon")


@pytest.fixture(scope="module")
def tok(chat_tok: BPETokenizer) -> BPETokenizer:
    return chat_tok


def test_sft_targets_are_exactly_the_assistant_tokens(tok: BPETokenizer) -> None:
    convs = [e.messages for e in arithmetic(4)]
    enc = encode_conversations(tok, convs, max_len=200)
    x, y = pad_batch(enc, tok.token_to_id(IM_END))
    for i, (ids, mask) in enumerate(enc):
        targets = [t for t in y[i].tolist() if t != -100]
        assert targets == [t for t, m in zip(ids, mask, strict=True) if m]
        assert tok.decode(targets) == convs[i][-1]["content"] + IM_END
        assert x[i, : len(ids) - 1].tolist() == ids[:-1]
    with pytest.raises(ChatError, match=r"conversations\[1\]: the conversation has no assistant"):
        encode_conversations(tok, [convs[0], convs[1][:2]], max_len=200)


def test_sft_learns_arithmetic_answers_on_a_tiny_model(tok: BPETokenizer) -> None:
    torch.manual_seed(0)
    model = Llama(
        LlamaConfig(vocab_size=tok.vocab_size, n_layers=1, d_model=64, n_heads=2, max_seq_len=64)
    )
    train = arithmetic(64, seed=0, ops=("add",))
    x, y = pad_batch(encode_conversations(tok, [e.messages for e in train[:16]], max_len=64), 0)
    before = model(x, y).item()
    result = sft(
        model,
        tok,
        [e.messages for e in train],
        TrainArgs(steps=40, batch_size=16, lr=1e-2, warmup_steps=2),
    )
    after = model(x, y).item()
    assert result.n_conversations == 64
    assert after < 0.5 * before
    assert 0.0 <= accuracy(model, tok, train[:8]) <= 1.0
