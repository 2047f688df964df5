r"""Speculative decoding: a small draft model proposes $k$ tokens, the target checks them in one
forward pass, and a rejection rule keeps the output distributed exactly as the target's.

Decoding one token reads every weight of the model to do two FLOPs per weight, so a forward pass
over $k + 1$ new tokens costs about as much as one over a single token (the weights are read once
for all of them). Speculative sampling (Leviathan, Kalman and Matias, 2023; Chen et al., 2023,
*Accelerating large language model decoding with speculative sampling*) turns that into speed:

1. the draft $q$ proposes $d_1, \dots, d_k$ autoregressively, $d_i \sim q_i = q(\cdot \mid x, d_{<i})$;
2. the target $p$ scores all of them in one pass, giving $p_1, \dots, p_{k+1}$, with
   $p_i = p(\cdot \mid x, d_{<i})$;
3. for $i = 1, \dots, k$: accept $d_i$ with probability $\min(1, p_i(d_i) / q_i(d_i))$; at the
   first rejection, emit a token drawn from the residual
   $r_i = \operatorname{norm}(\max(0, p_i - q_i))$ and stop; if all $k$ are accepted, emit a
   bonus token drawn from $p_{k+1}$.

Each round emits between 1 and $k + 1$ tokens for one target pass. **Why the output is the
target's distribution.** For one position, the probability that the emitted token is $y$ is the
probability the draft proposed $y$ and it was accepted, plus the probability of a rejection times
the residual's mass at $y$:

$$
P(y) = q(y) \min\Big(1, \frac{p(y)}{q(y)}\Big) + \Big(1 - \sum_z \min(p(z), q(z))\Big)
\frac{\max(0, p(y) - q(y))}{\sum_z \max(0, p(z) - q(z))}.
$$

The first term is $\min(p(y), q(y))$. Since $\sum_z \max(0, p - q) = \sum_z (p - \min(p, q)) =
1 - \sum_z \min(p, q)$, the second is $\max(0, p(y) - q(y))$, and the two add up to $p(y)$.
After an acceptance the next position is the same argument conditioned on the accepted prefix,
so by induction every emitted sequence has the target's probability. With greedy decoding
(temperature 0) both distributions are one-hot and the rule reduces to: keep the draft's token
while it equals the target's arg max, then emit the target's arg max.

The *acceptance rate* $\alpha = E[\min(1, p/q)] = \sum_z \min(p(z), q(z))$ (one minus the total
variation distance between $p$ and $q$) sets the speed: a round emits
$(1 - \alpha^{k+1}) / (1 - \alpha)$ tokens on average for $k$ draft steps and one target pass.

Both models decode with their key/value caches ([fms_transformer.kv_cache.KVCache][]); a
rejection rolls them back with `crop`. One sequence at a time (acceptance differs from row to
row; batching it is the engine's job).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from fms_llm.generate import _check as _check_sampling
from fms_llm.generate import filter_logits
from fms_llm.models.decode import DecodePlan
from fms_transformer.kv_cache import KVCache

__all__ = ["SpeculativeDecoder", "SpeculativeError", "SpeculativeStats", "verify"]


class SpeculativeError(ValueError):
    """A draft and target that cannot be paired, or a bad decoding argument."""


@dataclass
class SpeculativeStats:
    """What happened during [SpeculativeDecoder.generate][fms_llm.inference.speculative.SpeculativeDecoder.generate].

    Attributes:
        rounds: target forward passes (one a round).
        proposed: draft tokens proposed, in all rounds.
        accepted: draft tokens the target accepted.
        emitted: tokens generated (accepted drafts plus one target token a round).
        accepted_per_round: accepted draft tokens of each round, in order.
    """

    rounds: int = 0
    proposed: int = 0
    accepted: int = 0
    emitted: int = 0
    accepted_per_round: list[int] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        """Accepted over proposed draft tokens ($\\hat\\alpha$; 0 if nothing was proposed)."""
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def tokens_per_round(self) -> float:
        """Tokens emitted per target forward pass (1 for plain decoding)."""
        return self.emitted / self.rounds if self.rounds else 0.0


def _probs(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None) -> Tensor:
    """Sampling distributions `(n, vocab)` float32 from logits, as [sample_next][fms_llm.generate.sample_next] reshapes them."""
    logits = filter_logits(logits.float() / temperature, top_k=top_k, top_p=top_p)
    return torch.softmax(logits, dim=-1)


def verify(
    p: Tensor, q: Tensor, drafts: Tensor, generator: torch.Generator | None = None
) -> tuple[int, int]:
    r"""The rejection rule: how many draft tokens to keep, and the token that follows them.

    Args:
        p: the target's distributions `(k + 1, vocab)`: row $i$ conditioned on the context and
            the first $i$ drafts.
        q: the draft's distributions `(k, vocab)` the drafts were drawn from.
        drafts: the draft tokens `(k,)`, `drafts[i] ~ q[i]`.
        generator: random source for the uniforms and the residual draws.

    Returns:
        `(n_accepted, token)`: the first `n_accepted` drafts are kept and `token` comes after
        them (drawn from the residual $\max(0, p_i - q_i)$ at the first rejection, or from
        $p_{k+1}$ when all are accepted).
    """
    k = drafts.shape[0]
    if p.shape[0] != k + 1 or q.shape[0] != k or p.shape[1] != q.shape[1]:
        raise SpeculativeError(
            f"need p (k + 1, vocab), q (k, vocab), drafts (k,); got p {tuple(p.shape)}, "
            f"q {tuple(q.shape)}, drafts {tuple(drafts.shape)}"
        )
    if k:
        rows = torch.arange(k, device=p.device)
        p_d, q_d = p[rows, drafts], q[rows, drafts]
        u = torch.rand(k, generator=generator, device=p.device)
        # accept with probability min(1, p/q), written u * q < p to avoid dividing by q; a draft
        # drawn from q has q(d) > 0, so the rule accepts it exactly when u < p(d) / q(d)
        rejected = (u * q_d >= p_d).nonzero()
        if rejected.numel():
            i = int(rejected[0, 0])
            residual = (p[i] - q[i]).clamp_min(0.0)
            total = residual.sum()
            # a rejection has probability 1 - sum(min(p, q)) = sum(max(0, p - q)) > 0; a zero
            # residual (p == q up to rounding) cannot reject in exact arithmetic: fall back to p
            dist = residual / total if float(total) > 0 else p[i]
            return i, int(torch.multinomial(dist, 1, generator=generator))
    return k, int(torch.multinomial(p[k], 1, generator=generator))


def _verify_greedy(target_logits: Tensor, drafts: Tensor) -> tuple[int, int]:
    """Temperature 0: keep drafts while they equal the target's arg max, then emit its arg max."""
    best = torch.argmax(target_logits, dim=-1)
    k = drafts.shape[0]
    mismatch = (best[:k] != drafts).nonzero()
    n = int(mismatch[0, 0]) if mismatch.numel() else k
    return n, int(best[n])


def _vocab(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "vocab_size"):
        return int(config.vocab_size)
    head = getattr(model, "lm_head", None)
    if head is not None and hasattr(head, "out_features"):
        return int(head.out_features)
    raise SpeculativeError(
        f"cannot tell the vocabulary size of {type(model).__name__}: expected a .config.vocab_size"
    )


class _Decoder:
    """One model and its cache: feed tokens, get the logits of each of them."""

    def __init__(self, model: nn.Module, max_len: int) -> None:
        self.model = model
        self.cache = KVCache(int(model.n_layers), max_len=max_len)  # type: ignore[arg-type]
        self.plan = DecodePlan.build(model)
        self.device = next(model.parameters()).device

    @property
    def length(self) -> int:
        return self.cache.offset

    def feed(self, tokens: list[int]) -> Tensor:
        """Logits `(len(tokens), vocab)` of the tokens, appended after the cached ones."""
        x = torch.tensor([tokens], dtype=torch.long, device=self.device)
        if self.plan is not None:
            logits = self.plan.step(x, self.cache)
        else:
            logits = self.model(x, kv_cache=self.cache)
        return logits[0]

    def rollback(self, length: int) -> None:
        self.cache.crop(length)


class SpeculativeDecoder:
    """Decode with a target model, faster, by letting a draft model propose `k` tokens a round.

    Args:
        target: the model whose distribution the output follows (a
            [GPT][fms_llm.models.GPT] or [Llama][fms_llm.models.Llama], float or quantised).
        draft: a smaller model over the same vocabulary.
        k: draft tokens proposed per round (at least 1).

    Raises:
        SpeculativeError: `k < 1`, or the two models' vocabulary sizes differ.

    Example:
        >>> decoder = SpeculativeDecoder(target, draft, k=4)  # doctest: +SKIP
        >>> ids, stats = decoder.generate(prompt_ids, 64, temperature=0)  # doctest: +SKIP
        >>> stats.acceptance_rate  # doctest: +SKIP
    """

    def __init__(self, target: nn.Module, draft: nn.Module, k: int = 4) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise SpeculativeError(f"k (draft tokens per round) must be an int >= 1, got {k!r}")
        v_target, v_draft = _vocab(target), _vocab(draft)
        if v_target != v_draft:
            raise SpeculativeError(
                f"draft and target must share a vocabulary: target vocab_size={v_target}, "
                f"draft vocab_size={v_draft}"
            )
        self.target, self.draft, self.k = target, draft, k
        self.vocab_size = v_target

    def generate(
        self,
        prompt: Tensor | list[int],
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        eos_id: int | None = None,
    ) -> tuple[list[int], SpeculativeStats]:
        """Extend one prompt by up to `max_new_tokens` tokens.

        Args:
            prompt: the prompt's ids, a list or a `(prompt_len,)` / `(1, prompt_len)` tensor.
            max_new_tokens: tokens to add.
            temperature: softmax temperature of both models; 0 is greedy (then the output is the
                target's greedy output, token for token).
            top_k: keep only the k most likely tokens (applied to target and draft alike).
            top_p: nucleus mass (applied to both).
            seed: seed of the random draws (uniforms, drafts, residuals).
            eos_id: stop after emitting this id.

        Returns:
            `(new_tokens, stats)`: the generated ids (prompt not included) and a
            [SpeculativeStats][fms_llm.inference.speculative.SpeculativeStats].

        Raises:
            SpeculativeError: an empty prompt, a bad sampling argument, or a prompt plus
                `max_new_tokens` longer than either model's context.
        """
        ids = self._check(prompt, max_new_tokens, temperature, top_k, top_p)
        context = min(int(self.target.max_seq_len), int(self.draft.max_seq_len))  # type: ignore[arg-type]
        if len(ids) + max_new_tokens > context:
            raise SpeculativeError(
                f"prompt of {len(ids)} tokens + max_new_tokens={max_new_tokens} exceeds the "
                f"shorter context of target and draft ({context})"
            )
        stats = SpeculativeStats()
        out: list[int] = []
        if max_new_tokens == 0:
            return out, stats
        greedy = temperature == 0
        with torch.inference_mode():  # (the decode plans are built only without autograd)
            target = _Decoder(self.target, len(ids) + max_new_tokens + 1)
            draft = _Decoder(self.draft, len(ids) + max_new_tokens + 1)
            generator: torch.Generator | None = None
            if seed is not None:
                generator = torch.Generator(device=target.device)
                generator.manual_seed(seed)
            # invariant: both caches hold `committed` minus its last token (`pending` for the
            # target); the draft may lag one token more after a round where all were accepted
            committed = list(ids)
            if len(committed) > 1:
                target.feed(committed[:-1])
                draft.feed(committed[:-1])
            while len(out) < max_new_tokens:
                k = min(self.k, max_new_tokens - len(out) - 1)
                base = len(committed) - 1  # tokens in the target's cache
                drafts: list[int] = []
                q_rows: list[Tensor] = []
                lagging = committed[draft.length :]  # the draft's missing tokens (1 or 2)
                for _ in range(k):
                    logits = draft.feed(lagging)[-1:]
                    if greedy:
                        token = int(torch.argmax(logits, dim=-1))
                    else:
                        q_i = _probs(logits, temperature, top_k, top_p)
                        token = int(torch.multinomial(q_i[0], 1, generator=generator))
                        q_rows.append(q_i[0])
                    drafts.append(token)
                    lagging = [token]
                t_logits = target.feed([committed[-1], *drafts])
                d = torch.tensor(drafts, dtype=torch.long, device=t_logits.device)
                if greedy:
                    n, nxt = _verify_greedy(t_logits, d)
                else:
                    p = _probs(t_logits, temperature, top_k, top_p)
                    q = torch.stack(q_rows) if q_rows else p.new_empty(0, p.shape[1])
                    n, nxt = verify(p, q, d, generator)
                new = [*drafts[:n], nxt]
                stats.rounds += 1
                stats.proposed += k
                stats.accepted += n
                stats.accepted_per_round.append(n)
                if eos_id is not None and eos_id in new:
                    new = new[: new.index(eos_id) + 1]
                out.extend(new)
                stats.emitted += len(new)
                committed.extend(new)
                # roll back: keep the context, the old last token and the accepted drafts
                target.rollback(base + 1 + n)
                draft.rollback(min(draft.length, base + 1 + n))
                if eos_id is not None and out[-1] == eos_id:
                    break
        return out[:max_new_tokens], stats

    def _check(
        self,
        prompt: Tensor | list[int],
        max_new_tokens: int,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
    ) -> list[int]:
        if isinstance(prompt, Tensor):
            if prompt.ndim == 2 and prompt.shape[0] == 1:
                prompt = prompt[0]
            if prompt.ndim != 1:
                raise SpeculativeError(
                    f"prompt must be (prompt_len,) or (1, prompt_len) (one sequence), got shape "
                    f"{tuple(prompt.shape)}"
                )
            prompt = [int(t) for t in prompt.tolist()]
        ids = list(prompt)
        if not ids:
            raise SpeculativeError("prompt must hold at least one token, got an empty prompt")
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise SpeculativeError(f"prompt ids must be in [0, {self.vocab_size}), got {bad[:5]}")
        if (
            isinstance(max_new_tokens, bool)
            or not isinstance(max_new_tokens, int)
            or max_new_tokens < 0
        ):
            raise SpeculativeError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        try:
            _check_sampling(temperature, top_k, top_p)
        except ValueError as exc:
            raise SpeculativeError(str(exc)) from None
        return ids
