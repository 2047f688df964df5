r"""Supervised fine-tuning: maximise the likelihood of the assistant's turns, and nothing else.

For a conversation rendered to tokens $x_1 \dots x_T$ with assistant mask $m$ (see
[ChatTemplate][fms_llm.finetune.chat.ChatTemplate]), SFT minimises the mean negative
log-likelihood over the assistant tokens of a batch:

$$
\mathcal L_\text{SFT}(\theta) = -\frac{1}{\sum_{i,t} m_{i,t}} \sum_{i,t} m_{i,t}
\log \pi_\theta(x_{i,t} \mid x_{i,<t}).
$$

It is pretraining's loss with the prompt's tokens ignored: the model is not taught to write
users' questions, only to answer them (and to stop: each turn's `<|im_end|>` is in the mask).
The targets outside the mask are set to $-100$, the model's `ignore_index`, so the fused head
and cross-entropy of [GPT][fms_llm.models.GPT] compute exactly this mean.

Batches are padded to their longest conversation (the padding is never a target), or packed
several conversations to a row with document masks
([pack_batch][fms_llm.finetune.sft.pack_batch]). The whole model
trains, or, after [apply_lora][fms_llm.finetune.lora.apply_lora], only the adapters.
[answer][fms_llm.finetune.sft.answer] decodes greedily to `<|im_end|>`, and
[accuracy][fms_llm.finetune.sft.accuracy] is the exact-match score on held-out questions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from fms_llm.finetune.chat import IM_END, ChatError, ChatTemplate, Message
from fms_llm.finetune.common import FinetuneError, TrainArgs, run_trainer
from fms_llm.finetune.data import Example, exact_match_reward
from fms_llm.generate import generate
from fms_llm.models import GPT
from fms_llm.tokenizer import BPETokenizer

__all__ = [
    "SFTResult",
    "accuracy",
    "answer",
    "encode_conversations",
    "pack_batch",
    "pad_batch",
    "sft",
    "sft_loss",
]


@dataclass
class SFTResult:
    """What an SFT run returns: the final training metrics and the number of conversations."""

    metrics: dict[str, float]
    n_conversations: int


def encode_conversations(
    tokenizer: BPETokenizer,
    conversations: Sequence[Sequence[Message]],
    *,
    max_len: int,
    template: ChatTemplate | None = None,
) -> list[tuple[list[int], list[int]]]:
    """Every conversation as `(ids, assistant_mask)`, checked before any training.

    Raises:
        ChatError: a malformed conversation or one without an assistant turn (its index named).
        FinetuneError: a conversation longer than `max_len` tokens.
    """
    template = template or ChatTemplate()
    out = []
    for i, conv in enumerate(conversations):
        try:
            ids, mask = template.encode(tokenizer, conv)
        except ChatError as err:
            raise ChatError(f"conversations[{i}]: {err}") from None
        if len(ids) > max_len:
            raise FinetuneError(
                f"conversations[{i}] has {len(ids)} tokens, more than max_len={max_len} "
                "(the model's context); shorten it or raise max_len"
            )
        out.append((ids, mask))
    return out


def pad_batch(
    examples: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> tuple[Tensor, Tensor]:
    """`(inputs, targets)`, both `(batch, longest - 1)`: inputs padded with `pad_id`, targets the
    next token where the mask is 1 and $-100$ elsewhere (padding included)."""
    longest = max(len(ids) for ids, _ in examples)
    x = torch.full((len(examples), longest - 1), pad_id, dtype=torch.long)
    y = torch.full((len(examples), longest - 1), -100, dtype=torch.long)
    for i, (ids, mask) in enumerate(examples):
        t = torch.tensor(ids, dtype=torch.long)
        m = torch.tensor(mask[1:], dtype=torch.bool)
        x[i, : len(ids) - 1] = t[:-1]
        y[i, : len(ids) - 1] = torch.where(m, t[1:], torch.full_like(t[1:], -100))
    return x, y


def pack_batch(
    examples: Sequence[tuple[list[int], list[int]]], pad_id: int, row_len: int
) -> tuple[Tensor, Tensor, Tensor]:
    """`(inputs, targets, document_ids)`: the examples packed several to a row of `row_len`.

    Each example of $n$ tokens takes $n - 1$ slots (its inputs, with its own next-token targets:
    no target crosses into the next document); examples are placed first-fit in order, a new
    row opened when none has room. `document_ids` numbers the documents of each row from 0
    (padding at a row's end is one more document, all targets $-100$), for
    [GPT.forward][fms_llm.models.gpt.GPT.forward]'s `document_ids`, which keeps each document's
    attention and positions to itself: the mean loss equals `pad_batch`'s on the same examples.

    Raises:
        FinetuneError: an example longer than `row_len + 1` tokens.
    """
    rows: list[list[tuple[list[int], list[int]]]] = []
    room: list[int] = []
    for i, (ids, mask) in enumerate(examples):
        need = len(ids) - 1
        if need > row_len:
            raise FinetuneError(
                f"examples[{i}] has {len(ids)} tokens, more than row_len + 1 = {row_len + 1}"
            )
        for r, free in enumerate(room):
            if free >= need:
                rows[r].append((ids, mask))
                room[r] -= need
                break
        else:
            rows.append([(ids, mask)])
            room.append(row_len - need)
    width = row_len - min(room)
    x = torch.full((len(rows), width), pad_id, dtype=torch.long)
    y = torch.full((len(rows), width), -100, dtype=torch.long)
    doc = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for d, (ids, mask) in enumerate(row):
            n = len(ids) - 1
            t = torch.tensor(ids, dtype=torch.long)
            m = torch.tensor(mask[1:], dtype=torch.bool)
            x[r, at : at + n] = t[:-1]
            y[r, at : at + n] = torch.where(m, t[1:], torch.full_like(t[1:], -100))
            doc[r, at : at + n] = d
            at += n
        doc[r, at:] = len(row)
    return x, y, doc


def sft_loss(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
    """The mean cross-entropy over the assistant tokens of a `pad_batch` or `pack_batch` batch."""
    if len(batch) == 3:
        x, y, doc = batch
        packed: Tensor = model(x, y, document_ids=doc)
        return packed
    x, y = batch
    loss: Tensor = model(x, y)
    return loss


def sft(
    model: GPT,
    tokenizer: BPETokenizer,
    conversations: Sequence[Sequence[Message]],
    args: TrainArgs,
    *,
    template: ChatTemplate | None = None,
    resume: bool = False,
    packing: bool = False,
) -> SFTResult:
    """Fine-tune `model` on `conversations` (OpenAI message lists; `tool` turns allowed).

    Every conversation is rendered and checked first (a bad one fails before any step). Batch
    `i` draws `args.batch_size` conversations with `np.random.default_rng([args.seed, i])`, so a
    resumed run sees the same batches. With `packing`, each batch's conversations are packed
    several to a row of the model's context ([pack_batch][fms_llm.finetune.sft.pack_batch], with
    document masks): the same loss, fewer padded slots.

    Returns:
        an [SFTResult][fms_llm.finetune.sft.SFTResult].
    """
    if not conversations:
        raise FinetuneError("sft needs at least one conversation, got none")
    encoded = encode_conversations(
        tokenizer, conversations, max_len=model.max_seq_len + 1, template=template
    )
    pad_id = tokenizer.token_to_id(IM_END)

    def batch_fn(index: int) -> tuple[Tensor, ...]:
        rng = np.random.default_rng([args.seed, index])
        pick = rng.integers(len(encoded), size=args.batch_size)
        if packing:
            return pack_batch([encoded[j] for j in pick], pad_id, model.max_seq_len)
        return pad_batch([encoded[j] for j in pick], pad_id)

    metrics = run_trainer(model, args, batch_fn=batch_fn, loss_fn=sft_loss, resume=resume)
    return SFTResult(metrics, len(encoded))


@torch.no_grad()
def answer(
    model: GPT,
    tokenizer: BPETokenizer,
    prompts: Sequence[Sequence[Message]],
    *,
    max_new_tokens: int = 16,
    template: ChatTemplate | None = None,
) -> list[str]:
    """Greedy answers to each prompt (messages up to the user's turn), cut at `<|im_end|>`.

    Prompts of equal token length are decoded together in one batch.
    """
    template = template or ChatTemplate()
    eos = tokenizer.token_to_id(IM_END)
    encoded = [
        template.encode(tokenizer, p, add_generation_prompt=True, require_assistant=False)[0]
        for p in prompts
    ]
    out = [""] * len(prompts)
    by_len: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        by_len.setdefault(len(ids), []).append(i)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    for length, rows in by_len.items():
        budget = min(max_new_tokens, model.max_seq_len - length)
        idx = torch.tensor([encoded[i] for i in rows], dtype=torch.long, device=device)
        gen = generate(model, idx, budget, temperature=0.0, eos_id=eos)[:, length:]
        for r, i in enumerate(rows):
            new = gen[r].tolist()
            new = new[: new.index(eos)] if eos in new else new
            out[i] = tokenizer.decode(new)
    model.train(was_training)
    return out


def accuracy(
    model: GPT, tokenizer: BPETokenizer, examples: Sequence[Example], *, max_new_tokens: int = 16
) -> float:
    """Exact-match accuracy of greedy answers on `examples` (fraction in $[0, 1]$)."""
    if not examples:
        raise FinetuneError("accuracy needs at least one example")
    got = answer(model, tokenizer, [e.prompt for e in examples], max_new_tokens=max_new_tokens)
    return float(
        np.mean([exact_match_reward(g, e.answer) for g, e in zip(got, examples, strict=True)])
    )
