"""GRPO: group-relative advantages, the clipped surrogate with KL, and a short run."""

from __future__ import annotations

import pytest
import torch

from fms_llm.finetune.chat import IM_END, IM_START, ChatTemplate
from fms_llm.finetune.common import FinetuneError, TrainArgs
from fms_llm.finetune.data import arithmetic
from fms_llm.finetune.grpo import group_advantages, grpo, grpo_loss
from fms_llm.models import Llama, LlamaConfig
from fms_llm.tokenizer import BPETokenizer


def test_advantages_are_standardised_within_each_group() -> None:
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    a = group_advantages(r)
    assert torch.allclose(a.mean(dim=1), torch.zeros(3), atol=1e-6)
    assert torch.equal(a[1], torch.zeros(4))  # a group that agrees teaches nothing
    # sample std (Bessel), as TRL: [1,0,0,1] has std 1/sqrt(3) * sqrt(4)/2 ... = 0.57735
    assert torch.allclose(
        a[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (0.57735027 + 1e-4), atol=1e-5
    )
    assert a[2, 3] > 0 > a[2, 0]
    with pytest.raises(FinetuneError, match="G >= 2"):
        group_advantages(torch.ones(3, 1))


def test_loss_gradient_is_advantage_weighted_log_likelihood_and_kl_vanishes_at_reference() -> None:
    torch.manual_seed(0)
    theta = torch.randn(4, 5, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
    adv = torch.tensor([1.0, -0.5, 2.0, 0.0])
    loss, kl = grpo_loss(theta, theta.detach(), theta.detach(), adv, mask, beta=0.3)
    assert kl.item() == 0.0
    loss.backward()
    expected = -(adv[:, None] * mask) / mask.sum(1, keepdim=True) / 4
    assert theta.grad is not None
    assert torch.allclose(theta.grad, expected, atol=1e-6)
    # away from the reference, the KL estimate is positive and its gradient pulls back
    logp = (theta.detach() + 0.5).requires_grad_(True)
    _, kl = grpo_loss(logp, logp.detach(), theta.detach(), torch.zeros(4), mask, beta=1.0)
    assert kl.item() > 0


def test_a_short_grpo_run_samples_scores_and_steps() -> None:
    t = ChatTemplate()
    ex = arithmetic(40, seed=0, ops=("add",))
    tok = BPETokenizer.train(
        [t.render(e.messages) for e in ex],
        vocab_size=330,
        special_tokens=[IM_START, IM_END],
        progress=False,
    )
    torch.manual_seed(0)
    model = Llama(
        LlamaConfig(vocab_size=tok.vocab_size, n_layers=1, d_model=32, n_heads=2, max_seq_len=64)
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = grpo(
        model,
        tok,
        ex,
        TrainArgs(steps=2, batch_size=2, lr=1e-3, warmup_steps=0),
        group_size=4,
        max_new_tokens=4,
        reward_fn=lambda completion, answer: float(len(completion) % 3),  # varies in a group
    )
    assert {"reward", "kl", "loss"} <= set(out.metrics)
    assert 0.0 <= out.metrics["reward"] <= 2.0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(FinetuneError, match="group_size must be >= 2"):
        grpo(model, tok, ex, TrainArgs(steps=1), group_size=1)
