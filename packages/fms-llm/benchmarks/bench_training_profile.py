r"""Where a training step's time goes, ours and transformers', and the ceiling that puts on the ratio.

`bench_training.py` says how much faster our step is; this says how much faster it *could* be.
Both libraries run the same matrix multiplies (the same shapes, the same weights, the same
BLAS), the same SDPA kernels and the same fused AdamW: those kernels are the **shared floor**
of a step, which no rewrite of the model code can lower. Only the rest (norms, activations,
RoPE, residual adds, the loss, autograd's bookkeeping, Python dispatch) differs. So even if
all of our own work took no time at all, a step of ours could not be faster than its shared
floor, and the speed-up over transformers is bounded:

$$\text{speed-up} \le \text{ceiling} = \frac{T_\text{transformers}}{T_\text{ours, shared}} .$$

Times are self CPU times from `torch.profiler`, summed by kernel over a few steps, the two
models profiled alternately round by round (as in `_timing.py`); the ceiling is the median of
the rounds' ceilings with a 95% bootstrap interval. The profiler's own overhead inflates every
op a little, on both sides alike; the shared floor is measured in our step, so the ceiling is,
if anything, generous.

    python packages/fms-llm/benchmarks/bench_training_profile.py [--quick] [--size ...]
        [--threads N] [--rounds N] [--steps N] [--family gpt|llama|both]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from _timing import fmt_ci, positive_int, rounds_arg
from bench_training import SHAPES, _model_pair, _step_fn
from torch.profiler import ProfilerActivity, profile

from fms_llm.models import cpu_kernels
from fms_ml.experiment import bootstrap_ci

#: kernel -> category; every other op is "the rest".
CATEGORIES = {
    "aten::mm": "matmul",
    "aten::addmm": "matmul",
    "aten::addmm_": "matmul",
    "aten::bmm": "matmul",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward": "attention",
    "aten::_scaled_dot_product_efficient_attention": "attention",
    "aten::_scaled_dot_product_efficient_attention_backward": "attention",
    "aten::_scaled_dot_product_flash_attention": "attention",
    "aten::_scaled_dot_product_flash_attention_backward": "attention",
    "aten::_fused_adamw_": "optimiser",
    "aten::_log_softmax": "log-softmax",
    "aten::_log_softmax_backward_data": "log-softmax",
}
SHARED = ("matmul", "attention", "optimiser")  # same kernels, same shapes on both sides
ORDER = (*SHARED, "log-softmax", "rest")


def _profile(step: object, steps: int) -> dict[str, float]:
    """Milliseconds of self CPU time per step, by category."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()  # type: ignore[operator]
    out = dict.fromkeys(ORDER, 0.0)
    for event in prof.key_averages():
        out[CATEGORIES.get(event.key, "rest")] += event.self_cpu_time_total / 1e3 / steps
    return out


def bench(family: str, vocab: int, d: int, layers: int, heads: int, batch: int, seq: int,
          rounds: int, steps: int) -> dict[str, object]:  # fmt: skip
    ours, hf = _model_pair(family, vocab, d, layers, heads, seq)
    x = torch.randint(0, vocab, (batch, seq))
    y = torch.randint(0, vocab, (batch, seq))
    fns = {
        "ours": _step_fn(ours, x, y, hf=False, own_loss=True, bf16=False),
        "transformers": _step_fn(hf, x, y, hf=True, own_loss=True, bf16=False),
    }
    for fn in fns.values():  # warm-up: allocator, kernels' first calls
        fn()
        fn()
    profiles: dict[str, list[dict[str, float]]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            profiles[name].append(_profile(fn, steps))
    ceilings = np.array([
        sum(t.values()) / sum(o[c] for c in SHARED)
        for o, t in zip(profiles["ours"], profiles["transformers"], strict=True)
    ])  # fmt: skip
    ci = bootstrap_ci(ceilings, np.median, n_resamples=2000, random_state=0)
    speedups = np.array([
        sum(t.values()) / sum(o.values())
        for o, t in zip(profiles["ours"], profiles["transformers"], strict=True)
    ])  # fmt: skip
    med = {
        name: {c: float(np.median([p[c] for p in ps])) for c in ORDER}
        for name, ps in profiles.items()
    }
    return {
        "ms": med,
        "ceiling": (ci.estimate, ci.low, ci.high),
        "speedup": float(np.median(speedups)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the same as --size quick")
    parser.add_argument("--size", choices=sorted(SHAPES), default="quick", help="model shapes")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--rounds", type=rounds_arg, default=6, help="profiled rounds per shape")
    parser.add_argument(
        "--steps", type=positive_int, default=3, help="training steps per profiled round"
    )
    parser.add_argument(
        "--family", choices=("gpt", "llama", "both"), default="both", help="which models to run"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = SHAPES["quick" if args.quick else args.size]
    print(f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads, fp32, own loss")
    print(f"fms-llm CPU kernels (FMS_LLM_CPU_KERNELS): {cpu_kernels.status()}\n")
    results = []
    for family, vocab, d, layers, heads, batch, seq, _ in shapes:
        if args.family not in ("both", family):
            continue
        r = bench(family, vocab, d, layers, heads, batch, seq, args.rounds, args.steps)
        name = "GPT-2" if family == "gpt" else "Llama (GQA)"
        shares = {
            lib: sum(ms[c] for c in SHARED) / sum(ms.values())
            for lib, ms in r["ms"].items()  # type: ignore[attr-defined]
        }
        print(
            f"{name} {d} x {layers}: profiled speed-up {r['speedup']:.2f}x, "
            f"ceiling {fmt_ci(r['ceiling'])}",  # type: ignore[arg-type]
            flush=True,
        )
        results.append((name, d, layers, r, shares))
    # Two tables: the ratios first (narrow enough for the docs column), then the breakdown.
    print("\n| model | d x layers | profiled speed-up | ceiling [95% CI] | shared share, ours | "
          "shared share, transformers |")  # fmt: skip
    print("| --- " * 6 + "|")
    for name, d, layers, r, shares in results:
        print(
            f"| {name} | {d} x {layers} | {r['speedup']:.2f}x | "
            f"{fmt_ci(r['ceiling'])} | {shares['ours']:.0%} | {shares['transformers']:.0%} |"  # type: ignore[arg-type]
        )
    print("\nSelf CPU time by kernel, milliseconds per step (medians):\n")
    print("| model | library | " + " | ".join(ORDER) + " | step |")
    print("| --- " * (len(ORDER) + 3) + "|")
    for name, d, layers, r, _ in results:
        for lib, ms in r["ms"].items():  # type: ignore[attr-defined]
            print(
                f"| {name} {d}x{layers} | {lib} | "
                + " | ".join(f"{ms[c]:.1f}" for c in ORDER)
                + f" | {sum(ms.values()):.1f} |"
            )


if __name__ == "__main__":
    main()
