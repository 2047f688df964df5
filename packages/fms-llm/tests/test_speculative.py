"""Speculative decoding: greedy output equals the target's own greedy `generate`, token for token;
sampled output follows the target's distribution (chi-square tests at a stated false-failure
rate, with a check that the same test rejects a wrong rule); acceptance statistics; bad input."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from fms_llm.generate import generate
from fms_llm.inference.engine import Engine, SamplingParams
from fms_llm.inference.speculative import SpeculativeDecoder, SpeculativeError, verify
from fms_llm.models import GPT, GPTConfig, Llama, LlamaConfig
from fms_llm.quantize import quantize_linears

Runner = Callable[[Engine, list[tuple[int, list[int], SamplingParams]]], dict[str, list[int]]]

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


# -- speculative decoding inside the continuous-batching engine ---------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt"])
@pytest.mark.parametrize("k", [1, 4])
def test_engine_with_a_draft_equals_each_request_decoded_alone(
    family: str, k: int, engine_run: Runner
) -> None:
    """Greedy, token for token against `generate(target)`: staggered arrivals, two prompts
    sharing a prefix, a pool small enough to preempt; rejections and acceptances both happen."""
    make = _llama if family == "llama" else _gpt
    target, draft = make(0, std=0.3), make(1, layers=1, d=16, std=0.3)
    g = torch.Generator().manual_seed(3)
    shared = torch.randint(0, 64, (9,), generator=g).tolist()
    prompts = [torch.randint(0, 64, (n,), generator=g).tolist() for n in (3, 11, 1, 6, 5)]
    prompts[3], prompts[4] = shared + prompts[3], shared + prompts[4]
    lengths = [20, 7, 33, 12, 25]
    engine = Engine(target, block_size=4, num_blocks=24, max_num_seqs=4, draft=draft,
                    num_speculative_tokens=k)  # fmt: skip
    arrivals = [(2 * i, p, SamplingParams(max_tokens=m, temperature=0))
                for i, (p, m) in enumerate(zip(prompts, lengths, strict=True))]  # fmt: skip
    got = list(engine_run(engine, arrivals).values())
    for prompt, m, out in zip(prompts, lengths, got, strict=True):
        ref = generate(target, torch.tensor([prompt]), m, temperature=0)[0, len(prompt) :]
        assert out == ref.tolist()
    s = engine.stats
    assert 0 < s.accepted_tokens < s.draft_tokens
    assert s.speculative_rounds > 0
    assert 0 < s.acceptance_rate < 1
    assert s.prefix_cached_tokens > 0  # the shared prefix was served from cached blocks
    assert engine.num_blocks_in_use == 0


def test_engine_with_the_target_as_draft_accepts_everything_and_stops_exactly() -> None:
    """Draft = target: every draft accepted, k + 1 tokens a round; a stop token inside a round
    ends the request there (not output), and every max_tokens is met exactly."""
    target = _llama(0, std=0.3)
    prompt = [5, 1, 7]
    ref = generate(target, torch.tensor([prompt]), 30, temperature=0)[0, 3:].tolist()
    engine = Engine(target, block_size=4, draft=target, num_speculative_tokens=4)
    assert engine.generate([prompt], SamplingParams(max_tokens=30, temperature=0)) == [ref]
    assert engine.stats.acceptance_rate == 1.0
    # the prefill's token, 5 rounds of 4 drafts + 1, then a last round of 3 drafts + 1
    assert engine.stats.steps == 1 + 5 + 1
    assert engine.stats.draft_tokens == 5 * 4 + 3
    stop = ref[12]
    cut = engine.generate([prompt], SamplingParams(max_tokens=30, temperature=0,
                                                   stop_token_ids=(stop,)))  # fmt: skip
    assert cut == [ref[: ref.index(stop)]]
    for m in range(1, 8):
        assert engine.generate([prompt], SamplingParams(max_tokens=m, temperature=0)) == [ref[:m]]


def _exact_marginal_23(model: Llama, prompt: list[int], temperature: float) -> np.ndarray:
    """P(t2, t3 | prompt) under `model` sampled at `temperature` (t1 summed out), by enumeration."""
    v = model.config.vocab_size
    with torch.no_grad():
        p1 = torch.softmax(model(torch.tensor([prompt]))[0, -1].double() / temperature, -1)
        rows1 = torch.tensor([[*prompt, a] for a in range(v)])
        p2 = torch.softmax(model(rows1)[:, -1].double() / temperature, -1)  # (t1, t2)
        rows2 = torch.tensor([[*prompt, a, b] for a in range(v) for b in range(v)])
        p3 = torch.softmax(model(rows2)[:, -1].double() / temperature, -1).reshape(v, v, v)
    return (p1[:, None, None] * p2[:, :, None] * p3).sum(0).numpy()


def test_engine_sampling_with_a_draft_follows_the_target_distribution_chi_square() -> None:
    """Vocabulary 4, 1200 seeded requests of 3 tokens run together in batches of 32: the first
    token is sampled from the prefill's logits, then one speculative round (k cut to 1) emits the
    second and third. Their joint distribution (16 cells) matches the target's exact one
    (chi-square at ALPHA); the draft's own is rejected by the same test."""
    v, prompt, temp, n = 4, [1, 3, 2], 1.0, 1200
    target, draft = _llama(0, vocab=v, std=0.5), _llama(5, vocab=v, layers=1, d=16, std=0.5)
    engine = Engine(target, block_size=4, max_num_seqs=32, draft=draft, num_speculative_tokens=3)
    params = [SamplingParams(max_tokens=3, temperature=temp, seed=s) for s in range(n)]
    outs = engine.generate([prompt] * n, params)
    counts = np.zeros((v, v))
    for out in outs:
        counts[out[1], out[2]] += 1
    assert engine.stats.draft_tokens == n  # one draft per request
    expected = _exact_marginal_23(target, prompt, temp)
    assert chisquare(counts.ravel(), _expected(expected.ravel(), n)).pvalue > ALPHA
    drafted = _exact_marginal_23(draft, prompt, temp)
    assert chisquare(counts.ravel(), _expected(drafted.ravel(), n)).pvalue < ALPHA


def test_engine_refuses_a_draft_it_cannot_pair() -> None:
    target = _llama(0)
    with pytest.raises(SpeculativeError, match=r"target vocab_size=64, draft vocab_size=32"):
        Engine(target, draft=_llama(1, vocab=32))
    torch.manual_seed(0)
    short = Llama(LlamaConfig(vocab_size=64, n_layers=1, d_model=16, n_heads=4, n_kv_heads=2,
                              max_seq_len=32))  # fmt: skip
    with pytest.raises(
        SpeculativeError, match=r"max_seq_len=32\) is shorter than the target's \(96\)"
    ):
        Engine(target, draft=short)
    with pytest.raises(ValueError, match="num_speculative_tokens must be a positive int, got 0"):
        Engine(target, draft=target, num_speculative_tokens=0)
