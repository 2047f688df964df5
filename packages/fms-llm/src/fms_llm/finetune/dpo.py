r"""Direct Preference Optimisation: learn from pairs of answers, one preferred, without a reward model.

**From the RLHF objective** (Rafailov et al., 2023). RLHF maximises a reward $r$ while staying
close to a reference policy $\pi_\text{ref}$ (the SFT model):

$$
\max_\pi\; \mathbb E_{x, y \sim \pi}\,[r(x, y)] - \beta\, \mathrm{KL}\big(\pi(\cdot \mid x)\,\|\,\pi_\text{ref}(\cdot \mid x)\big).
$$

Its maximiser has a closed form, $\pi^*(y \mid x) = \pi_\text{ref}(y \mid x)\, e^{r(x,y)/\beta} / Z(x)$,
so the reward can be written through the policy: $r(x, y) = \beta \log \frac{\pi^*(y\mid x)}{\pi_\text{ref}(y \mid x)} + \beta \log Z(x)$.
Under the Bradley-Terry model of preferences, $p(y_w \succ y_l \mid x) = \sigma(r(x, y_w) - r(x, y_l))$,
the intractable $Z(x)$ cancels in the difference, and maximum likelihood on preference pairs
becomes a loss on the policy itself:

$$
\mathcal L_\text{DPO} = -\log \sigma\Big(\beta \big[\log \tfrac{\pi_\theta(y_w \mid x)}{\pi_\text{ref}(y_w \mid x)}
- \log \tfrac{\pi_\theta(y_l \mid x)}{\pi_\text{ref}(y_l \mid x)}\big]\Big).
$$

The *implicit rewards* $\hat r = \beta \log \frac{\pi_\theta(y\mid x)}{\pi_\text{ref}(y\mid x)}$ are
what is logged: their margin (chosen minus rejected) and accuracy (how often chosen wins). At the
first step $\pi_\theta = \pi_\text{ref}$, every margin is 0 and the loss is exactly $\log 2$.

$\log \pi(y \mid x)$ sums over the completion's tokens, which are, as TRL defines them, the
tokens of the prompt-plus-answer rendering after its common prefix with the prompt rendered with
the generation header. Tested: loss, rewards, margins and accuracy equal TRL's `DPOTrainer` on
the same batch.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fms_llm.finetune.chat import IM_END, ChatTemplate
from fms_llm.finetune.common import FinetuneError, TrainArgs, completion_logprobs, run_trainer
from fms_llm.finetune.data import PreferencePair
from fms_llm.models import GPT
from fms_llm.tokenizer import BPETokenizer

__all__ = ["DPOResult", "dpo", "dpo_batch", "dpo_loss", "encode_pair", "preference_metrics"]


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    *,
    beta: float = 0.1,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""The sigmoid DPO loss (mean over pairs) and the implicit rewards.

    Args:
        policy_chosen: $\log \pi_\theta(y_w \mid x)$ of the chosen completions `(batch,)`.
        policy_rejected: $\log \pi_\theta(y_l \mid x)$ of the rejected completions `(batch,)`.
        ref_chosen: the chosen completions' log-probabilities under the frozen reference.
        ref_rejected: the rejected completions' log-probabilities under the frozen reference.
        beta: $\beta$, the strength of the KL anchor (smaller: farther from the reference).

    Returns:
        `(loss, chosen_rewards, rejected_rewards)`; rewards `(batch,)` are detached.
    """
    if not beta > 0:
        raise FinetuneError(f"beta must be > 0, got {beta!r}")
    chosen = policy_chosen - ref_chosen
    rejected = policy_rejected - ref_rejected
    loss = -F.logsigmoid(beta * (chosen - rejected)).mean()
    return loss, beta * chosen.detach(), beta * rejected.detach()


def encode_pair(
    tokenizer: BPETokenizer, pair: PreferencePair, template: ChatTemplate | None = None
) -> tuple[list[int], list[int], int]:
    """`(chosen_ids, rejected_ids, prompt_len)`: the two renderings and where their completions
    start (the common prefix with the prompt and its generation header, TRL's rule)."""
    template = template or ChatTemplate()
    prompt, _ = template.encode(
        tokenizer, pair.prompt, add_generation_prompt=True, require_assistant=False
    )
    full = [
        template.encode(tokenizer, [*pair.prompt, {"role": "assistant", "content": c}])[0]
        for c in (pair.chosen, pair.rejected)
    ]
    n = len(prompt)
    for ids in full:
        k = 0
        while k < min(n, len(ids)) and ids[k] == prompt[k]:
            k += 1
        n = k
    return full[0], full[1], n


def dpo_batch(
    encoded: Sequence[tuple[list[int], list[int], int]], pad_id: int
) -> tuple[Tensor, Tensor]:
    """`(ids, mask)` `(2 * batch, longest)`: the chosen rows, then the rejected ones; the mask is
    1 on completion tokens."""
    rows = [(c, p) for c, _, p in encoded] + [(r, p) for _, r, p in encoded]
    longest = max(len(ids) for ids, _ in rows)
    ids_t = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, (ids, p) in enumerate(rows):
        ids_t[i, : len(ids)] = torch.tensor(ids)
        mask[i, p : len(ids)] = 1
    return ids_t, mask


def preference_metrics(
    policy: nn.Module, reference: nn.Module, batch: tuple[Tensor, Tensor], *, beta: float = 0.1
) -> dict[str, Tensor]:
    """Loss, mean chosen/rejected rewards, margin and accuracy of `policy` on one batch."""
    ids, mask = batch
    logp = completion_logprobs(policy, ids, mask)
    with torch.no_grad():
        ref = completion_logprobs(reference, ids, mask)
    half = ids.shape[0] // 2
    loss, rc, rr = dpo_loss(logp[:half], logp[half:], ref[:half], ref[half:], beta=beta)
    return {
        "loss": loss,
        "rewards_chosen": rc.mean(),
        "rewards_rejected": rr.mean(),
        "margin": (rc - rr).mean(),
        "accuracy": (rc > rr).float().mean(),
    }


@dataclass
class DPOResult:
    """The final training metrics of a DPO run."""

    metrics: dict[str, float]


def dpo(
    policy: GPT,
    tokenizer: BPETokenizer,
    pairs: Sequence[PreferencePair],
    args: TrainArgs,
    *,
    beta: float = 0.1,
    reference: GPT | None = None,
    template: ChatTemplate | None = None,
    resume: bool = False,
) -> DPOResult:
    """Train `policy` with DPO on `pairs` against a frozen `reference` (default: a copy of the
    policy as it is now, i.e. the SFT model). With `resume`, training continues from the newest
    checkpoint in `args.out_dir` (batch `i` depends only on `(args.seed, i)`: exact resume).

    Raises:
        FinetuneError: no pairs, `beta <= 0`, or a pair longer than the model's context.
        fms_llm.finetune.data.DataError: a pair whose answers are the same (raised when the
            pair is made).
    """
    if not pairs:
        raise FinetuneError("dpo needs at least one preference pair, got none")
    if not beta > 0:
        raise FinetuneError(f"beta must be > 0, got {beta!r}")
    encoded = [encode_pair(tokenizer, p, template) for p in pairs]
    for i, (c, r, _) in enumerate(encoded):
        if max(len(c), len(r)) > policy.max_seq_len:
            raise FinetuneError(
                f"pairs[{i}] has {max(len(c), len(r))} tokens, more than the model's "
                f"max_seq_len={policy.max_seq_len}"
            )
    ref = reference if reference is not None else copy.deepcopy(policy)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    pad_id = tokenizer.token_to_id(IM_END)

    def batch_fn(index: int) -> tuple[Tensor, Tensor]:
        rng = np.random.default_rng([args.seed, index])
        pick = rng.integers(len(encoded), size=args.batch_size)
        return dpo_batch([encoded[j] for j in pick], pad_id)

    def loss_fn(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        ref.to(batch[0].device)
        return preference_metrics(model, ref, batch, beta=beta)["loss"]

    return DPOResult(run_trainer(policy, args, batch_fn=batch_fn, loss_fn=loss_fn, resume=resume))
