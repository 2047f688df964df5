r"""Evaluating a language model: loss, perplexity and bits per byte.

For a stream of $N$ predicted tokens holding $B$ bytes of text, with mean loss
$\bar\ell = -\frac1N \sum_i \log p_\theta(x_i \mid x_{<i})$ in nats per token:

$$\mathrm{perplexity} = e^{\bar\ell}, \qquad
  \mathrm{bits\ per\ byte} = \frac{N \bar\ell}{B \ln 2}.$$

Perplexity depends on the tokenizer (a token is a different unit for every vocabulary); bits per
byte does not, so it compares models with different tokenizers, and compares a model with the
entropy floor of the synthetic corpus.

[window_loss][fms_llm.evaluate.window_loss] tiles the token stream into non-overlapping windows
of the model's context (each token predicted once, with between 0 and `seq_len - 1` tokens of
context). [document_loss][fms_llm.evaluate.document_loss] scores whole documents from their
start, each preceded by the end-of-text token: exactly the quantity whose optimum is the entropy
floor of the synthetic corpus.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fms_llm.data.batching import sequential_windows
from fms_llm.models import GPT

__all__ = ["document_loss", "metrics_from_nats", "window_loss"]

_IGNORE = -100  # the target id of padding, which no loss counts


def metrics_from_nats(total_nats: float, n_tokens: int, n_bytes: float | None) -> dict[str, float]:
    """`loss` (nats/token), `perplexity`, and with `n_bytes` `bits_per_byte`, from summed nats.

    `n_bytes` may be fractional (tokens scored x bytes per token of the stream): rounding it
    would make a one-token text zero bytes long and drop its bits per byte.
    """
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be > 0, got {n_tokens}")
    loss = total_nats / n_tokens
    out = {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": float(n_tokens)}
    if n_bytes is not None and n_bytes > 0:
        out["bits_per_byte"] = total_nats / n_bytes / math.log(2)
    return out


@torch.no_grad()
def _sum_nats(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Summed cross-entropy in nats of the targets `y` (`-100`: not counted).

    An fms-llm model scores through `model(x, y)`, the head fused with the loss a chunk of tokens
    at a time ([linear_cross_entropy][fms_llm.models.fused.linear_cross_entropy]): GPT-2's
    `(8, 1024, 50257)` float32 logits would take 1.6 GB, and `F.cross_entropy` as much again for
    its log-probabilities. Any other module is taken to return logits.
    """
    if isinstance(model, GPT):
        counted = int((y != _IGNORE).sum())
        return float(model(x, y, ignore_index=_IGNORE)) * counted if counted else 0.0
    logits = model(x)
    return float(
        F.cross_entropy(
            logits.flatten(0, 1).float(), y.flatten(), ignore_index=_IGNORE, reduction="sum"
        )
    )


@torch.no_grad()
def window_loss(
    model: nn.Module,
    shards: Sequence[np.ndarray[Any, Any]],
    *,
    seq_len: int,
    batch_size: int = 8,
    max_batches: int | None = None,
    bytes_per_token: float | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Loss over non-overlapping windows of a token stream (see the module docstring).

    Args:
        model: an fms-llm [GPT][fms_llm.models.GPT] or [Llama][fms_llm.models.Llama] (scored
            without materialising its logits), or any causal LM returning logits
            `(batch, seq, vocab)`.
        shards: token arrays.
        seq_len: window length (at most the model's context).
        batch_size: windows per forward pass.
        max_batches: stop after this many batches (`None`: the whole stream).
        bytes_per_token: text bytes per token of the stream, for bits per byte.
        device: where to run (default: the model's device).
    """
    if device is None:
        device = next(model.parameters()).device
    total, n = 0.0, 0
    for x, y in sequential_windows(
        shards, batch_size=batch_size, seq_len=seq_len, max_batches=max_batches
    ):
        xt = torch.from_numpy(x).to(device)
        yt = torch.from_numpy(y).to(device)
        total += _sum_nats(model, xt, yt)
        n += y.size
    n_bytes = None if bytes_per_token is None else n * bytes_per_token
    return metrics_from_nats(total, n, n_bytes)


@torch.no_grad()
def document_loss(
    model: nn.Module,
    documents: Iterable[Sequence[int]],
    *,
    eos_id: int,
    n_bytes: int | None = None,
    batch_size: int = 16,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Loss of whole documents, each scored as `[eos] + doc + [eos]` from its first token.

    Every document token and the closing end-of-text token is predicted, with all of the
    document before it as context, exactly what the synthetic corpus's floor counts.

    Args:
        model: a causal LM with `max_seq_len`, as for
            [window_loss][fms_llm.evaluate.window_loss].
        documents: token ids of each document (without end-of-text).
        eos_id: the end-of-text id.
        n_bytes: total UTF-8 bytes of the documents, for bits per byte.
        batch_size: documents per forward pass (padded to the longest).

    Raises:
        ValueError: a document does not fit in the model's context.
    """
    if device is None:
        device = next(model.parameters()).device
    max_len = int(getattr(model, "max_seq_len"))  # noqa: B009
    docs = [list(d) for d in documents]
    for i, d in enumerate(docs):
        if len(d) + 1 > max_len:
            raise ValueError(
                f"document {i} has {len(d)} tokens; with the end-of-text tokens it needs "
                f"{len(d) + 1} positions, more than max_seq_len={max_len}"
            )
    total, n = 0.0, 0
    for start in range(0, len(docs), batch_size):
        group = docs[start : start + batch_size]
        width = max(len(d) for d in group) + 1
        x = torch.full((len(group), width), eos_id, dtype=torch.long)
        y = torch.full((len(group), width), _IGNORE, dtype=torch.long)
        for r, d in enumerate(group):
            seq = [eos_id, *d, eos_id]
            x[r, : len(seq) - 1] = torch.tensor(seq[:-1])
            y[r, : len(seq) - 1] = torch.tensor(seq[1:])
        total += _sum_nats(model, x.to(device), y.to(device))
        n += int((y != _IGNORE).sum())
    return metrics_from_nats(total, n, n_bytes)
