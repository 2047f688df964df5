"""The audio encoder on spoken digits in voices it never heard, beside pocketsphinx, 3 seeds.

Data: the ten digit words in 60 espeak-ng voices (6 accents x 10 variants) at two speeds and
two pitches, white noise at 20 dB SNR drawn from the seed (`fms_mm.data.spoken_digits`).
Variants m5 and f5 of every accent (12 voices, 480 clips) are the test voices: never heard in
training. The recipe (`fms_mm.train.train_audio`: augmentation by speed, offset, gain, noise and
SpecAugment masks) was tuned with `--validate`, which also holds variants m4 and f4 out of
training and scores them instead, without touching the test voices.

The baseline is pocketsphinx (its US English acoustic model and dictionary ship in the PyPI
wheel) constrained by a JSGF grammar of the ten digit words, on the same test clips: the
one-second windows our encoder reads, as 16 kHz int16. It is also given each clip with 0.25 s
of silence before the word, which its feature normalisation prefers.

Each seed draws its own noise, initialisation and batches. Accuracies are the mean over seeds
with a 95% t-interval (`fms_ml.experiment.t_ci`), and the ratio ours / pocketsphinx is taken
per seed. The figure is both confusion matrices summed over the seeds.

    uv run python packages/fms-mm/experiments/audio_digits.py [--steps 1500] [--validate]
    # or one process a seed, then the summary:
    #   ... audio_digits.py --seeds 0 --rows runs/audio & (1, 2 likewise); ... --rows runs/audio --collect
    # writes packages/fms-mm/experiments/results/audio_digits.json (or audio_digits_validation.json)
    # and docs/figures/fms-mm/audio_confusion.png
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from fms_ml.experiment import environment, t_ci
from fms_ml.metrics import confusion_matrix
from fms_mm.data import DIGIT_WORDS, spoken_digits
from fms_mm.train import (
    AUDIO_SAMPLES,
    TEST_VOICES_PER_ACCENT,
    AudioAugment,
    TrainSettings,
    train_audio,
)

ROOT = Path(__file__).resolve().parents[3]
RESULTS = Path(__file__).resolve().parent / "results"
FIGURE = ROOT / "docs" / "figures" / "fms-mm" / "audio_confusion.png"
SEEDS = (0, 1, 2)
GRAMMAR = "#JSGF V1.0;\ngrammar digits;\npublic <digit> = " + " | ".join(DIGIT_WORDS) + ";\n"


def pocketsphinx_predictions(clips: np.ndarray, lead_silence: float = 0.0) -> np.ndarray:
    """The digit pocketsphinx's JSGF grammar decodes from each `(n, samples)` 16 kHz clip (-1
    where it returns no hypothesis)."""
    import pocketsphinx

    dec = pocketsphinx.Decoder(samprate=16000, logfn=os.devnull)
    dec.add_jsgf_string("digits", GRAMMAR)
    dec.activate_search("digits")
    lead = np.zeros(round(lead_silence * 16000), dtype=np.float32)
    out = np.full(len(clips), -1, dtype=np.int64)
    for i, clip in enumerate(clips):
        pcm = (np.clip(np.concatenate([lead, clip]), -1, 1) * 32767).astype("<i2")
        dec.start_utt()
        dec.process_raw(pcm.tobytes(), no_search=False, full_utt=True)
        dec.end_utt()
        hyp = dec.hyp()
        words = hyp.hypstr.split() if hyp is not None else []
        if words and words[0] in DIGIT_WORDS:
            out[i] = DIGIT_WORDS.index(words[0])
    return out


def run_seed(seed: int, steps: int, validate: bool) -> dict[str, Any]:
    settings = TrainSettings(steps=steps, seed=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    _, metrics = train_audio(settings, augment=AudioAugment(), validation=validate)
    row: dict[str, Any] = {
        "seed": seed,
        **metrics,
        "train_cpu_s": time.process_time() - c0,
        "train_wall_s": time.perf_counter() - t0,
    }
    if validate:
        return row
    data = spoken_digits(seed=seed)  # the same noisy clips train_audio tested on
    held = sorted({v for v in data.voices if v.endswith(TEST_VOICES_PER_ACCENT)})
    _, test = data.split(held)
    assert held == metrics["test_voices"]
    clips = test.padded(AUDIO_SAMPLES)
    for name, lead in (("pocketsphinx", 0.0), ("pocketsphinx_lead_silence", 0.25)):
        c0 = time.process_time()
        pred = pocketsphinx_predictions(clips, lead)
        row[f"{name}_accuracy"] = float((pred == test.labels).mean())
        row[f"{name}_no_hypothesis"] = int((pred < 0).sum())
        hit = pred >= 0
        row[f"{name}_confusion"] = confusion_matrix(
            test.labels[hit], pred[hit], labels=np.arange(10)
        ).tolist()
        row[f"{name}_cpu_s"] = time.process_time() - c0
    return row


def summary(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    ci = t_ci([r[key] for r in rows])
    return {"mean": ci.estimate, "low": ci.low, "high": ci.high}


def figure(rows: list[dict[str, Any]]) -> None:
    panels = [("fms-mm AudioEncoder", "test_confusion")]
    panels.append(("pocketsphinx, JSGF digits grammar", "pocketsphinx_lead_silence_confusion"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, (title, key) in zip(axes, panels, strict=True):
        m = np.sum([np.asarray(r[key]) for r in rows], axis=0)
        total = len(rows) * 48  # 12 voices x 2 speeds x 2 pitches of each digit, per seed
        ax.imshow(m / total, cmap="Blues", vmin=0, vmax=1)
        for i in range(10):
            for j in range(10):
                if m[i, j]:
                    colour = "white" if m[i, j] > total / 2 else "black"
                    ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7, color=colour)
        acc = np.trace(m) / (10 * total)
        ax.set_title(f"{title}\n{100 * acc:.1f}% of {10 * total} test clips (3 seeds)", fontsize=9)
        ax.set_xticks(range(10), DIGIT_WORDS, rotation=60, fontsize=7)
        ax.set_yticks(range(10), DIGIT_WORDS, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("spoken")
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument(
        "--validate", action="store_true", help="tune: hold out m4/f4 voices, score them"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument(
        "--rows",
        type=Path,
        help="a folder: write each seed's row there (seeds run as parallel processes), or, "
        "with --collect, read the rows from it",
    )
    parser.add_argument("--collect", action="store_true", help="summarise the rows in --rows")
    args = parser.parse_args()
    if args.collect and args.rows is None:
        parser.error("--collect needs --rows DIR")
    torch.set_num_threads(1)
    tag = "validation" if args.validate else "test"
    if args.collect:
        rows = [json.loads((args.rows / f"{tag}_seed{s}.json").read_text()) for s in args.seeds]
    else:
        rows = []
        for seed in args.seeds:
            row = run_seed(seed, args.steps, args.validate)
            rows.append(row)
            shown = {k: v for k, v in row.items() if not k.endswith(("confusion", "voices"))}
            print(json.dumps(shown), flush=True)
            if args.rows is not None:
                args.rows.mkdir(parents=True, exist_ok=True)
                (args.rows / f"{tag}_seed{seed}.json").write_text(json.dumps(row) + "\n")
        if args.rows is not None:
            return
    record: dict[str, Any] = {
        "steps": args.steps,
        "augment": AudioAugment().__dict__,
        "seeds": args.seeds,
        "environment": environment(),
        "loadavg": os.getloadavg(),
        "rows": rows,
    }
    if len(rows) >= 2:
        keys = ["validation_accuracy"] if args.validate else ["test_accuracy"]
        if not args.validate:
            keys += ["pocketsphinx_accuracy", "pocketsphinx_lead_silence_accuracy"]
            for r in rows:
                r["ratio_vs_pocketsphinx"] = r["test_accuracy"] / max(
                    r["pocketsphinx_accuracy"], r["pocketsphinx_lead_silence_accuracy"]
                )
            keys.append("ratio_vs_pocketsphinx")
        record["summary"] = {k: summary(rows, k) for k in keys}
        print(json.dumps(record["summary"], indent=2))
    name = "audio_digits_validation.json" if args.validate else "audio_digits.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / name).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if not args.validate and len(rows) == len(SEEDS):
        figure(rows)


if __name__ == "__main__":
    main()
