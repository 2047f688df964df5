"""Plot time and saved-activation memory of naive, tiled and PyTorch attention against length.

Usage: first `python packages/fms-transformer/benchmarks/bench_attention.py --json
docs/figures/fms-transformer/bench_attention.json`, then
`python packages/fms-transformer/experiments/plot_attention_benchmark.py`; writes
`docs/figures/fms-transformer/attention_scaling.png`.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

OUT = Path(__file__).resolve().parents[3] / "docs" / "figures" / "fms-transformer"


def main() -> None:
    data = json.loads((OUT / "bench_attention.json").read_text())
    rows = data["rows"]
    lengths = [r["L"] for r in rows]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for name, style in (("naive", "o-"), ("tiled", "s-"), ("torch", "^--")):
        ax_t.loglog(lengths, [r[f"{name}_s"] for r in rows], style, base=2, label=name)
        ax_m.loglog(
            lengths, [r[f"{name}_saved_bytes"] / 2**20 for r in rows], style, base=2, label=name
        )
    ax_t.set_xlabel("sequence length")
    ax_t.set_ylabel("forward + backward, seconds")
    ax_t.set_title("time (1 thread, batch 1, 2 heads, d=64)")
    ax_m.set_xlabel("sequence length")
    ax_m.set_ylabel("activations saved for backward, MiB")
    ax_m.set_title("memory: quadratic vs linear")
    for ax in (ax_t, ax_m):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "attention_scaling.png", dpi=100)


if __name__ == "__main__":
    main()
