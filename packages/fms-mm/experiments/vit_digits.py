"""The ViT on scikit-learn's digits beside fms-dl's numpy CNN and scikit-learn's SVC, 3 seeds.

Each seed draws its own stratified 75/25 split (`fms_mm.data.load_digits(seed=...)`) and all
three models train and test on that same split. Accuracies are reported as the mean with a 95%
t-interval over the seeds; the figure is the class token's attention (last block, mean over
heads) on test digits of seed 0.

    uv run python packages/fms-mm/experiments/vit_digits.py [--steps 1500]
    # writes packages/fms-mm/experiments/results/vit_digits.json, docs/figures/fms-mm/vit_attention.png
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

import fms_dl
from fms_dl import nn, optim
from fms_dl.data import DataLoader, TensorDataset
from fms_dl.nn import functional as F
from fms_ml.experiment import t_ci
from fms_mm.data import load_digits
from fms_mm.train import TrainSettings, train_vit

ROOT = Path(__file__).resolve().parents[3]
RESULTS = Path(__file__).resolve().parent / "results" / "vit_digits.json"
FIGURE = ROOT / "docs" / "figures" / "fms-mm" / "vit_attention.png"
SEEDS = (0, 1, 2)


def cnn_accuracy(seed: int) -> float:
    """fms-dl's numpy CNN (its cnn_filters experiment's network and recipe) on the split."""
    d = load_digits(seed=seed)
    fms_dl.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip
    opt = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    loader = DataLoader(TensorDataset(d.x_train, d.y_train), batch_size=64, shuffle=True, seed=seed)
    sched = optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=20 * len(loader))
    for _ in range(20):
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            sched.step()
    model.eval()
    with fms_dl.no_grad():
        return float((model(fms_dl.Tensor(d.x_test)).argmax(-1).data == d.y_test).mean())


def svc_accuracy(seed: int) -> float:
    from sklearn.svm import SVC

    d = load_digits(seed=seed)
    clf = SVC(C=10.0, gamma="scale").fit(d.x_train.reshape(len(d.x_train), -1), d.y_train)
    return float((clf.predict(d.x_test.reshape(len(d.x_test), -1)) == d.y_test).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    vit0 = None
    for seed in SEEDS:
        t0, c0 = time.perf_counter(), time.process_time()
        vit, metrics = train_vit(TrainSettings(steps=args.steps, seed=seed))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        vit0 = vit if seed == 0 else vit0
        row = {
            "seed": seed,
            "vit": metrics["test_accuracy"],
            "vit_train_wall_s": wall,
            "vit_train_cpu_s": cpu,
            "cnn": cnn_accuracy(seed),
            "svc": svc_accuracy(seed),
        }
        print(row, flush=True)
        rows.append(row)
    summary = {}
    for name in ("vit", "cnn", "svc"):
        ci = t_ci([r[name] for r in rows])
        summary[name] = {"mean": ci.estimate, "low": ci.low, "high": ci.high}
    out = {"steps": args.steps, "seeds": list(SEEDS), "rows": rows, "summary": summary}
    RESULTS.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))

    assert vit0 is not None
    d = load_digits(seed=0)
    x = torch.from_numpy(d.x_test[:8])
    attn = vit0.attention_maps(x)[-1].mean(dim=1)[:, 0, 1:]  # class token -> 16 patches
    fig, axes = plt.subplots(2, 8, figsize=(11, 3.2), dpi=100)
    for i in range(8):
        axes[0, i].imshow(d.x_test[i, 0], cmap="gray_r")
        axes[0, i].set_title(f"label {d.y_test[i]}", fontsize=8)
        axes[1, i].imshow(attn[i].reshape(4, 4).numpy(), cmap="magma")
        for a in axes[:, i]:
            a.axis("off")
    fig.suptitle(
        "ViT on digits: test digits (top) and the class token's attention over the 4x4 grid of "
        "2x2 patches, last block, mean over heads (bottom); seed 0",
        fontsize=9,
    )
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, bbox_inches="tight")


if __name__ == "__main__":
    main()
