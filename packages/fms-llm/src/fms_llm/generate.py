r"""Sampling from a language model: temperature, top-k, top-p, stop strings, a key/value cache.

Autoregressive generation draws $x_{t+1} \sim p_\theta(\cdot \mid x_{\le t})$ one token at a time.
The distribution is reshaped before drawing:

- **temperature** $\tau$: $p_i \propto \exp(z_i / \tau)$; $\tau \to 0$ is greedy (arg max),
  $\tau = 1$ the model's own distribution;
- **top-k**: keep the $k$ most likely tokens;
- **top-p** (nucleus sampling, Holtzman et al., 2020): keep the smallest set of most likely tokens
  whose probability mass reaches $p$.

**The key/value cache.** Without it, step $t$ re-runs the model on all $t$ tokens, $O(t^2)$ work
over a sequence; with [fms_transformer.kv_cache.KVCache][] the prompt is encoded once
("prefill") and every later step feeds one token, attending to the cached keys and values
("decode"), $O(t)$ per step. Both paths give the same tokens (tested). When a sequence outgrows
the model's context (`max_seq_len`), the uncached path crops to the last `max_seq_len` tokens; the
cached path re-encodes the last half of the context and continues from there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor

from fms_llm.models.decode import DecodePlan
from fms_transformer.kv_cache import KVCache

__all__ = ["CausalLM", "filter_logits", "generate", "generate_text", "sample_next"]


class CausalLM(Protocol):
    """What generation needs of a model: a config with `n_layers`/`max_seq_len` and a forward."""

    @property
    def n_layers(self) -> int: ...

    @property
    def max_seq_len(self) -> int: ...

    def __call__(self, idx: Tensor, *, kv_cache: KVCache | None = None) -> Tensor: ...


def _check(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")


def filter_logits(
    logits: Tensor, *, top_k: int | None = None, top_p: float | None = None
) -> Tensor:
    """Set to $-\\infty$ the logits outside the top-k and/or the top-p nucleus. `(..., vocab)`."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        remove_sorted = mass_before >= top_p  # the most likely token always stays (mass_before 0)
        remove = remove_sorted.scatter(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def sample_next(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one token per row of `logits` `(batch, vocab)`; returns `(batch,)` int64.

    `temperature == 0` is greedy decoding (ties go to the lowest id, as `torch.argmax`).
    """
    _check(temperature, top_k, top_p)
    if temperature == 0:
        return torch.argmax(logits, dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k=top_k, top_p=top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def generate(
    model: CausalLM,
    idx: Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    eos_id: int | None = None,
    on_token: Callable[[Tensor], bool] | None = None,
) -> Tensor:
    """Extend `idx` `(batch, prompt_len)` by up to `max_new_tokens` tokens.

    Args:
        model: a causal LM (see [CausalLM][fms_llm.generate.CausalLM]), e.g. a
            [GPT][fms_llm.models.GPT] or [Llama][fms_llm.models.Llama].
        idx: prompt ids, int64, at least one token a row.
        max_new_tokens: tokens to add.
        temperature: softmax temperature; 0 is greedy.
        top_k: keep only the k most likely tokens.
        top_p: nucleus mass.
        seed: seed of the sampling generator (on the model's device); `None` draws from torch's
            global generator.
        use_cache: use the key/value cache (incremental decoding).
        eos_id: stop when every row has produced this id (rows that finished keep emitting it).
        on_token: called with the new tokens `(batch,)` after each step; returning `True` stops.

    Returns:
        `(batch, prompt_len + n_new)` ids, prompt included.
    """
    _check(temperature, top_k, top_p)
    if idx.ndim != 2 or idx.shape[1] < 1:
        raise ValueError(f"idx must be (batch, prompt_len >= 1), got shape {tuple(idx.shape)}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    device = idx.device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    # inference mode: no autograd bookkeeping (no version counters, no views tracked) at each of
    # the many small steps; the result is copied out so that it is an ordinary tensor again
    with torch.inference_mode():
        ctx = model.max_seq_len
        out = idx
        done = torch.zeros(idx.shape[0], dtype=torch.bool, device=device)
        cache: KVCache | None = None
        # our GPT and Llama decode through plain functions (same values, no module dispatch)
        plan = DecodePlan.build(model)  # type: ignore[arg-type]
        for _ in range(max_new_tokens):
            if use_cache:
                if cache is None or cache.offset + 1 > ctx:
                    # (re-)prefill: the whole prompt, or the last half of the context once it is full
                    keep = out.shape[1] if cache is None else max(1, ctx // 2)
                    cache = KVCache(model.n_layers)
                    x = out[:, -min(keep, ctx) :]
                else:
                    x = out[:, -1:]
                logits = plan.step(x, cache) if plan else model(x, kv_cache=cache)
            elif plan:  # every step re-encodes the whole context (a throw-away cache)
                logits = plan.step(out[:, -ctx:], KVCache(model.n_layers))
            else:
                logits = model(out[:, -ctx:])
            nxt = sample_next(
                logits[:, -1, :],
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                generator=generator,
            )
            if eos_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
                done |= nxt == eos_id
            out = torch.cat([out, nxt[:, None]], dim=1)
            if on_token is not None and on_token(nxt):
                break
            if eos_id is not None and bool(done.all()):
                break
    return out.clone()


class _Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def generate_text(
    model: CausalLM,
    tokenizer: _Tokenizer,
    prompt: str,
    max_new_tokens: int = 100,
    *,
    temperature: float = 0.8,
    top_k: int | None = 50,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    eos_id: int | None = None,
    stop: Sequence[str] = (),
    device: torch.device | str | None = None,
) -> str:
    """Continue `prompt`; return the generated text (without the prompt).

    Generation ends after `max_new_tokens`, at `eos_id`, or when the text contains one of the
    `stop` strings (the text is cut before it).
    """
    ids = tokenizer.encode(prompt)
    if not ids:
        if eos_id is None:
            raise ValueError("prompt encodes to no token and no eos_id is given to start from")
        ids = [eos_id]
    n_prompt = len(ids)
    if device is None:
        device = next(iter(model.parameters())).device  # type: ignore[attr-defined]
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    new: list[int] = []

    def on_token(t: Tensor) -> bool:
        new.append(int(t[0]))
        if stop:
            text = tokenizer.decode(new)
            return any(s in text for s in stop)
        return False

    generate(
        model,
        idx,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        use_cache=use_cache,
        eos_id=eos_id,
        on_token=on_token,
    )
    if eos_id is not None and eos_id in new:
        new = new[: new.index(eos_id)]
    text = tokenizer.decode(new)
    cut = min((text.index(s) for s in stop if s in text), default=len(text))
    del n_prompt
    return text[:cut]
