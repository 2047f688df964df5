"""The small measured search behind the digits ViT recipe: the initialisation scale, then patch
size, width and depth, then the learning rate and the number of steps, each stage keeping the
best of the one before, chosen on a validation split (never the test set).

Seed 0's training split (`fms_mm.data.load_digits(seed=0)`) loses 20% of each class to a
validation set; every candidate trains on the rest with the same recipe (per-image random
shifts of one pixel, label smoothing 0.1, AdamW with weight decay 0.05, 5% warm-up then cosine,
batches of 64) and is scored on the validation set. One thread; CPU seconds are process time.

    uv run python packages/fms-mm/experiments/vit_search.py --stage init
    uv run python packages/fms-mm/experiments/vit_search.py --stage arch --init 0.2
    uv run python packages/fms-mm/experiments/vit_search.py --stage lr --init 0.2 --patch 2 \
        --width 64 --depth 4
    # appends to packages/fms-mm/experiments/results/vit_search.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from fms_mm.train import TrainSettings, digits_vit_config, train_vit

RESULTS = Path(__file__).resolve().parent / "results" / "vit_search.json"
ARCH = [(2, 64, 2), (2, 128, 4), (4, 64, 4), (4, 128, 4), (1, 64, 2)]  # (patch, width, depth)
"""The shapes tried beside the default (2, 64, 4); `--arch` runs a subset."""


def run(init: float, patch: int, width: int, depth: int, lr: float, steps: int) -> dict[str, Any]:
    """Train one candidate on seed 0's training split minus validation; its scores and cost."""
    c0, t0 = time.process_time(), time.perf_counter()
    _, m = train_vit(
        TrainSettings(steps=steps, lr=lr, seed=0),
        digits_vit_config(
            patch_size=patch, hidden_size=width, num_hidden_layers=depth, initializer_range=init
        ),
        validation=0.2,
    )
    return {
        "init": init,
        "patch": patch,
        "width": width,
        "depth": depth,
        "lr": lr,
        "steps": steps,
        "validation_accuracy": m["validation_accuracy"],
        "cpu_s": time.process_time() - c0,
        "wall_s": time.perf_counter() - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=("init", "arch", "lr"), required=True)
    parser.add_argument("--init", type=float, default=0.02)
    parser.add_argument("--inits", type=float, nargs="+", default=[0.02, 0.1, 0.2, 0.4])
    parser.add_argument("--patch", type=int, default=2)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument(
        "--arch", type=int, nargs="+", default=None, help="patch width depth [patch width depth...]"
    )
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 2e-3, 4e-3])
    parser.add_argument("--step-list", type=int, nargs="+", default=[2000, 4000])
    args = parser.parse_args()
    torch.set_num_threads(1)
    done: list[dict[str, Any]] = (
        json.loads(RESULTS.read_text())["runs"] if RESULTS.is_file() else []
    )
    if args.stage == "init":
        todo = [(i, args.patch, args.width, args.depth, 2e-3, args.steps) for i in args.inits]
    elif args.stage == "arch":
        shapes = (
            ARCH
            if args.arch is None
            else [tuple(args.arch[i : i + 3]) for i in range(0, len(args.arch), 3)]
        )
        todo = [(args.init, p, w, d, 2e-3, args.steps) for p, w, d in shapes]
    else:
        todo = [
            (args.init, args.patch, args.width, args.depth, lr, steps)
            for lr in args.lrs
            for steps in args.step_list
        ]
    for i, p, w, d, lr, steps in todo:
        key = {"init": i, "patch": p, "width": w, "depth": d, "lr": lr, "steps": steps}
        if any(all(r.get(k) == v for k, v in key.items()) for r in done):
            continue
        row = {"stage": args.stage, **run(i, p, w, d, lr, steps)}
        print(row, flush=True)
        # re-read before writing: another process may have added its runs meanwhile
        done = json.loads(RESULTS.read_text())["runs"] if RESULTS.is_file() else []
        done.append(row)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            json.dumps({"seed": 0, "validation": 0.2, "runs": done}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
