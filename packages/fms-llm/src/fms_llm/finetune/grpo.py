r"""GRPO: reinforcement learning from a verifiable reward, with the group as its own baseline.

Group Relative Policy Optimisation (Shao et al., 2024, *DeepSeekMath*) is PPO without a value
network. For each prompt $q$, sample a group of $G$ completions $o_1 \dots o_G$ from the current
policy and score each with the reward $r_i$ (here: is the answer exactly right, 1 or 0). The
advantage of a completion is its reward relative to its group,

$$
\hat A_i = \frac{r_i - \operatorname{mean}(r_{1..G})}{\operatorname{std}(r_{1..G}) + \epsilon},
$$

the same for each of its tokens: better-than-the-group answers are pushed up, worse ones down,
and a group where all agree (all right or all wrong) teaches nothing. The loss per token is
PPO's clipped surrogate with a KL penalty to the frozen reference (the SFT model),

$$
\mathcal L = -\frac1G \sum_i \frac{1}{|o_i|} \sum_t \Big[\min\big(\rho_{i,t} \hat A_i,\;
\operatorname{clip}(\rho_{i,t}, 1-\varepsilon, 1+\varepsilon)\, \hat A_i\big)
- \beta\, \mathbb D_{i,t}\Big], \qquad
\rho_{i,t} = \frac{\pi_\theta(o_{i,t} \mid q, o_{i,<t})}{\pi_{\theta_\text{old}}(o_{i,t} \mid q, o_{i,<t})},
$$

with the unbiased, always non-negative estimator of $\mathrm{KL}(\pi_\theta \| \pi_\text{ref})$,
$\mathbb D = \frac{\pi_\text{ref}}{\pi_\theta} - \log \frac{\pi_\text{ref}}{\pi_\theta} - 1$.
Here each group is sampled and used for one gradient step ($\theta_\text{old} = \theta$, so
$\rho = 1$ in value and the gradient is $\hat A \nabla \log \pi_\theta$); the clip matters when
a batch is reused. The standard deviation is the sample one (Bessel-corrected) with
$\epsilon = 10^{-4}$, as TRL's `GRPOTrainer` computes it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from fms_llm.finetune.chat import IM_END, ChatTemplate
from fms_llm.finetune.common import FinetuneError, TrainArgs, run_trainer, token_logprobs
from fms_llm.finetune.data import Example, exact_match_reward
from fms_llm.generate import generate
from fms_llm.models import GPT
from fms_llm.tokenizer import BPETokenizer

__all__ = ["GRPOResult", "group_advantages", "grpo", "grpo_loss"]


def group_advantages(rewards: Tensor, *, eps: float = 1e-4) -> Tensor:
    r"""$(r - \bar r) / (s + \epsilon)$ within each group: `rewards` `(groups, G)` to the same shape."""
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise FinetuneError(f"rewards must be (groups, G >= 2), got shape {tuple(rewards.shape)}")
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)
    return (rewards - mean) / (std + eps)


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor,
    ref_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    beta: float = 0.04,
    clip_eps: float = 0.2,
) -> tuple[Tensor, Tensor]:
    r"""GRPO's loss and the mean KL to the reference.

    Args:
        logp: $\log \pi_\theta$ of each completion token `(n, T)` (differentiable).
        old_logp: the same under the policy that sampled them `(n, T)`.
        ref_logp: under the frozen reference `(n, T)`.
        advantages: $\hat A$ per completion `(n,)`.
        mask: 1 on completion tokens `(n, T)`.
        beta: the KL coefficient $\beta$.
        clip_eps: PPO's $\varepsilon$.

    Returns:
        `(loss, kl)`: the scalar loss (sequence means, then the mean over completions) and the
        mean per-token KL estimate (detached).
    """
    m = mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp)
    a = advantages[:, None]
    surrogate = torch.minimum(ratio * a, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * a)
    d = ref_logp - logp
    kl = torch.exp(d) - d - 1
    per_token = -(surrogate - beta * kl)
    lengths = m.sum(dim=1).clamp_min(1)
    loss = ((per_token * m).sum(dim=1) / lengths).mean()
    return loss, ((kl * m).sum() / m.sum().clamp_min(1)).detach()


@dataclass
class GRPOResult:
    """The final training metrics of a GRPO run (`reward` is the last batch's mean reward)."""

    metrics: dict[str, float]


def grpo(
    policy: GPT,
    tokenizer: BPETokenizer,
    prompts: Sequence[Example],
    args: TrainArgs,
    *,
    group_size: int = 8,
    beta: float = 0.04,
    clip_eps: float = 0.2,
    temperature: float = 1.0,
    max_new_tokens: int = 8,
    reward_fn: Callable[[str, str], float] = exact_match_reward,
    reference: GPT | None = None,
    template: ChatTemplate | None = None,
    resume: bool = False,
) -> GRPOResult:
    """Train `policy` with GRPO on `prompts` (examples with exact answers) and `reward_fn`.

    Each step takes `args.batch_size` prompts, samples `group_size` completions of each (seeded
    by the run's seed and the step: a resumed run samples the same), scores them with
    `reward_fn(completion, answer)`, and takes one gradient step on the loss of
    [grpo_loss][fms_llm.finetune.grpo.grpo_loss]. The reference defaults to a frozen copy of
    the policy as it is now. With `resume`, training continues from the newest checkpoint in
    `args.out_dir`.
    """
    if not prompts:
        raise FinetuneError("grpo needs at least one prompt, got none")
    if group_size < 2:
        raise FinetuneError(
            f"group_size must be >= 2 (the group is the baseline), got {group_size}"
        )
    template = template or ChatTemplate()
    encoded = [
        template.encode(tokenizer, e.prompt, add_generation_prompt=True, require_assistant=False)[0]
        for e in prompts
    ]
    eos = tokenizer.token_to_id(IM_END)
    ref = reference if reference is not None else copy.deepcopy(policy)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    last: dict[str, float] = {}

    def batch_fn(index: int) -> tuple[int, list[int]]:
        rng = np.random.default_rng([args.seed, index])
        return index, [int(j) for j in rng.integers(len(encoded), size=args.batch_size)]

    def loss_fn(model: nn.Module, batch: tuple[int, list[int]]) -> Tensor:
        index, picks = batch
        device = next(model.parameters()).device
        ref.to(device)
        rows: list[list[int]] = []
        starts: list[int] = []
        rewards: list[list[float]] = []
        was_training = model.training
        model.eval()
        for k, j in enumerate(picks):
            prompt = torch.tensor([encoded[j]] * group_size, dtype=torch.long, device=device)
            budget = min(max_new_tokens, policy.max_seq_len - prompt.shape[1])
            out = generate(
                policy,
                prompt,
                budget,
                temperature=temperature,
                seed=args.seed * 1_000_003 + index * 1009 + k,
                eos_id=eos,
            )
            group = []
            for g in range(group_size):
                new = out[g, prompt.shape[1] :].tolist()
                new = new[: new.index(eos) + 1] if eos in new else new
                rows.append(encoded[j] + new)
                starts.append(prompt.shape[1])
                group.append(reward_fn(tokenizer.decode(new), prompts[j].answer))
            rewards.append(group)
        model.train(was_training)
        longest = max(len(r) for r in rows)
        ids = torch.full((len(rows), longest), eos, dtype=torch.long, device=device)
        mask = torch.zeros((len(rows), longest - 1), dtype=torch.long, device=device)
        for i, (r, s) in enumerate(zip(rows, starts, strict=True)):
            ids[i, : len(r)] = torch.tensor(r, device=device)
            mask[i, s - 1 : len(r) - 1] = 1  # logp index t-1 predicts token t
        r_t = torch.tensor(rewards, dtype=torch.float32, device=device)
        adv = group_advantages(r_t).reshape(-1)
        logp = token_logprobs(model, ids)
        with torch.no_grad():
            ref_logp = token_logprobs(ref, ids)
        loss, kl = grpo_loss(logp, logp.detach(), ref_logp, adv, mask, beta=beta, clip_eps=clip_eps)
        last.update(reward=float(r_t.mean()), kl=float(kl))
        return loss

    metrics = run_trainer(policy, args, batch_fn=batch_fn, loss_fn=loss_fn, resume=resume)
    metrics.update(last)
    return GRPOResult(metrics)
