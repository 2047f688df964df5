"""Small Llamas trained here, in seconds, for the inference benchmarks: byte-level models of the
synthetic stories (`fms_llm.data.synthetic`), whose text is predictable enough for a small draft
to agree with a larger target most of the time.

Bytes are the tokens (vocabulary 256): no tokenizer to train, and the held-out loss is in nats per
byte. Training is a plain AdamW loop with a cosine schedule over random windows of the
concatenated training stories (seeded); held-out stories are scored one by one.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fms_llm.data.synthetic import StoryGenerator
from fms_llm.models import Llama, LlamaConfig

__all__ = ["doc_losses", "story_bytes", "train_llama"]


def story_bytes(n: int, start: int = 0, seed: int = 0) -> list[bytes]:
    """`n` stories as UTF-8 bytes, each ending with a newline."""
    return [(s.text + "\n").encode() for s in StoryGenerator(seed).stories(n, start)]


def train_llama(
    d_model: int,
    n_layers: int,
    docs: list[bytes],
    steps: int,
    *,
    seed: int = 0,
    batch: int = 16,
    seq: int = 128,
    lr: float = 3e-3,
    snapshots: tuple[int, ...] = (),
) -> tuple[Llama, dict[int, dict[str, torch.Tensor]]]:
    """A byte-level Llama trained for `steps` steps; also its weights after each step in
    `snapshots` (for drafts of several qualities)."""
    torch.manual_seed(seed)
    heads = max(1, d_model // 32)
    cfg = LlamaConfig(vocab_size=256, n_layers=n_layers, d_model=d_model, n_heads=heads,
                      n_kv_heads=max(1, heads // 2), max_seq_len=512)  # fmt: skip
    model = Llama(cfg)
    data = torch.tensor(list(b"".join(docs)), dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(seed)
    saved: dict[int, dict[str, torch.Tensor]] = {}
    for step in range(1, steps + 1):
        for group in opt.param_groups:
            warm = min(1.0, step / 20)
            group["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * step / steps))
        starts = torch.randint(0, len(data) - seq - 1, (batch,), generator=gen)
        x = torch.stack([data[s : s + seq] for s in starts])
        y = torch.stack([data[s + 1 : s + seq + 1] for s in starts])
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step in snapshots:
            saved[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return model.eval(), saved


@torch.no_grad()
def doc_losses(model: torch.nn.Module, docs: list[bytes]) -> np.ndarray:
    """Mean next-byte loss (nats per byte) of each held-out document, scored on its own."""
    out = []
    for doc in docs:
        ids = torch.tensor([list(doc[:512])], dtype=torch.long)
        out.append(float(model(ids[:, :-1], ids[:, 1:])))
    return np.asarray(out)
