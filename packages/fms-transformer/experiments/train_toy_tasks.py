"""Train the four toy tasks over several seeds with the fms_dl Trainer; report 95% t-intervals.

Usage: `python packages/fms-transformer/experiments/train_toy_tasks.py [--seeds 0 1 2]
[--tasks copy reverse sort modadd] [--plot-only]`.

Each (task, seed) run trains a fresh 2-layer, 4-head, `d_model=64` pre-norm decoder (learned
positions) and scores it on fresh strings (or, for modular addition, on the held-out pairs; the
split is fixed, so there the seed changes the initialisation and the batch order only). Runs go
seed by seed, and every finished run is merged into `docs/figures/fms-transformer/toy_tasks.json`
at once, so an interrupted sweep keeps what it finished. At the end the script writes the summary
(mean and 95% Student-t interval over seeds, [`fms_ml.experiment.t_ci`][]) into the same JSON,
draws `toy_tasks.png` and prints a markdown table. Single-threaded torch; each run records its
CPU time (process time), which on a loaded machine is the honest cost: about 3 to 6 minutes a
run on one core of the 2-core VM. `--plot-only` redraws the figure and table from the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from fms_ml.experiment import t_ci
from fms_transformer.tasks import make_task, train_task

OUT = Path(__file__).resolve().parents[3] / "docs" / "figures" / "fms-transformer"
PATH = OUT / "toy_tasks.json"

SETTINGS: dict[str, dict[str, Any]] = {
    "copy": {"steps": 1500, "lr": 3e-3, "max_len": 8},
    "reverse": {"steps": 1500, "lr": 3e-3, "max_len": 8},
    "sort": {"steps": 3000, "lr": 3e-3, "max_len": 8},
    "modadd": {"steps": 5000, "lr": 3e-3, "weight_decay": 1.0, "batch_size": 128},
}
METRICS = ("exact_acc", "token_acc")


def _load() -> list[dict[str, Any]]:
    if not PATH.exists():
        return []
    data = json.loads(PATH.read_text())
    return list(data["runs"] if isinstance(data, dict) else data)  # old files: a bare list


def _save(runs: list[dict[str, Any]], summary: dict[str, Any] | None = None) -> None:
    runs = sorted(runs, key=lambda r: (list(SETTINGS).index(r["task"]), r["seed"]))
    OUT.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"settings": SETTINGS, "runs": runs}
    if summary is not None:
        record["summary"] = summary
    tmp = PATH.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(PATH)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and 95% t-interval over seeds of each task's metrics (runs with its current steps)."""
    summary: dict[str, Any] = {}
    for task, setting in SETTINGS.items():
        rows = [r for r in runs if r["task"] == task and r["steps"] == setting["steps"]]
        if not rows:
            continue
        entry: dict[str, Any] = {"seeds": [r["seed"] for r in rows], "steps": setting["steps"]}
        for key in (*METRICS, "cpu_seconds"):
            values = [float(r[key]) for r in rows if key in r]
            if not values:
                continue
            if len(values) > 1:
                ci = t_ci(values)
                entry[key] = {"mean": ci.estimate, "low": ci.low, "high": ci.high}
            else:
                entry[key] = {"mean": values[0], "low": math.nan, "high": math.nan}
            entry[key]["min"] = min(values)
        summary[task] = entry
    return summary


def plot(runs: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """Exact-sequence accuracy per task: every seed as a dot, the mean and its 95% interval."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    tasks = [t for t in SETTINGS if t in summary]
    for i, task in enumerate(tasks):
        rows = [r for r in runs if r["task"] == task and r["steps"] == SETTINGS[task]["steps"]]
        values = [100 * r["exact_acc"] for r in rows]
        ax.scatter(i + np.linspace(-0.12, 0.12, len(values)), values, color="tab:blue", zorder=3,
                   label="one seed" if i == 0 else None)  # fmt: skip
        s = summary[task]["exact_acc"]
        mean = 100 * s["mean"]
        ax.hlines(mean, i - 0.25, i + 0.25, color="black", lw=2, label="mean" if i == 0 else None)
        if not math.isnan(s["low"]):
            ax.vlines(i + 0.3, 100 * s["low"], min(100.0, 100 * s["high"]), color="tab:red", lw=2,
                      label="95% t-interval" if i == 0 else None)  # fmt: skip
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels([f"{t}\n{SETTINGS[t]['steps']} steps" for t in tasks])
    ax.set_ylabel("exact-sequence accuracy (%)")
    n_seeds = max(len(summary[t]["seeds"]) for t in tasks)
    ax.set_title(f"Toy tasks, 2-layer d=64 decoder, {n_seeds} seeds", fontsize=10)
    low = min(100 * r["exact_acc"] for r in runs)
    ax.set_ylim(max(0.0, min(98.0, low - 1)), 100.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(OUT / "toy_tasks.png", dpi=100)


def table(summary: dict[str, Any]) -> None:
    """Print the summary as the chapter's markdown table."""

    def cell(s: dict[str, float]) -> str:
        if math.isnan(s["low"]):
            return f"{100 * s['mean']:.1f}%"
        return f"{100 * s['mean']:.1f}% [{100 * s['low']:.1f}, {min(100.0, 100 * s['high']):.1f}]"

    print("| task | steps | seeds | exact-sequence acc [95% CI] | lowest seed | "
          "per-token acc [95% CI] | CPU per run |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for task, s in summary.items():
        cpu = s.get("cpu_seconds", {}).get("mean", math.nan)
        print(f"| {task} | {s['steps']} | {len(s['seeds'])} | {cell(s['exact_acc'])} | "
              f"{100 * s['exact_acc']['min']:.1f}% | {cell(s['token_acc'])} | "
              f"{cpu / 60:.1f} min |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = _load()
    if not args.plot_only:
        for seed in args.seeds:
            for name in args.tasks:
                wall, cpu = time.perf_counter(), time.process_time()
                res = train_task(make_task(name), seed=seed, **SETTINGS[name])
                row = {"task": name, "seed": seed, **SETTINGS[name], **res.metrics,
                       "seconds": time.perf_counter() - wall,
                       "cpu_seconds": time.process_time() - cpu}  # fmt: skip
                print(json.dumps(row), flush=True)
                runs = [r for r in runs if (r["task"], r["seed"]) != (name, seed)] + [row]
                _save(runs)  # a rerun replaces that (task, seed); the sweep survives interruption
    summary = summarise(runs)
    _save(runs, summary)
    plot(runs, summary)
    table(summary)


if __name__ == "__main__":
    main()
