"""CLIP on the scene generator: zero-shot accuracy on held-out colour-shape pairs, against chance
and a linear probe on the frozen image features, and retrieval recall@1/5 both ways; 3 seeds.

Each seed trains `fms_mm.train.train_clip` on 6,000 scenes whose colour-shape pairs exclude the
four held-out ones, then measures on 1,000 new scenes of only the held-out pairs:

- **zero-shot**: each of the 16 colour-shape classes is the mean of its 24 captions' unit
  vectors; an image takes the class it is most similar to (chance 1/16);
- **linear probe**: multinomial logistic regression (fms-ml's, `C=1`) on the frozen, normalised
  image embeddings of 2,000 labelled scenes of all 16 pairs, tested on the same held-out scenes:
  what a supervised read-out of the same features gets, with labels the zero-shot never saw;
- **retrieval**: image to caption among all 384 captions, caption to image among the test images.

Mean and 95% t-interval over the seeds (fms-ml's `t_ci`). The figure is seed 0's similarity
matrix between 12 held-out test scenes and their captions.

    uv run python packages/fms-mm/experiments/clip_scenes.py [--steps 1500] [--seeds 0 1 2]
    # writes experiments/results/clip_scenes/seed<N>.json, the summary of every seed run with
    # the same settings in experiments/results/clip_scenes.json, docs/figures/fms-mm/clip_similarity.png
    # (seeds may run as parallel processes; `--seeds` with no seed only re-summarizes)
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
import torch.nn.functional as F
from matplotlib.offsetbox import AnnotationBbox, OffsetImage

from fms_ml.linear_model import LogisticRegression
from fms_mm.clip import CLIP
from fms_mm.data import COLOURS, SHAPES, SceneSet, Vocab, make_scenes
from fms_mm.train import CONTEXT, TrainSettings, train_clip

from _seeds import save_row, summarize  # isort: skip

ROOT = Path(__file__).resolve().parents[3]
FIGURE = ROOT / "docs" / "figures" / "fms-mm" / "clip_similarity.png"
PAIRS = [(c, s) for c in COLOURS for s in SHAPES]


def embeddings(model: CLIP, scenes: SceneSet) -> np.ndarray:
    """Unit image embeddings `(n, projection_dim)` of the frozen model."""
    with torch.no_grad():
        x = torch.from_numpy(scenes.images)
        u = torch.cat([model.image_features(x[i : i + 256]) for i in range(0, len(x), 256)])
    return F.normalize(u, dim=-1).numpy()


def labels(scenes: SceneSet) -> np.ndarray:
    """The colour-shape class (0-15) of each scene."""
    return np.array([PAIRS.index((s.colour, s.shape)) for s in scenes.scenes])


def probe_accuracy(model: CLIP, seed: int, test: SceneSet) -> float:
    """Logistic regression on frozen embeddings of 2,000 scenes of all pairs, on `test`."""
    train = make_scenes(2000, seed=seed + 30_000, split="all")
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(embeddings(model, train), labels(train))
    return float((clf.predict(embeddings(model, test)) == labels(test)).mean())


def figure(model: CLIP, seed: int) -> None:
    """Seed 0's cosine similarities of 12 held-out test scenes (distinct captions) and captions."""
    vocab = Vocab.for_scenes()
    pool = make_scenes(200, seed=seed + 10_000, split="test")
    chosen, seen = [], set()
    for i, c in enumerate(pool.captions):
        if c not in seen:
            seen.add(c)
            chosen.append(i)
        if len(chosen) == 12:
            break
    images = pool.images[chosen]
    caps = [pool.captions[i] for i in chosen]
    ids, mask = (torch.from_numpy(a) for a in vocab.encode(caps, CONTEXT))
    with torch.no_grad():
        u = F.normalize(model.image_features(torch.from_numpy(images)), dim=-1)
        v = F.normalize(model.text_features(ids, mask), dim=-1)
    sim = (u @ v.T).numpy()
    fig, ax = plt.subplots(figsize=(10.5, 8.6), dpi=100)
    im = ax.imshow(sim.T, cmap="viridis", vmin=-1, vmax=1)
    ax.set_yticks(range(12), caps, fontsize=8)
    ax.set_xticks(range(12), [str(j + 1) for j in range(12)], fontsize=8)
    ax.set_xlabel("held-out test scene (pictured above its column)")
    for j in range(12):
        thumb = OffsetImage(images[j].transpose(1, 2, 0), zoom=1.4)
        ax.add_artist(
            AnnotationBbox(thumb, (j, -0.5), xybox=(0, 4), xycoords="data",
                           boxcoords="offset points", box_alignment=(0.5, 0), pad=0.1)
        )  # fmt: skip
        for k in range(12):
            ax.text(j, k, f"{sim[j, k]:.2f}", ha="center", va="center", fontsize=6,
                    color="black" if sim[j, k] > 0.3 else "white")  # fmt: skip
    fig.colorbar(im, ax=ax, fraction=0.03, label="cosine similarity")
    ax.set_title(
        "CLIP on scenes, seed 0: cosine similarity of 12 scenes of held-out colour-shape pairs\n"
        "(columns) and their captions (rows); the diagonal holds the true pairs",
        fontsize=9,
        pad=62,
    )
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, bbox_inches="tight")


KEYS = ["zero_shot_accuracy", "linear_probe_accuracy", "recall_at_1", "recall_at_5",
        "text_recall_at_1", "text_recall_at_5"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--no-figure", action="store_true", help="skip the figure (trial runs)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = {"steps": args.steps, "lr": args.lr, "batch_size": args.batch_size}
    for seed in args.seeds:
        c0, t0 = time.process_time(), time.perf_counter()
        model, m = train_clip(TrainSettings(seed=seed, **settings))
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        test = make_scenes(1000, seed=seed + 10_000, split="test")  # train_clip's test scenes
        row = {
            "seed": seed,
            **{k: v for k, v in m.items() if k != "loss"},
            "linear_probe_accuracy": probe_accuracy(model, seed, test),
            "final_loss": m["loss"],
            "logit_scale": float(model.logit_scale.exp()),
            "train_cpu_s": cpu,
            "train_wall_s": wall,
        }
        print(row, flush=True)
        save_row("clip_scenes", settings, row)
        if seed == 0 and not args.no_figure:
            figure(model, seed)
    out = summarize("clip_scenes", settings, KEYS, {"chance": 1 / 16})
    print(json.dumps(out["summary"], indent=2))


if __name__ == "__main__":
    main()
