"""Evaluation: an fms-llm model scored through its fused loss gives the same nats as its logits
followed by `F.cross_entropy` (relative 1e-6, float32), for windows and for padded documents."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fms_llm.evaluate import document_loss, metrics_from_nats, window_loss
from fms_llm.models import GPT, GPTConfig, LlamaConfig

REL = 1e-6


class _LogitsOnly(nn.Module):
    """The same model behind a plain module: `evaluate` scores it through its logits."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model
        self.max_seq_len = model.max_seq_len

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)
        return out


def _model(family: str) -> GPT:
    torch.manual_seed(0)
    cfg = (
        GPTConfig(vocab_size=97, n_layers=2, d_model=32, n_heads=4, max_seq_len=32)
        if family == "gpt2"
        else LlamaConfig(vocab_size=97, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2,
                         max_seq_len=32)
    )  # fmt: skip
    model = GPT(cfg).eval()
    with torch.no_grad():  # away from the initialisation, so the loss is not ~ln(vocab)
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_window_loss_fused_equals_logits_path(family: str) -> None:
    model = _model(family)
    rng = np.random.default_rng(0)
    shards = [
        rng.integers(0, 97, 700).astype(np.uint16),
        rng.integers(0, 97, 300).astype(np.uint16),
    ]
    fused = window_loss(model, shards, seq_len=16, batch_size=4, bytes_per_token=3.5)
    plain = window_loss(_LogitsOnly(model), shards, seq_len=16, batch_size=4, bytes_per_token=3.5)
    assert fused["tokens"] == plain["tokens"] > 0
    for key in ("loss", "perplexity", "bits_per_byte"):
        assert fused[key] == pytest.approx(plain[key], rel=REL), key
    assert fused["loss"] > 1.2 * math.log(97)  # confident, wrong logits: a non-trivial softmax


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_document_loss_fused_equals_logits_path_with_padding(family: str) -> None:
    """Documents of different lengths in one batch: the padding targets count for nothing."""
    model = _model(family)
    rng = np.random.default_rng(1)
    docs = [rng.integers(1, 97, n).tolist() for n in (3, 30, 11, 1, 17)]
    fused = document_loss(model, docs, eos_id=0, n_bytes=200, batch_size=3)
    plain = document_loss(_LogitsOnly(model), docs, eos_id=0, n_bytes=200, batch_size=3)
    assert fused["tokens"] == plain["tokens"] == sum(len(d) + 1 for d in docs)
    for key in ("loss", "perplexity", "bits_per_byte"):
        assert fused[key] == pytest.approx(plain[key], rel=REL), key
    # one document alone gives the same loss as in a padded batch
    alone = document_loss(model, docs[1:2], eos_id=0)
    batch = document_loss(model, docs[1:2] + docs[:1], eos_id=0, batch_size=2)
    first = document_loss(model, docs[:1], eos_id=0)
    total = alone["loss"] * alone["tokens"] + first["loss"] * first["tokens"]
    assert batch["loss"] * batch["tokens"] == pytest.approx(total, rel=1e-5)


def test_metrics_from_nats() -> None:
    m = metrics_from_nats(total_nats=200.0, n_tokens=100, n_bytes=400)
    assert m["loss"] == 2.0
    assert m["perplexity"] == pytest.approx(math.exp(2.0))
    assert m["bits_per_byte"] == pytest.approx(200.0 / 400 / math.log(2))
    with pytest.raises(ValueError, match="n_tokens must be > 0"):
        metrics_from_nats(1.0, 0, None)
