"""The ViT on scikit-learn's digits beside fms-dl's numpy CNN and scikit-learn's SVC, 3 seeds.

Each seed draws its own stratified 75/25 split (`fms_mm.data.load_digits(seed=...)`) and all
three models train and test on that same split: the ViT with `fms_mm.train.train_vit` (per-image
random shifts of one pixel, label smoothing 0.1, AdamW with weight decay 0.05, 5% warm-up then
cosine) in the shape `vit_search.py` chose on a validation split, fms-dl's CNN with its own
recipe (`fms_dl.recipes`), scikit-learn's `SVC(C=10)`. Accuracies are reported as the mean with a
95% t-interval over the seeds; the figure is the class token's attention (last block, mean over
heads) on test digits of seed 0.

    uv run python packages/fms-mm/experiments/vit_digits.py [--steps 3000] [--seeds 0 1 2]
    # writes experiments/results/vit_digits/seed<N>.json, the summary in
    # experiments/results/vit_digits.json, docs/figures/fms-mm/vit_attention.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from fms_dl.recipes import accuracy, fit_digits_cnn
from fms_mm.data import load_digits
from fms_mm.train import TrainSettings, digits_vit_config, train_vit
from fms_mm.vision import ViT

from _seeds import save_row, summarize  # isort: skip

ROOT = Path(__file__).resolve().parents[3]
FIGURE = ROOT / "docs" / "figures" / "fms-mm" / "vit_attention.png"
RECIPE = {"patch_size": 4, "hidden_size": 64, "num_hidden_layers": 4, "initializer_range": 0.1}
"""The digits ViT chosen by `vit_search.py` on a validation split (see its results)."""
STEPS, LR = 1500, 2e-3


def cnn_accuracy(seed: int) -> float:
    """fms-dl's numpy CNN (`fms_dl.recipes`: its cnn_filters network and recipe) on the split."""
    d = load_digits(seed=seed)
    return accuracy(fit_digits_cnn(d.x_train, d.y_train, seed=seed), d.x_test, d.y_test)


def svc_accuracy(seed: int) -> float:
    from sklearn.svm import SVC

    d = load_digits(seed=seed)
    clf = SVC(C=10.0, gamma="scale").fit(d.x_train.reshape(len(d.x_train), -1), d.y_train)
    return float((clf.predict(d.x_test.reshape(len(d.x_test), -1)) == d.y_test).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--lr", type=float, default=LR)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--tag", default="", help="results under vit_digits_<tag> (other budgets)")
    parser.add_argument("--no-figure", action="store_true", help="leave the figure as it is")
    args = parser.parse_args()
    name = f"vit_digits_{args.tag}" if args.tag else "vit_digits"
    torch.set_num_threads(1)
    settings = {"steps": args.steps, "lr": args.lr, **RECIPE}
    for seed in args.seeds:
        t0, c0 = time.perf_counter(), time.process_time()
        vit, metrics = train_vit(
            TrainSettings(steps=args.steps, lr=args.lr, seed=seed), digits_vit_config(**RECIPE)
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        row = {
            "seed": seed,
            "vit": metrics["test_accuracy"],
            "vit_train_wall_s": wall,
            "vit_train_cpu_s": cpu,
            "cnn": cnn_accuracy(seed),
            "svc": svc_accuracy(seed),
        }
        print(row, flush=True)
        save_row(name, settings, row)
        if seed == 0 and not args.no_figure:
            figure(vit)
    out = summarize(name, settings, ["vit", "cnn", "svc", "vit_train_cpu_s"])
    print(json.dumps(out["summary"], indent=2))


def figure(vit: ViT) -> None:
    """Seed 0's test digits and the class token's attention over the patches (last block)."""
    d = load_digits(seed=0)
    x = torch.from_numpy(d.x_test[:8])
    grid = 8 // vit.config.patch_size
    attn = vit.attention_maps(x)[-1].mean(dim=1)[:, 0, 1:]  # class token -> the patches
    fig, axes = plt.subplots(2, 8, figsize=(11, 3.2), dpi=100)
    for i in range(8):
        axes[0, i].imshow(d.x_test[i, 0], cmap="gray_r")
        axes[0, i].set_title(f"label {d.y_test[i]}", fontsize=8)
        axes[1, i].imshow(attn[i].reshape(grid, grid).numpy(), cmap="magma")
        for a in axes[:, i]:
            a.axis("off")
    p = vit.config.patch_size
    fig.suptitle(
        f"ViT on digits: test digits (top) and the class token's attention over the {grid}x{grid} "
        f"grid of {p}x{p} patches, last block, mean over heads (bottom); seed 0",
        fontsize=9,
    )
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, bbox_inches="tight")


if __name__ == "__main__":
    main()
