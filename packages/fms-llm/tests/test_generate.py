"""Generation: cached == uncached == transformers' greedy generate; sampling filters; stop strings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import GPT2LMHeadModel, LlamaForCausalLM

from fms_llm.generate import filter_logits, generate, generate_text, sample_next
from fms_llm.models import GPT, GPTConfig, Llama, LlamaConfig


def _models() -> list[GPT]:
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=53, n_layers=2, d_model=32, n_heads=4, max_seq_len=48))
    llama = Llama(LlamaConfig(vocab_size=53, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2,
                              max_seq_len=48))  # fmt: skip
    for m in (gpt, llama):
        with torch.no_grad():  # sharpen the random model so greedy paths are not near-ties
            m.lm_head.weight.mul_(20.0)
    return [gpt.eval(), llama.eval()]


@pytest.mark.parametrize("index", [0, 1], ids=["gpt2", "llama"])
def test_cached_equals_uncached_equals_transformers_greedy(index: int, tmp_path: Path) -> None:
    """Token for token, over 30 new tokens, for a batch of 2 prompts."""
    model = _models()[index]
    prompt = torch.randint(0, 53, (2, 5), generator=torch.Generator().manual_seed(3))
    cached = generate(model, prompt, 30, temperature=0, use_cache=True)
    uncached = generate(model, prompt, 30, temperature=0, use_cache=False)
    assert torch.equal(cached, uncached)
    model.save_pretrained(tmp_path)
    hf_cls = LlamaForCausalLM if index else GPT2LMHeadModel
    hf = hf_cls.from_pretrained(tmp_path).eval()
    ref = hf.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=30, do_sample=False,
        min_new_tokens=30, pad_token_id=0, eos_token_id=None,
    )  # fmt: skip
    assert torch.equal(cached, ref)


@pytest.mark.parametrize("index", [0, 1], ids=["gpt2", "llama"])
def test_sampling_with_seed_is_reproducible_and_cache_invariant(index: int) -> None:
    model = _models()[index]
    prompt = torch.tensor([[1, 2, 3]])
    a = generate(model, prompt, 20, temperature=1.0, top_k=10, seed=7, use_cache=True)
    b = generate(model, prompt, 20, temperature=1.0, top_k=10, seed=7, use_cache=False)
    c = generate(model, prompt, 20, temperature=1.0, top_k=10, seed=8, use_cache=True)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generation_past_the_context_keeps_going() -> None:
    model = _models()[0]
    out = generate(model, torch.tensor([[1, 2]]), 60, temperature=0, use_cache=True)
    assert out.shape == (1, 62)
    out2 = generate(model, torch.tensor([[1, 2]]), 60, temperature=0, use_cache=False)
    assert torch.equal(out[:, :48], out2[:, :48])  # identical while within the context


def test_top_k_and_top_p_filters() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    k2 = filter_logits(logits, top_k=2)
    assert torch.isfinite(k2).tolist() == [[True, True, False, False, False]]
    p = filter_logits(logits, top_p=0.7)  # 0.5 + 0.2 reaches 0.7: two tokens
    assert torch.isfinite(p).tolist() == [[True, True, False, False, False]]
    p = filter_logits(logits, top_p=0.71)
    assert torch.isfinite(p).tolist() == [[True, True, True, False, False]]
    p = filter_logits(logits[:, [4, 2, 0, 3, 1]], top_p=0.3)  # order does not matter
    assert torch.isfinite(p).tolist() == [[False, False, True, False, False]]


def test_sample_next_respects_the_distribution() -> None:
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).expand(20000, 3)
    draws = sample_next(logits, temperature=1.0, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=3).float() / 20000
    torch.testing.assert_close(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.015, rtol=0)
    assert sample_next(logits[:1], temperature=0).item() == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"temperature": -1.0}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_p": 1.5}, "top_p")],
)
def test_bad_sampling_arguments(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate(_models()[0], torch.tensor([[1]]), 3, **kwargs)  # type: ignore[arg-type]


class _CharTokenizer:
    def encode(self, text: str) -> list[int]:
        return [ord(c) % 53 for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(97 + i % 26) for i in ids)


def test_stop_strings_cut_the_text() -> None:
    model = _models()[0]
    full = generate_text(model, _CharTokenizer(), "abc", 30, temperature=0)
    assert len(full) == 30
    stop = full[10:12]
    cut = generate_text(model, _CharTokenizer(), "abc", 30, temperature=0, stop=[stop])
    assert cut == full[: full.index(stop)]


def test_generated_ids_are_ordinary_tensors() -> None:
    """Decoding runs in inference mode, but the ids it returns can feed a training step."""
    model = _models()[1].train()
    out = generate(model, torch.zeros(1, 3, dtype=torch.long), 4, temperature=0)
    assert not out.is_inference()
    model(out[:, :-1], out[:, 1:]).backward()  # would raise for an inference tensor
    assert model.tok_emb.weight.grad is not None
