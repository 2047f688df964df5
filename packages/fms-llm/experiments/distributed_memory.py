"""Memory per GPU of a Llama 2 7B and 70B training run, by strategy and world size, on paper.

[estimate_memory][fms_llm.distributed.memory.estimate_memory] (tested within 1% of PyTorch's
MemTracker on the 2-process CPU runs, 6% for FSDP) for bf16 autocast over float32 weights
(4 + 4 + 8 bytes a parameter for weights, gradients and AdamW moments; activations in 2 bytes),
one 4096-token sequence a rank (a micro-batch of 1 window), no activation checkpointing.
DDP and FSDP run on 1..512 GPUs; tensor parallelism on at most 8 (the 70B model has 8 key/value
heads, and 8 GPUs share one NVLink node). The dashed lines are an 80 GB and a 141 GB GPU.

    uv run python packages/fms-llm/experiments/distributed_memory.py

Writes `docs/figures/fms-llm/distributed_memory.png` and `distributed_memory.json` (every
estimate). Seconds: arithmetic only, no model is built.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fms_llm.distributed.memory import count_parameters, estimate_memory
from fms_llm.models.gpt import LlamaConfig

ROOT = Path(__file__).resolve().parents[3]
FIGURES = ROOT / "docs" / "figures" / "fms-llm"
MODELS = {
    "Llama 2 7B": LlamaConfig(n_layers=32, d_model=4096, n_heads=32, d_ff=11008, max_seq_len=4096),
    "Llama 2 70B": LlamaConfig(
        n_layers=80, d_model=8192, n_heads=64, n_kv_heads=8, d_ff=28672, max_seq_len=4096
    ),
}
BYTES = {"param_bytes": 4, "grad_bytes": 4, "optimizer_bytes": 8, "activation_bytes": 2}
SEQ = 4096


def main() -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    out: dict[str, dict[str, list[dict[str, object]]]] = {}
    for ax, (name, config) in zip(axes, MODELS.items(), strict=True):
        out[name] = {}
        for strategy, worlds in (
            ("ddp", [1, 2, 4, 8, 16, 64, 512]),
            ("fsdp", [1, 2, 4, 8, 16, 64, 512]),
            ("tp", [1, 2, 4, 8]),
        ):
            rows = []
            for w in worlds:
                batch = w if strategy in ("ddp", "fsdp") else 1  # one sequence a rank (TP: all)
                est = estimate_memory(
                    config, strategy=strategy, world_size=w, batch_size=batch, seq_len=SEQ, **BYTES
                )
                rows.append({"world_size": w, **est.as_dict()})
            out[name][strategy] = rows
            ax.plot(
                [r["world_size"] for r in rows],
                [r["peak_gib"] for r in rows],
                marker="o",
                label={"ddp": "DDP", "fsdp": "FSDP (ZeRO-3)", "tp": "tensor parallel"}[strategy],
            )
        for gb, label in ((80e9, "80 GB"), (141e9, "141 GB")):
            ax.axhline(gb / 1024**3, color="grey", linestyle="--", linewidth=0.8)
            ax.text(1, gb / 1024**3 * 1.08, label, color="grey", fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        psi = count_parameters(config).total
        ax.set_title(f"{name} ({psi / 1e9:.2f}B parameters)")
        ax.set_xlabel("GPUs (world size)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("peak memory per GPU (GiB)")
    axes[0].legend()
    fig.suptitle("Training memory per GPU: bf16 autocast, AdamW, one 4096-token sequence a rank")
    fig.tight_layout()
    fig.savefig(FIGURES / "distributed_memory.png", dpi=120)
    (FIGURES / "distributed_memory.json").write_text(json.dumps(out, indent=1) + "\n")
    for name, by in out.items():
        for strategy, rows in by.items():
            cells = ", ".join(f"{r['world_size']}: {r['peak_gib']:.0f}" for r in rows)
            print(f"{name} {strategy}: GiB per GPU by world size {cells}")


if __name__ == "__main__":
    main()
