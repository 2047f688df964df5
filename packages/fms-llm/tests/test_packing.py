"""Packing with document masks: several conversations to a row, each computed as if alone.

The claim: [GPT.forward][fms_llm.models.gpt.GPT.forward] with `document_ids` blocks attention
across documents and restarts positions, so the packed rows' mean SFT loss equals the padded,
one-conversation-a-row loss on the same conversations (within 1e-6, float32), its gradients too
(within 1e-6), for RoPE (Llama) and learned positions (GPT-2).
"""

from __future__ import annotations

import pytest
import torch

from fms_llm.finetune.chat import IM_END
from fms_llm.finetune.common import TrainArgs
from fms_llm.finetune.data import arithmetic, story_qa
from fms_llm.finetune.sft import encode_conversations, pack_batch, pad_batch, sft, sft_loss
from fms_llm.models import GPT, GPTConfig, Llama, LlamaConfig
from fms_llm.models.gpt import document_mask
from fms_llm.tokenizer import BPETokenizer


@pytest.fixture(scope="module")
def tok(chat_tok: BPETokenizer) -> BPETokenizer:
    return chat_tok


def _models(vocab: int) -> list[GPT]:
    torch.manual_seed(0)
    return [
        Llama(LlamaConfig(vocab_size=vocab, n_layers=2, d_model=32, n_heads=4, max_seq_len=256)),
        GPT(GPTConfig(vocab_size=vocab, n_layers=2, d_model=32, n_heads=4, max_seq_len=256)),
    ]


def test_document_mask_blocks_other_documents_and_restarts_positions() -> None:
    doc = torch.tensor([[0, 0, 0, 1, 1, 2]])
    mask, pos = document_mask(doc, doc.shape)
    assert pos.tolist() == [[0, 1, 2, 0, 1, 0]]
    assert mask.shape == (1, 1, 6, 6)
    assert bool(mask[0, 0, 3, 4])
    assert not bool(mask[0, 0, 3, 2])
    assert not bool(mask[0, 0, 5, 4])
    with pytest.raises(ValueError, match="non-decreasing"):
        document_mask(torch.tensor([[0, 1, 0]]), (1, 3))
    with pytest.raises(ValueError, match="shape of idx"):
        document_mask(torch.tensor([[0, 1]]), (1, 3))


def test_packed_loss_and_gradients_equal_unpacked_within_1e_6(tok: BPETokenizer) -> None:
    convs = [e.messages for e in story_qa(5, seed=2) + arithmetic(5, seed=2)]
    enc = encode_conversations(tok, convs, max_len=257)
    pad = tok.token_to_id(IM_END)
    x, y = pad_batch(enc, pad)
    packed = pack_batch(enc, pad, 256)
    assert packed[0].shape[0] < len(enc)  # really several conversations a row
    assert int((packed[1] != -100).sum()) == int((y != -100).sum())
    for model in _models(tok.vocab_size):
        loss = sft_loss(model, (x, y))
        grads = torch.autograd.grad(loss, list(model.parameters()))
        p_loss = sft_loss(model, packed)
        p_grads = torch.autograd.grad(p_loss, list(model.parameters()))
        assert abs(loss.item() - p_loss.item()) < 1e-6
        for g, pg in zip(grads, p_grads, strict=True):
            torch.testing.assert_close(pg, g, atol=1e-6, rtol=0)
        # and without the document mask, packing would change the loss
        leaky = model(packed[0], packed[1])
        assert abs(leaky.item() - loss.item()) > 1e-4


def test_document_ids_leave_the_unpacked_forward_unchanged(tok: BPETokenizer) -> None:
    ids = torch.tensor([tok.encode("Ada went to the old mill.")])
    for model in _models(tok.vocab_size):
        with torch.no_grad():
            plain = model(ids)
            one_doc = model(ids, document_ids=torch.zeros_like(ids))
        torch.testing.assert_close(one_doc, plain, atol=1e-6, rtol=0)


def test_pack_batch_rejects_a_conversation_longer_than_a_row(tok: BPETokenizer) -> None:
    enc = encode_conversations(tok, [e.messages for e in story_qa(2)], max_len=257)
    with pytest.raises(ValueError, match=r"examples\[0\] has \d+ tokens, more than row_len"):
        pack_batch(enc, 0, 8)


def test_sft_with_packing_trains(tok: BPETokenizer) -> None:
    model = _models(tok.vocab_size)[0]
    convs = [e.messages for e in arithmetic(32, seed=0, ops=("add",))]
    enc = encode_conversations(tok, convs[:16], max_len=257)
    before = sft_loss(model, pad_batch(enc, 0)).item()
    sft(
        model, tok, convs, TrainArgs(steps=15, batch_size=16, lr=1e-2, warmup_steps=2), packing=True
    )
    assert sft_loss(model, pad_batch(enc, 0)).item() < 0.7 * before
