"""The VLM captioning scenes through a frozen fms-llm decoder: exact-caption accuracy on new
scenes and on held-out colour-shape pairs, with each attribute's accuracy; 3 seeds.

Each seed runs `fms_mm.train.train_vlm`: a small GPT is pretrained on the 384 scene captions
alone (text, no image), frozen, and a ViT with a two-layer MLP projector learns to put each
scene in front of it as 16 soft tokens, on 6,000 scenes of the training pairs. Greedy captions
are then scored on 500 **new scenes** of the training pairs (never seen, every attribute
combination possible) and 500 scenes of the four **held-out pairs** (a colour never seen with
that shape in any training image): exact match of the whole caption, and the accuracy of each
attribute read back from it (count, size, colour, shape, position; an unparsable caption
scores zero on all). Mean and 95% t-interval over the seeds (fms-ml's `t_ci`); the figure shows
seed 0's captions of eight scenes of each kind.

    uv run python packages/fms-mm/experiments/vlm_captions.py [--steps 1500] [--seeds 0 1 2]
    # writes experiments/results/vlm_captions/seed<N>.json, the summary of every seed run with
    # the same settings in experiments/results/vlm_captions.json, docs/figures/fms-mm/vlm_captions.png
    # (seeds may run as parallel processes; `--seeds` with no seed only re-summarizes)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from fms_mm.data import SHAPES, Vocab, make_scenes
from fms_mm.train import TrainSettings, generate_captions, train_vlm

from _seeds import save_row, summarize  # isort: skip

ROOT = Path(__file__).resolve().parents[3]
FIGURE = ROOT / "docs" / "figures" / "fms-mm" / "vlm_captions.png"
ATTRIBUTES = ("count", "size", "colour", "shape", "position")
SPLITS = {"new_scenes": "train", "held_out_pairs": "test"}


def parse(text: str) -> dict[str, str] | None:
    """Attributes of a caption "<count> <size> <colour> <shape>[s] on the <position>", or None."""
    words = text.split()
    if len(words) != 7 or words[4:6] != ["on", "the"]:
        return None
    noun = words[3]
    shape = next((s for s in SHAPES if noun in (s, s + "s", s + "es")), None)
    if shape is None:
        return None
    return dict(zip(ATTRIBUTES, (words[0], words[1], words[2], shape, words[6]), strict=True))


def score(generated: list[str], truth: list[str]) -> dict[str, float]:
    """Exact-caption accuracy and each attribute's accuracy."""
    out = {"exact": float(np.mean([g == t for g, t in zip(generated, truth, strict=True)]))}
    parsed = [(parse(g), parse(t)) for g, t in zip(generated, truth, strict=True)]
    for a in ATTRIBUTES:
        out[a] = float(
            np.mean([g is not None and t is not None and g[a] == t[a] for g, t in parsed])
        )
    return out


def figure(examples: dict[str, tuple[np.ndarray, list[str], list[str]]]) -> None:
    fig, axes = plt.subplots(2, 8, figsize=(15, 5.4), dpi=100)
    for row, (name, (images, gen, truth)) in enumerate(examples.items()):
        for j in range(8):
            ax = axes[row, j]
            ax.imshow(images[j].transpose(1, 2, 0))
            ok = gen[j] == truth[j]
            words = gen[j].split()
            ax.set_title(
                f"{' '.join(words[:3])}\n{' '.join(words[3:])}",
                fontsize=7,
                color="darkgreen" if ok else "firebrick",
            )
            if not ok:
                t = truth[j].split()
                ax.set_xlabel(f"true: {' '.join(t[:3])}\n{' '.join(t[3:])}", fontsize=6)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(name.replace("_", " "), fontsize=8)
    fig.suptitle(
        "VLM (ViT + projector into a frozen fms-llm GPT), seed 0: greedy captions of new scenes "
        "(top) and of held-out colour-shape pairs (bottom); green exact, red wrong",
        fontsize=9,
    )
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lm-steps", type=int, default=400)
    parser.add_argument("--lora-rank", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--no-figure", action="store_true", help="skip the figure (trial runs)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    vocab = Vocab.for_scenes()
    settings = {"steps": args.steps, "lr": args.lr, "lm_steps": args.lm_steps,
                "lora_rank": args.lora_rank}  # fmt: skip
    for seed in args.seeds:
        c0, t0 = time.process_time(), time.perf_counter()
        vlm, m = train_vlm(
            TrainSettings(steps=args.steps, lr=args.lr, seed=seed),
            lora_rank=args.lora_rank,
            lm_steps=args.lm_steps,
        )
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        row: dict[str, Any] = {"seed": seed, "final_loss": m["loss"], "train_cpu_s": cpu}
        row["train_wall_s"] = wall
        examples = {}
        for name, split in SPLITS.items():
            scenes = make_scenes(500, seed=seed + 20_000, split=split)  # train_vlm's test scenes
            gen = generate_captions(vlm, scenes, vocab)
            for k, v in score(gen, scenes.captions).items():
                row[f"{name}_{k}"] = v
            assert row[f"{name}_exact"] == m[f"caption_accuracy_{name}"]
            examples[name] = (scenes.images[:8], gen[:8], scenes.captions[:8])
        print(row, flush=True)
        save_row("vlm_captions", settings, row)
        if seed == 0 and not args.no_figure:
            figure(examples)
    keys = [f"{name}_{k}" for name in SPLITS for k in ("exact", *ATTRIBUTES)]
    out = summarize("vlm_captions", settings, keys)
    print(json.dumps(out["summary"], indent=2))


if __name__ == "__main__":
    main()
