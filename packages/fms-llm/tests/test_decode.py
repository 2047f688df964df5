"""The function path of decoding equals the module path bit for bit, and steps aside when it must."""

from __future__ import annotations

import pytest
import torch

from fms_llm.models import GPT, GPTConfig, Llama, LlamaConfig
from fms_llm.models.decode import DecodePlan
from fms_transformer.kv_cache import KVCache


def _model(family: str, **kw: object) -> GPT:
    torch.manual_seed(0)
    if family == "gpt":  # learned positions, LayerNorm, GELU-tanh MLP, biases, tied head
        model = GPT(
            GPTConfig(vocab_size=67, n_layers=2, d_model=32, n_heads=4, max_seq_len=24, **kw)
        )  # type: ignore[arg-type]
    else:  # RoPE, RMSNorm, SwiGLU, grouped-query attention
        model = Llama(LlamaConfig(vocab_size=67, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2,
                                  max_seq_len=24, **kw))  # type: ignore[arg-type]  # fmt: skip
    with torch.no_grad():  # random norms and biases too
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("family", ["gpt", "llama"])
def test_prefill_and_every_step_equal_the_modules_exactly(family: str) -> None:
    model = _model(family)
    x = torch.randint(0, 67, (2, 12))
    with torch.inference_mode():
        plan = DecodePlan.build(model)
        assert plan is not None
        a, b = KVCache(model.n_layers), KVCache(model.n_layers)
        assert torch.equal(plan.step(x[:, :5], a), model(x[:, :5], kv_cache=b))
        for t in range(5, 12):
            assert torch.equal(plan.step(x[:, t : t + 1], a), model(x[:, t : t + 1], kv_cache=b))
        assert a.offset == b.offset == 12


def test_several_new_tokens_after_a_cache_take_the_module_path() -> None:
    model = _model("llama")
    x = torch.randint(0, 67, (1, 9))
    with torch.inference_mode():
        plan = DecodePlan.build(model)
        assert plan is not None
        a, b = KVCache(model.n_layers), KVCache(model.n_layers)
        plan.step(x[:, :4], a)
        model(x[:, :4], kv_cache=b)
        assert torch.equal(plan.step(x[:, 4:], a), model(x[:, 4:], kv_cache=b))


def test_the_plan_steps_aside() -> None:
    """Gradients on, a forward hook, dropout, or the readable reference modules: no plan."""
    model = _model("gpt")
    assert DecodePlan.build(model) is None  # gradients enabled
    with torch.no_grad():
        assert DecodePlan.build(model) is not None
        handle = model.blocks[1].ffn.up_proj.register_forward_hook(lambda *_: None)
        assert DecodePlan.build(model) is None  # the hook must see its call
        handle.remove()
        assert DecodePlan.build(model) is not None
        assert DecodePlan.build(_model("gpt", dropout=0.1)) is None
        assert DecodePlan.build(GPT(model.config, fused=False)) is None
        assert DecodePlan.build(torch.nn.Linear(2, 2)) is None
