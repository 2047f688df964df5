"""Attention maps of a small model trained on the reverse task.

Usage: `python packages/fms-transformer/experiments/attention_maps.py [--steps 1500]`.
Trains the 2-layer, 4-head toy model (learned positions, seed 0) on reversing strings of length
1..8, then draws every head's attention probabilities on one length-8 example into
`docs/figures/fms-transformer/attention_maps.png`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from fms_transformer.tasks import SequenceTask, train_task

OUT = Path(__file__).resolve().parents[3] / "docs" / "figures" / "fms-transformer"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--task", default="reverse", choices=["copy", "reverse", "sort"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = SequenceTask(args.task)
    result = train_task(task, steps=args.steps, max_len=8, seed=0)
    print("metrics:", result.metrics)
    model = result.model.eval()
    batch = task.sample(np.random.default_rng(123), 1, 8, 8)
    tokens = batch.inputs  # x_1..x_8 SEP y_1..y_7: every position that predicts a target
    attns = [layer.self_attn for layer in model.decoder.layers]
    for a in attns:
        a.record_attention = True
    with torch.no_grad():
        model(tokens)
    labels = [str(int(t)) if int(t) < task.n_symbols else "|" for t in tokens[0]]
    n_layers, n_heads = len(attns), attns[0].n_heads
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(2.6 * n_heads, 2.7 * n_layers))
    for i, a in enumerate(attns):
        w = a.last_attention
        assert w is not None
        for h in range(n_heads):
            ax = axes[i, h]
            ax.imshow(w[0, h].numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {i} head {h}", fontsize=9)
            ax.set_xticks(range(len(labels)), labels, fontsize=6)
            ax.set_yticks(range(len(labels)), labels, fontsize=6)
    fig.suptitle(f"{args.task}: rows = queries, columns = keys ('|' = SEP)", fontsize=10)
    fig.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / "attention_maps.png", dpi=100)


if __name__ == "__main__":
    main()
