"""Weight-only quantisation of a model trained here: memory, held-out perplexity and decoding speed
per format and scale choice (float32; int8 per channel; int4 per group of 32, 64 and 128; NF4 per
block of 64; scales in float32 or float16).

A byte-level Llama (`--d` x `--layers`, `_story_lm.py`) is trained on the synthetic stories and
saved; each format is loaded with `fms_llm.quantize.load_quantized` (every linear layer, the head
included). Memory is float32 bytes / stored bytes of the linear layers' weights (codes and
scales), and of the whole model (embedding and norms included, which stay float32). Perplexity
is the exponential of the mean next-byte loss over `--docs` held-out stories; its change is
reported with a 95% bootstrap interval over the documents (paired: each document scored by both
models). Decoding is greedy, `--new` bytes, every model interleaved round by round
(`_timing.py`); the speed ratio is float32 time / format time, the median over rounds of the
per-round ratio of process CPU times with a 95% bootstrap interval (>1: the format decodes
faster). The "vs dequantise-first" column compares, in the same rounds, the same codes run
through the previous forward (the whole weight dequantised at every call, then a float matmul):
what multiplying from the codes bought.

    python packages/fms-llm/benchmarks/bench_quantized.py [--quick] [--rounds N] [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F
from _story_lm import doc_losses, story_bytes, train_llama
from _timing import fmt_ci, interleave, paired_ratio, positive_int, rounds_arg
from torch import nn

from fms_llm.generate import generate
from fms_llm.models import load_pretrained
from fms_llm.quantize import QuantizedLinear, linear_weight_bytes, load_quantized
from fms_ml.experiment import bootstrap_ci

# name: (format, group size, scale dtype)
CHOICES: dict[str, tuple[str, int | None, torch.dtype]] = {
    "int8": ("int8", None, torch.float32),
    "int8 f16": ("int8", None, torch.float16),
    "int4 g32": ("int4", 32, torch.float32),
    "int4 g32 f16": ("int4", 32, torch.float16),
    "int4 g64 f16": ("int4", 64, torch.float16),
    "int4 g128": ("int4", 128, torch.float32),
    "int4 g128 f16": ("int4", 128, torch.float16),
    "nf4 g64": ("nf4", 64, torch.float32),
}
OLD_PATH = ("int8", "int4 g32")  # also timed through the dequantise-first forward


class _DequantizeFirst(QuantizedLinear):
    """The forward before the matmuls worked on the codes: dequantise all of W, then multiply."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), b)


def _dequantize_first(model: nn.Module) -> nn.Module:
    old = copy.deepcopy(model)
    for m in old.modules():
        if type(m) is QuantizedLinear:
            m.__class__ = _DequantizeFirst
    return old


def _model_bytes(model: nn.Module) -> int:
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller model, fewer steps")
    parser.add_argument("--rounds", type=rounds_arg, default=6, help="timed decoding rounds")
    parser.add_argument("--new", type=positive_int, default=64, help="new tokens per round")
    parser.add_argument(
        "--d",
        type=positive_int,
        default=384,
        help="width (384: its 1024-wide feed-forward lets every group size 32-128 divide every layer)",
    )
    parser.add_argument("--layers", type=positive_int, default=4)
    parser.add_argument("--steps", type=positive_int, default=150, help="training steps")
    parser.add_argument("--docs", type=positive_int, default=100, help="held-out stories")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.d, args.layers, args.steps, args.docs, args.new = 384, 1, 20, 10, 16
    model, _ = train_llama(args.d, args.layers, story_bytes(2000), args.steps, seed=0)
    held_out = story_bytes(args.docs, start=10_000)
    prompt = torch.tensor([list(held_out[0][:32])])
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        models: dict[str, nn.Module] = {"float32": load_pretrained(tmp).eval()}
        for name, (fmt, g, sdt) in CHOICES.items():
            models[name] = load_quantized(tmp, fmt, group_size=g, scale_dtype=sdt)  # type: ignore[arg-type]
    timed = dict(models)
    for name in OLD_PATH:
        timed[f"{name} (dequantise-first)"] = _dequantize_first(models[name])
    losses = {name: doc_losses(m, held_out) for name, m in models.items()}
    times, outs = interleave(
        {n: (lambda m=m: generate(m, prompt, args.new, temperature=0)) for n, m in timed.items()},
        args.rounds,
    )
    for name in OLD_PATH:  # the two forwards of the same codes decode the same tokens
        assert torch.equal(outs[name], outs[f"{name} (dequantise-first)"]), name
    base = losses["float32"]
    f32_model = _model_bytes(models["float32"])
    print(f"torch {torch.__version__}, 1 thread, CPU; Llama {args.d} x {args.layers} trained "
          f"{args.steps} steps; {args.docs} held-out stories; {args.new} new tokens, "
          f"{args.rounds} rounds; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print("| format | linear weights: float32 / format | whole model | perplexity | "
          "perplexity change [95% CI] | decode speed vs float32 [95% CI] | "
          "vs dequantise-first [95% CI] | tok/s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rows: list[dict[str, Any]] = []
    for name, m in models.items():
        stored, f32 = linear_weight_bytes(m)
        ppl = float(np.exp(losses[name].mean()))
        row: dict[str, Any] = {"format": name, "linear_ratio": f32 / stored,
                               "model_ratio": f32_model / _model_bytes(m), "perplexity": ppl}  # fmt: skip
        if name == "float32":
            change, speed, vs_old = "(reference)", "1.00x", ""
        else:
            # relative perplexity change exp(mean loss difference) - 1, bootstrapped over documents
            ci = bootstrap_ci(losses[name] - base, np.mean, n_resamples=2000, random_state=0)
            row["perplexity_change"] = [float(np.expm1(v)) for v in (ci.estimate, ci.low, ci.high)]
            change = " ".join(
                (f"{100 * np.expm1(ci.estimate):+.2f}%",
                 f"[{100 * np.expm1(ci.low):+.2f}, {100 * np.expm1(ci.high):+.2f}]")
            )  # fmt: skip
            r = paired_ratio(times["float32"]["cpu"], times[name]["cpu"])
            row["speed_vs_float32"] = list(r)
            speed = fmt_ci(r)
            vs_old = ""
            if name in OLD_PATH:
                r_old = paired_ratio(times[f"{name} (dequantise-first)"]["cpu"], times[name]["cpu"])
                row["speed_vs_dequantise_first"] = list(r_old)
                vs_old = fmt_ci(r_old)
        tps = args.new / float(np.median(times[name]["cpu"]))
        row["tokens_per_cpu_second"] = tps
        rows.append(row)
        print(f"| {name} | {row['linear_ratio']:.2f}x | {row['model_ratio']:.2f}x | {ppl:.4f} | "
              f"{change} | {speed} | {vs_old} | {tps:,.0f} |", flush=True)  # fmt: skip
    if args.json is not None:
        meta = {"torch": torch.__version__, "d": args.d, "layers": args.layers,
                "steps": args.steps, "docs": args.docs, "new": args.new, "rounds": args.rounds,
                "load_average": os.getloadavg()[0]}  # fmt: skip
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
