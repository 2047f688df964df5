"""Weight-only quantisation of a model trained here: memory, held-out perplexity and decoding speed
per format (float32, int8 per channel, int4 per group of 32, NF4 per block of 64).

A byte-level Llama (`--d` x `--layers`, `_story_lm.py`) is trained on the synthetic stories and
saved; each format is loaded with `fms_llm.quantize.load_quantized` (every linear layer, the head
included). Memory is the bytes of the linear layers' weights (codes and scales) against float32.
Perplexity is the exponential of the mean next-byte loss over `--docs` held-out stories; its
change is reported with a 95% bootstrap interval over the documents (paired: each document scored
by both models). Decoding is greedy, `--new` bytes, the formats interleaved round by round (`_timing.py`);
the ratio is float32 time / format time, the median over rounds of the per-round ratio of process
CPU times with a 95% bootstrap interval (>1: the format decodes faster).

    python packages/fms-llm/benchmarks/bench_quantized.py [--quick] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from _story_lm import doc_losses, story_bytes, train_llama
from _timing import fmt_ci, interleave, paired_ratio, positive_int, rounds_arg

from fms_llm.generate import generate
from fms_llm.models import load_pretrained
from fms_llm.quantize import linear_weight_bytes, load_quantized
from fms_ml.experiment import bootstrap_ci


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller model, fewer steps")
    parser.add_argument("--rounds", type=rounds_arg, default=4, help="timed decoding rounds")
    parser.add_argument("--new", type=positive_int, default=64, help="new tokens per round")
    parser.add_argument("--d", type=positive_int, default=192)
    parser.add_argument("--layers", type=positive_int, default=4)
    parser.add_argument("--steps", type=positive_int, default=150, help="training steps")
    parser.add_argument("--docs", type=positive_int, default=100, help="held-out stories")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.d, args.layers, args.steps, args.docs = 192, 1, 40, 20
    model, _ = train_llama(args.d, args.layers, story_bytes(2000), args.steps, seed=0)
    held_out = story_bytes(args.docs, start=10_000)
    prompt = torch.tensor([list(held_out[0][:32])])
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        models = {"float32": load_pretrained(tmp).eval()}
        for fmt in ("int8", "int4", "nf4"):
            models[fmt] = load_quantized(tmp, fmt)  # type: ignore[arg-type]
    losses = {name: doc_losses(m, held_out) for name, m in models.items()}
    times, _ = interleave(
        {n: (lambda m=m: generate(m, prompt, args.new, temperature=0)) for n, m in models.items()},
        args.rounds,
    )
    base = losses["float32"]
    print(f"torch {torch.__version__}, 1 thread, CPU; Llama {args.d} x {args.layers} trained "
          f"{args.steps} steps; {args.docs} held-out stories; {args.new} new tokens, "
          f"{args.rounds} rounds")  # fmt: skip
    print("| format | float32 bytes / bytes | perplexity | perplexity change [95% CI] | "
          "decode speed vs float32 [95% CI] | tok/s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for name, m in models.items():
        stored, f32 = linear_weight_bytes(m)
        ppl = float(np.exp(losses[name].mean()))
        if name == "float32":
            change = "(reference)"
            speed = "1.00x"
        else:
            # relative perplexity change exp(mean loss difference) - 1, bootstrapped over documents
            ci = bootstrap_ci(losses[name] - base, np.mean, n_resamples=2000, random_state=0)
            change = " ".join(
                (f"{100 * np.expm1(ci.estimate):+.2f}%",
                 f"[{100 * np.expm1(ci.low):+.2f}, {100 * np.expm1(ci.high):+.2f}]")
            )  # fmt: skip
            speed = fmt_ci(paired_ratio(times["float32"]["cpu"], times[name]["cpu"]))
        tps = args.new / min(times[name]["wall"])
        print(f"| {name} | {f32 / stored:.2f}x | {ppl:.4f} | {change} | {speed} | {tps:,.0f} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
