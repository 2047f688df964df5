"""Length generalisation of positional schemes: train on short copies, test on longer ones.

Usage: `python packages/fms-transformer/experiments/length_generalization.py [--seeds 0 1 2]
[--steps 1200]`.

Each of none / sinusoidal / learned / RoPE / ALiBi trains the same small pre-norm decoder
(`d_model=64`, 2 layers, 4 heads) on the copy task with source lengths 1..L (L=8), then is tested
on sources of length exactly 8, 12, 16, 24 and 32 (up to 4L). Per-token accuracy over the target
positions is averaged over seeds with a 95% Student-t interval
([`fms_ml.experiment.t_ci`][]). Writes `docs/figures/fms-transformer/length_generalization.png`
and `.json`. About 10 to 20 minutes on one core of the shared 2-core VM with the defaults
(single-threaded torch; 15 runs of 1200 steps).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from fms_ml.experiment import t_ci
from fms_transformer.tasks import SequenceTask, evaluate, train_task

OUT = Path(__file__).resolve().parents[3] / "docs" / "figures" / "fms-transformer"
SCHEMES = ["none", "sinusoidal", "learned", "rope", "alibi"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--train-len", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    L = args.train_len
    test_lengths = [L, int(1.5 * L), 2 * L, 3 * L, 4 * L]
    task = SequenceTask("copy")
    records = []
    for scheme in SCHEMES:
        for seed in args.seeds:
            start = time.perf_counter()
            res = train_task(
                task, positional=scheme, steps=args.steps, max_len=L, seed=seed,  # type: ignore[arg-type]
                model_max_len=2 * 4 * L + 2,
            )  # fmt: skip
            for n in test_lengths:
                batch = task.sample(np.random.default_rng([seed, 7, n]), 256, n, n)
                m = evaluate(res.model, batch)
                records.append({"scheme": scheme, "seed": seed, "length": n, **m})
            print(f"{scheme} seed {seed}: {time.perf_counter() - start:.0f}s "
                  + " ".join(f"{r['length']}:{r['token_acc']:.2f}" for r in records[-len(test_lengths):]),
                  flush=True)  # fmt: skip
    summary = {}
    for scheme in SCHEMES:
        for n in test_lengths:
            vals = [r["token_acc"] for r in records if r["scheme"] == scheme and r["length"] == n]
            exact = [r["exact_acc"] for r in records if r["scheme"] == scheme and r["length"] == n]
            ci = t_ci(vals) if len(vals) > 1 else None
            summary[f"{scheme}@{n}"] = {
                "token_acc": float(np.mean(vals)),
                "ci_low": ci.low if ci else float("nan"),
                "ci_high": ci.high if ci else float("nan"),
                "exact_acc": float(np.mean(exact)),
            }
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"steps": args.steps, "train_len": L, "seeds": args.seeds, "task": "copy"}
    (OUT / "length_generalization.json").write_text(
        json.dumps({"meta": meta, "records": records, "summary": summary}, indent=1)
    )
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for scheme in SCHEMES:
        mean = [summary[f"{scheme}@{n}"]["token_acc"] for n in test_lengths]
        lo = [summary[f"{scheme}@{n}"]["ci_low"] for n in test_lengths]
        hi = [summary[f"{scheme}@{n}"]["ci_high"] for n in test_lengths]
        ax.plot(test_lengths, mean, marker="o", label=scheme)
        ax.fill_between(test_lengths, lo, hi, alpha=0.15)
    ax.axvline(L, color="grey", ls="--", lw=1)
    ax.text(L, 0.02, " trained up to here", color="grey", fontsize=8)
    ax.set_xlabel("source length (copy task)")
    ax.set_ylabel("per-token accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(
        f"Copy, trained on length <= {L} ({args.steps} steps), {len(args.seeds)} seeds, 95% CI",
        fontsize=10,
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "length_generalization.png", dpi=100)
    print("| scheme | " + " | ".join(f"L={n}" for n in test_lengths) + " |")
    print("|---|" + "---:|" * len(test_lengths))
    for scheme in SCHEMES:
        cells = []
        for n in test_lengths:
            s = summary[f"{scheme}@{n}"]
            cells.append(f"{s['token_acc']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]")
        print(f"| {scheme} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
