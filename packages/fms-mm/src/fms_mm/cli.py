"""The `fms-mm` command: train the four models on the package's own data and evaluate them.

    fms-mm train vit --out runs/vit --steps 1500
    fms-mm train clip --out runs/clip --seed 1
    fms-mm train audio --out runs/audio
    fms-mm train vlm --out runs/vlm --lora-rank 4
    fms-mm eval vit runs/vit

`train` writes the model directory (`config.json`, `model.safetensors`) and `metrics.json`
atomically and prints the metrics as JSON; `eval` reloads a directory and measures it again on
the task's held-out data.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

TASKS = ("vit", "clip", "audio", "vlm")
DEFAULTS = {
    "vit": {"steps": 1500, "batch_size": 64, "lr": 2e-3},
    "clip": {"steps": 1500, "batch_size": 128, "lr": 1e-3},
    "audio": {"steps": 1500, "batch_size": 64, "lr": 1e-3},
    "vlm": {"steps": 1500, "batch_size": 64, "lr": 1e-3},
}
WHAT = {
    "vit": "a ViT classifier on scikit-learn's digits (test accuracy)",
    "clip": "CLIP on procedural scenes (zero-shot accuracy on held-out colour-shape pairs)",
    "audio": "an audio encoder on espeak-ng spoken digits (accuracy on held-out voices)",
    "vlm": "a ViT + projector captioning scenes through a frozen (or LoRA) fms-llm decoder",
}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (`fms-mm --help`, `fms-mm train --help`, `fms-mm eval --help`)."""
    parser = argparse.ArgumentParser(
        prog="fms-mm",
        description="Train and evaluate fms-mm's vision, contrastive, audio and vision-language "
        "models on data that needs no download.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a model and save it with its metrics")
    tasks = train.add_subparsers(dest="task", required=True)
    for task in TASKS:
        p = tasks.add_parser(task, help=WHAT[task], description=f"Train {WHAT[task]}.")
        d = DEFAULTS[task]
        p.add_argument("--out", type=Path, required=True, help="model directory to write")
        p.add_argument("--steps", type=_positive_int, default=d["steps"], help="optimiser steps")
        p.add_argument(
            "--batch-size", type=_positive_int, default=d["batch_size"], help="examples a step"
        )
        p.add_argument("--lr", type=_positive_float, default=d["lr"], help="peak learning rate")
        p.add_argument("--seed", type=int, default=0, help="seeds data, initialisation, batches")
        p.add_argument(
            "--device", default=None, help="cpu or cuda (default: cuda when present, else cpu)"
        )
        if task == "vlm":
            p.add_argument(
                "--lora-rank",
                type=int,
                default=0,
                help="LoRA rank on the decoder's attention (0: the decoder frozen)",
            )
    ev = sub.add_parser("eval", help="measure a saved model on its task's held-out data")
    ev.add_argument("task", choices=TASKS, help="what the directory holds")
    ev.add_argument("model", type=Path, help="a directory written by fms-mm train")
    ev.add_argument("--seed", type=int, default=0, help="the seed the model was trained with")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (2 for a bad argument or model directory)."""
    args = build_parser().parse_args(argv)
    from fms_mm import train as recipes

    try:
        if args.command == "eval":
            if not args.model.is_dir():
                print(f"fms-mm eval: model directory {args.model} does not exist", file=sys.stderr)
                return 2
            print(json.dumps(recipes.evaluate(args.task, args.model, seed=args.seed), indent=2))
            return 0
        settings = recipes.TrainSettings(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            device=args.device,
        )
        model: Any
        if args.task == "vit":
            model, metrics = recipes.train_vit(settings)
        elif args.task == "clip":
            model, metrics = recipes.train_clip(settings)
        elif args.task == "audio":
            model, metrics = recipes.train_audio(settings)
        else:
            model, metrics = recipes.train_vlm(settings, lora_rank=args.lora_rank)
    except ValueError as e:
        print(f"fms-mm {args.command}: {e}", file=sys.stderr)
        return 2
    model.cpu().save_pretrained(args.out)
    recipes.write_metrics(args.out, metrics, settings)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
