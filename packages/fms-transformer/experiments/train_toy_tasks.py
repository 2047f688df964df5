"""Train the four toy tasks to >= 99% exact-sequence accuracy with the fms_dl Trainer.

Usage: `python packages/fms-transformer/experiments/train_toy_tasks.py [--seeds 0 1 2]`.
Writes (merges into) `docs/figures/fms-transformer/toy_tasks.json` and prints a markdown table. Single-threaded
torch (the machine is shared); a few minutes per task on one core.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from fms_transformer.tasks import make_task, train_task

OUT = Path(__file__).resolve().parents[3] / "docs" / "figures" / "fms-transformer"

SETTINGS: dict[str, dict[str, Any]] = {
    "copy": {"steps": 1500, "lr": 3e-3, "max_len": 8},
    "reverse": {"steps": 1500, "lr": 3e-3, "max_len": 8},
    "sort": {"steps": 3000, "lr": 3e-3, "max_len": 8},
    "modadd": {"steps": 5000, "lr": 3e-3, "weight_decay": 1.0, "batch_size": 128},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tasks", nargs="+", default=list(SETTINGS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    for name in args.tasks:
        for seed in args.seeds:
            start = time.perf_counter()
            res = train_task(make_task(name), seed=seed, **SETTINGS[name])
            row = {"task": name, "seed": seed, **SETTINGS[name], **res.metrics,
                   "seconds": time.perf_counter() - start}  # fmt: skip
            results.append(row)
            print(json.dumps(row), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "toy_tasks.json"
    previous = json.loads(path.read_text()) if path.exists() else []
    done = {(r["task"], r["seed"]) for r in results}
    kept = [r for r in previous if (r["task"], r["seed"]) not in done]  # rerun tasks replace theirs
    results = sorted(kept + results, key=lambda r: (list(SETTINGS).index(r["task"]), r["seed"]))
    path.write_text(json.dumps(results, indent=1))
    print("| task | seed | steps | exact-sequence acc | token acc | time s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['task']} | {r['seed']} | {r['steps']} | {r['exact_acc']:.4f} | "
              f"{r['token_acc']:.4f} | {r['seconds']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
