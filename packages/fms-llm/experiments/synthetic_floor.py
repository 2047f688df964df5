"""Loss curves of several model sizes on the synthetic story corpus against its entropy floor.

Three GPT sizes, each trained with several seeds (the seed changes the initialisation and the
batches; the corpus is fixed), all for the same number of tokens. Every `--eval-every` steps the
whole-document validation loss (nats per token; each held-out story scored from its start) is
logged next to the Bayes-optimal floor of the same stories. The figure shows the mean over seeds
with a 95% Student-t band ([fms_ml.experiment.t_ci][]), and the floor.

    python packages/fms-llm/experiments/synthetic_floor.py [--seeds 3] [--steps 150]

Writes `docs/figures/fms-llm/synthetic_floor.png` and `synthetic_floor.json` (the raw curves).
A few minutes of CPU time with the defaults (about 10 minutes of wall time on a shared 2-core
machine).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from fms_llm.train import load_config, pretrain
from fms_ml.experiment import t_ci

ROOT = Path(__file__).resolve().parents[3]
FIGURES = ROOT / "docs" / "figures" / "fms-llm"
SIZES = [(32, 1, 2), (64, 2, 4), (96, 2, 4)]  # (d_model, n_layers, n_heads)


def run(d: int, layers: int, heads: int, seed: int, steps: int, eval_every: int,
        workdir: Path) -> list[dict[str, float]]:  # fmt: skip
    out = workdir / f"d{d}-l{layers}-s{seed}"
    overrides = [
        'data.corpus="synthetic"', "data.synthetic_docs=3000", "data.vocab_size=512",
        "data.val_fraction=0.05", f'data.cache_dir="{workdir / "cache"}"',
        f"model.d_model={d}", f"model.n_layers={layers}", f"model.n_heads={heads}",
        "model.max_seq_len=192", "train.seq_len=128", "train.batch_size=8",
        f"train.max_steps={steps}", "train.warmup_steps=10", "train.lr=1e-2", "train.min_lr=1e-3",
        f"train.eval_every={eval_every}", "train.eval_batches=2", "train.checkpoint_every=none",
        f"train.seed={seed}", f'train.out_dir="{out}"', "train.progress=false",
        "train.peak_flops=1e11", "sample.max_new_tokens=1",
    ]  # fmt: skip
    result = pretrain(load_config("tiny", overrides))
    lines = [json.loads(s) for s in (out / "log.jsonl").read_text().splitlines()]
    params = result.model.num_parameters(non_embedding=True)
    return [
        {"step": r["step"], "tokens": r["step"] * 8 * 128, "doc_loss": r["doc_loss"],
         "floor": r["floor_loss"], "params": params}
        for r in lines if r["event"] == "eval"
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-every", type=int, default=30)
    args = parser.parse_args()
    curves: dict[str, list[list[dict[str, float]]]] = {}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for d, layers, heads in SIZES:
            key = f"d={d}, L={layers}"
            curves[key] = [
                run(d, layers, heads, seed, args.steps, args.eval_every, Path(tmp))
                for seed in range(args.seeds)
            ]
            print(f"{key}: done ({time.time() - t0:.0f} s)", flush=True)
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / "synthetic_floor.json").write_text(json.dumps(curves, indent=1))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    floor = curves[next(iter(curves))][0][0]["floor"]
    summary = []
    for key, runs in curves.items():
        tokens = np.array([r["tokens"] for r in runs[0]])
        losses = np.array([[r["doc_loss"] for r in run] for run in runs])
        cis = [t_ci(losses[:, j]) for j in range(losses.shape[1])]
        mean = np.array([c.estimate for c in cis])
        ax.plot(tokens, mean, label=f"{key} ({runs[0][0]['params'] / 1e3:.0f}k params)")
        ax.fill_between(tokens, [c.low for c in cis], [c.high for c in cis], alpha=0.25)
        summary.append(
            f"{key}: final loss {cis[-1]} nats/token, gap {cis[-1].estimate - floor:.3f}"
        )
    ax.axhline(floor, color="k", linestyle="--", label=f"entropy floor ({floor:.3f})")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation loss, whole documents (nats/token)")
    ax.set_yscale("log")
    ax.set_title(f"Synthetic stories: loss vs the Bayes-optimal floor ({args.seeds} seeds, 95% CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(FIGURES / "synthetic_floor.png", dpi=100)
    print("\n".join(summary))
    print(f"floor: {floor:.4f} nats/token; wrote {FIGURES / 'synthetic_floor.png'}")


if __name__ == "__main__":
    main()
