"""Speculative decoding: greedy output equals the target's own greedy `generate`, token for token;
sampled output follows the target's distribution (chi-square tests at a stated false-failure
rate, with a check that the same test rejects a wrong rule); acceptance statistics; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from fms_llm.generate import generate
from fms_llm.inference.speculative import SpeculativeDecoder, SpeculativeError, verify
from fms_llm.models import GPT, GPTConfig, Llama, LlamaConfig
from fms_llm.quantize import quantize_linears

# Each chi-square test rejects a correct sampler with probability ALPHA; the seeds are fixed, so
# a run is deterministic, and over random seeds a correct implementation fails 1 run in 1000.
ALPHA = 1e-3


def _expected(probs: np.ndarray, n: int) -> np.ndarray:
    """Expected counts of `n` draws (normalised in float64 so they sum to `n`)."""
    return n * probs / probs.sum()


def _llama(seed: int, vocab: int = 64, layers: int = 2, d: int = 32, std: float = 0.02) -> Llama:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, n_layers=layers, d_model=d, n_heads=4, n_kv_heads=2,
        max_seq_len=96, init_std=std,
    )  # fmt: skip
    return Llama(cfg).eval()


def _gpt(seed: int, vocab: int = 64, layers: int = 2, d: int = 32, std: float = 0.02) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=vocab, n_layers=layers, d_model=d, n_heads=4, max_seq_len=96)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, std)
    return model


@pytest.mark.parametrize("family", ["llama", "gpt"])
@pytest.mark.parametrize("k", [1, 3, 6])
def test_greedy_speculative_equals_target_greedy_token_for_token(family: str, k: int) -> None:
    """Exact equality with `generate(temperature=0)`; the draft is a different random model, so
    rejections and rollbacks happen (checked) as well as acceptances."""
    make = _llama if family == "llama" else _gpt
    target, draft = make(0, std=0.3), make(1, layers=1, d=16, std=0.3)
    prompt = [3, 17, 5, 9]
    ref = generate(target, torch.tensor([prompt]), 40, temperature=0)[0, len(prompt) :].tolist()
    out, stats = SpeculativeDecoder(target, draft, k=k).generate(prompt, 40, temperature=0)
    assert out == ref
    assert stats.emitted == 40
    assert stats.rounds < 40
    assert 0 < stats.accepted < stats.proposed  # both branches ran


def test_greedy_with_the_target_as_its_own_draft_accepts_everything() -> None:
    target = _llama(0, std=0.3)
    prompt = [1, 2, 3]
    ref = generate(target, torch.tensor([prompt]), 30, temperature=0)[0, 3:].tolist()
    out, stats = SpeculativeDecoder(target, target, k=4).generate(prompt, 30, temperature=0)
    assert out == ref
    assert stats.acceptance_rate == 1.0
    assert stats.rounds == 6  # 5 tokens a round: 4 drafts and the bonus


def test_greedy_with_a_quantized_draft_equals_the_float_target() -> None:
    target = _llama(0, std=0.3)
    draft = _llama(0, std=0.3)
    quantize_linears(draft, "int8")
    prompt = [4, 8, 15]
    ref = generate(target, torch.tensor([prompt]), 30, temperature=0)[0, 3:].tolist()
    out, stats = SpeculativeDecoder(target, draft, k=4).generate(prompt, 30, temperature=0)
    assert out == ref
    assert stats.acceptance_rate > 0.5  # an int8 copy of the target agrees most of the time


def test_verify_emits_tokens_distributed_as_p_chi_square() -> None:
    """The rule alone: drafts drawn from q, first emitted token distributed as p_1 (and with all
    drafts accepted the bonus from p_{k+1}); 6000 draws, chi-square at ALPHA. The same test
    rejects 'always keep the draft' (tokens distributed as q), so it can fail."""
    g = torch.Generator().manual_seed(0)
    v, k, n = 6, 2, 6000
    p = torch.softmax(torch.randn(k + 1, v, generator=g) * 1.5, dim=-1)
    q = torch.softmax(torch.randn(k, v, generator=g) * 1.5, dim=-1)
    first = np.zeros(v)
    naive = np.zeros(v)
    all_drafts = torch.multinomial(q, n, replacement=True, generator=g).T  # (n, k)
    for drafts in all_drafts:
        n_acc, token = verify(p, q, drafts, g)
        first[int(drafts[0]) if n_acc > 0 else token] += 1
        naive[int(drafts[0])] += 1
    assert chisquare(first, _expected(p[0].double().numpy(), n)).pvalue > ALPHA
    assert chisquare(naive, _expected(p[0].double().numpy(), n)).pvalue < ALPHA


def _exact_pair_distribution(model: Llama, prompt: list[int], temperature: float) -> np.ndarray:
    """P(t1, t2 | prompt) of the target sampled at `temperature`, by enumerating t1."""
    v = model.config.vocab_size
    with torch.no_grad():
        p1 = torch.softmax(model(torch.tensor([prompt]))[0, -1].double() / temperature, -1)
        rows = torch.tensor([[*prompt, t] for t in range(v)])
        p2 = torch.softmax(model(rows)[:, -1].double() / temperature, -1)
    return (p1[:, None] * p2).numpy()


def test_sampled_pairs_follow_the_target_distribution_chi_square() -> None:
    """End to end with models, vocabulary 4: the first two emitted tokens (16 cells) over 1200
    seeded runs match the target's exact joint distribution (chi-square at ALPHA), and the draft's
    own joint distribution is rejected by the same test. Each run proposes one draft at the
    prompt (k is cut to max_new_tokens - 1 = 1), so the acceptance rate estimates
    alpha = sum_z min(p(z), q(z)): checked within 4 standard errors."""
    v, prompt, temp, n = 4, [1, 3, 2], 1.0, 1200
    target, draft = _llama(0, vocab=v, std=0.5), _llama(5, vocab=v, layers=1, d=16, std=0.5)
    decoder = SpeculativeDecoder(target, draft, k=2)
    counts = np.zeros((v, v))
    accepted = proposed = 0
    for seed in range(n):
        out, stats = decoder.generate(prompt, 2, temperature=temp, seed=seed)
        counts[out[0], out[1]] += 1
        accepted, proposed = accepted + stats.accepted, proposed + stats.proposed
    expected = _exact_pair_distribution(target, prompt, temp)
    assert chisquare(counts.ravel(), _expected(expected.ravel(), n)).pvalue > ALPHA
    drafted = _exact_pair_distribution(draft, prompt, temp)
    assert chisquare(counts.ravel(), _expected(drafted.ravel(), n)).pvalue < ALPHA
    alpha = float(np.minimum(expected.sum(1), drafted.sum(1)).sum())
    assert proposed == n
    assert abs(accepted / n - alpha) < 4 * (alpha * (1 - alpha) / n) ** 0.5


def test_seeded_sampling_is_reproducible_and_respects_eos_and_length() -> None:
    target, draft = _llama(0, std=0.3), _llama(1, layers=1, d=16, std=0.3)
    decoder = SpeculativeDecoder(target, draft, k=3)
    a, _ = decoder.generate([1, 2], 25, temperature=0.8, top_k=20, seed=7)
    b, _ = decoder.generate([1, 2], 25, temperature=0.8, top_k=20, seed=7)
    assert a == b
    assert len(a) == 25
    eos = a[10]
    c, _ = decoder.generate([1, 2], 25, temperature=0.8, top_k=20, seed=7, eos_id=eos)
    assert c == a[: a.index(eos) + 1]
    for n in range(6):  # every length, including the ones a round overshoots
        assert len(decoder.generate([1, 2], n, temperature=0)[0]) == n


def test_bad_input_names_the_argument() -> None:
    target = _llama(0)
    with pytest.raises(SpeculativeError, match=r"vocab_size=64.*vocab_size=32"):
        SpeculativeDecoder(target, _llama(1, vocab=32), k=2)
    for bad_k in (0, -1, 1.5, True):
        with pytest.raises(SpeculativeError, match="k \\(draft tokens per round\\)"):
            SpeculativeDecoder(target, target, k=bad_k)  # type: ignore[arg-type]
    decoder = SpeculativeDecoder(target, target, k=2)
    with pytest.raises(SpeculativeError, match="empty prompt"):
        decoder.generate([], 3)
    with pytest.raises(SpeculativeError, match="in \\[0, 64\\)"):
        decoder.generate([70], 3)
    with pytest.raises(SpeculativeError, match="max_new_tokens"):
        decoder.generate([1], -1)
    with pytest.raises(SpeculativeError, match="exceeds the shorter context"):
        decoder.generate([1] * 90, 10)
    with pytest.raises(SpeculativeError, match="one sequence"):
        decoder.generate(torch.zeros(2, 3, dtype=torch.long), 3)
    with pytest.raises(SpeculativeError, match="temperature"):
        decoder.generate([1], 3, temperature=-1)


def test_verify_checks_shapes() -> None:
    with pytest.raises(SpeculativeError, match="k \\+ 1, vocab"):
        verify(torch.ones(2, 4) / 4, torch.ones(2, 4) / 4, torch.tensor([0, 1]))
    # all-accept path returns k, and k = 0 draws from p directly
    p = torch.tensor([[0.0, 1.0, 0.0]])
    assert verify(p, p.new_empty(0, 3), torch.tensor([], dtype=torch.long)) == (0, 1)
