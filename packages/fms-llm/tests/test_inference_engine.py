"""The continuous-batching engine: every request's tokens equal that request decoded alone by
`fms_llm.generate.generate` (greedy: token for token; seeded sampling: the same draws), whatever
the arrival order, chunked prefill, prefix sharing and preemption did to the batch."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from fms_llm.generate import generate
from fms_llm.inference.engine import Engine, SamplingParams
from fms_llm.models import GPT, GPTConfig, Llama, LlamaConfig

Runner = Callable[[Engine, list[tuple[int, list[int], SamplingParams]]], dict[str, list[int]]]

VOCAB = 67


def _model(family: str) -> GPT:
    torch.manual_seed(0)
    if family == "gpt":
        model = GPT(GPTConfig(vocab_size=VOCAB, n_layers=2, d_model=32, n_heads=4, max_seq_len=64))
    else:
        model = Llama(LlamaConfig(vocab_size=VOCAB, n_layers=2, d_model=32, n_heads=4,
                                  n_kv_heads=2, max_seq_len=64))  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))  # sharper distributions: no near-ties in greedy
    return model.eval()


def _prompts(seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    shared = torch.randint(0, VOCAB, (9,), generator=g).tolist()
    lengths = [3, 11, 1, 17, 6, 9]
    prompts = [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]
    prompts[4] = shared + prompts[4]  # two prompts sharing a 9-token prefix (two 4-blocks)
    prompts[5] = shared + prompts[5]
    return prompts


def _alone(model: GPT, prompt: list[int], n: int, **kw: float | int) -> list[int]:
    out = generate(model, torch.tensor([prompt]), n, **kw)  # type: ignore[arg-type]
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("family", ["gpt", "llama"])
@pytest.mark.parametrize("order", ["together", "staggered", "reversed"])
def test_greedy_batched_equals_each_request_decoded_alone(
    family: str, order: str, engine_run: Runner
) -> None:
    """Six prompts (1 to 18 tokens, two sharing a prefix) under continuous batching with a
    4-token block and an 8-token step budget (so prompts are prefilled in chunks beside the
    others' decoding): each request's 12 greedy tokens equal `generate` alone, exactly."""
    model = _model(family)
    prompts = _prompts()
    params = SamplingParams(max_tokens=12, temperature=0)
    want = [_alone(model, p, 12, temperature=0) for p in prompts]
    idx = list(range(len(prompts)))
    if order == "reversed":
        idx.reverse()
    steps = {"together": [0] * 6, "staggered": [0, 2, 3, 7, 8, 15], "reversed": [0] * 6}[order]
    engine = Engine(model, block_size=4, max_num_batched_tokens=8)
    got = engine_run(engine, [(s, prompts[i], params) for s, i in zip(steps, idx, strict=True)])
    by_prompt = dict(zip(idx, got.values(), strict=True))
    for i in range(len(prompts)):
        assert by_prompt[i] == want[i], f"request {i} differs"
    assert engine.num_blocks_in_use == 0  # every block released
    assert engine.stats.prefix_cached_tokens >= 8  # the second sharer reused two full blocks


def test_preemption_recomputes_and_keeps_the_tokens() -> None:
    """A pool of 12 blocks of 4 cannot hold six requests of ~30 positions: requests are preempted
    and recomputed, and still produce the tokens they produce alone."""
    model = _model("llama")
    prompts = _prompts(2)
    params = SamplingParams(max_tokens=14, temperature=0)
    want = [_alone(model, p, 14, temperature=0) for p in prompts]
    engine = Engine(model, block_size=4, num_blocks=12, max_num_batched_tokens=16)
    assert engine.generate(prompts, params) == want
    assert engine.stats.preemptions > 0
    assert engine.num_blocks_in_use == 0


def test_seeded_sampling_equals_generate_with_that_seed_in_any_batch() -> None:
    """temperature 0.9, top_p 0.9, top_k 20: a seeded request draws what `generate` draws alone with
    the same seed, whether it runs alone or batched with others (each request owns its generator)."""
    model = _model("gpt")
    prompts = _prompts(3)
    kw = {"temperature": 0.9, "top_p": 0.9, "top_k": 20}
    params = [SamplingParams(max_tokens=10, seed=100 + i, **kw) for i in range(len(prompts))]  # type: ignore[arg-type]
    want = [_alone(model, p, 10, seed=100 + i, **kw) for i, p in enumerate(prompts)]
    assert Engine(model, block_size=4).generate(prompts, params) == want
    alone = Engine(model, block_size=4).generate(prompts[:1], params[:1])
    assert alone == want[:1]


def test_stop_tokens_length_and_context_end() -> None:
    model = _model("gpt")
    prompt = _prompts()[1]
    ref = _alone(model, prompt, 12, temperature=0)
    stop = ref[5]
    first = ref.index(stop)
    engine = Engine(model, block_size=4)
    rid = engine.add_request(
        prompt, SamplingParams(max_tokens=12, temperature=0, stop_token_ids=(stop,))
    )
    outs = []
    while engine.has_unfinished():
        outs += engine.step()
    assert [t for o in outs for t in o.new_token_ids] == ref[:first]
    assert outs[-1].request_id == rid
    assert outs[-1].finished
    assert outs[-1].finish_reason == "stop"
    assert outs[-1].num_output_tokens == first + 1  # the stop token counts as generated
    # the context end: a 60-token prompt in a 64-token model stops after 4 tokens with "length"
    engine.add_request([1] * 60, SamplingParams(max_tokens=50, temperature=0))
    outs = []
    while engine.has_unfinished():
        outs += engine.step()
    assert sum(len(o.new_token_ids) for o in outs) == 4
    assert outs[-1].finish_reason == "length"


def test_abort_frees_the_request_at_the_next_step() -> None:
    model = _model("gpt")
    engine = Engine(model, block_size=4)
    a = engine.add_request([1, 2, 3], SamplingParams(max_tokens=30, temperature=0))
    b = engine.add_request([4, 5], SamplingParams(max_tokens=5, temperature=0))
    engine.step()
    engine.step()
    assert engine.num_blocks_in_use > 0
    engine.abort(a)
    engine.abort("no-such-request")  # finished meanwhile: ignored
    outs = engine.step()
    assert any(o.request_id == a and o.finish_reason == "abort" for o in outs)
    while engine.has_unfinished():
        outs += engine.step()
    assert [o.finish_reason for o in outs if o.request_id == b][-1] == "length"
    assert engine.num_blocks_in_use == 0


def test_bad_requests_name_the_argument() -> None:
    engine = Engine(_model("gpt"), block_size=4, num_blocks=4)
    with pytest.raises(ValueError, match="empty prompt"):
        engine.add_request([])
    with pytest.raises(ValueError, match=r"token ids in \[0, 67\), got 67"):
        engine.add_request([67])
    with pytest.raises(ValueError, match="context is 64"):
        engine.add_request([1] * 64)
    with pytest.raises(ValueError, match="needs 5 blocks; the KV cache has 4"):
        engine.add_request([1] * 10, SamplingParams(max_tokens=10))
    with pytest.raises(ValueError, match="max_tokens must be a positive int, got 0"):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValueError, match="top_p must be in"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="temperature must be a number >= 0, got -1"):
        SamplingParams(temperature=-1)
