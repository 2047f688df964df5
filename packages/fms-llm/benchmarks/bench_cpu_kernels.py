"""The C kernels' worth: PyTorch eager, eager with fms-llm's C kernels, and `torch.compile`.

One process, one model per preset, three training-step functions over the same weights and the
same batch, run in interleaved rounds (eager, C kernels, compiled, eager, ...). Each speed-up is
computed within a round (eager's process CPU time / the contender's; above 1 is faster) and
summarised as the median over rounds with a 95% bootstrap interval (`_timing.py`). The compile
time is the wall time of the compiled function's first call (tracing and code generation), which
a run pays once per process.

The C kernels are switched on and off within the process through `FMS_LLM_CPU_KERNELS`, which
[fms_llm.models.cpu_kernels.supports][] reads at every call; `torch.compile` never calls them (it
fuses the same chains itself).

    python packages/fms-llm/benchmarks/bench_cpu_kernels.py --threads 2 --rounds 8
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from _timing import fmt_ci, interleave, paired_ratio, positive_int, rounds_arg

from fms_llm.models import GPT, GPTConfig, Llama, LlamaConfig, cpu_kernels

# The models compared: the `tiny` preset's GPT, a 2-layer Llama of the same width (the candidate
# default of experiments/preset_sweep.py) and the `small` preset's Llama (presets/*.toml).
MODELS: dict[str, tuple[type[GPT] | type[Llama], dict[str, int], int, int]] = {
    # name: (class, config, batch, sequence length)
    "gpt 4x128 (old tiny)": (GPT, {"n_layers": 4, "d_model": 128, "n_heads": 4,
                                   "vocab_size": 2048, "max_seq_len": 128}, 16, 128),
    "llama 2x128": (Llama, {"n_layers": 2, "d_model": 128, "n_heads": 4, "n_kv_heads": 2,
                            "vocab_size": 2048, "max_seq_len": 128}, 16, 128),
    "llama 6x256 (small)": (Llama, {"n_layers": 6, "d_model": 256, "n_heads": 8,
                                    "n_kv_heads": 4, "vocab_size": 4096, "max_seq_len": 256},
                            32, 256),
}  # fmt: skip


def _step_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, kernels: bool,
             compiled: bool, steps: int) -> Callable[[], float]:  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    forward = torch.compile(model) if compiled else model

    def run() -> float:
        os.environ["FMS_LLM_CPU_KERNELS"] = "auto" if kernels else "0"
        for _ in range(steps):
            loss = forward(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return float(loss)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--rounds", type=rounds_arg, default=8)
    parser.add_argument("--steps", type=positive_int, default=3, help="training steps a round")
    parser.add_argument("--only", choices=sorted(MODELS), action="append")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} threads, {args.rounds} rounds of {args.steps} steps")  # fmt: skip
    os.environ["FMS_LLM_CPU_KERNELS"] = "auto"
    print(f"C kernels: {cpu_kernels.status()}\n")
    print(
        "| model | C kernels (eager / C) | torch.compile (eager / compiled) | compile s "
        "| eager ms/step |"
    )
    print("|---|---|---|---|---|")
    for name in args.only or MODELS:
        cls, cfg, batch, seq = MODELS[name]
        torch.manual_seed(0)
        config = (GPTConfig if cls is GPT else LlamaConfig)(**cfg)
        base = cls(config)
        gen = torch.Generator().manual_seed(1)
        x = torch.randint(0, cfg["vocab_size"], (batch, seq), generator=gen)
        y = torch.randint(0, cfg["vocab_size"], (batch, seq), generator=gen)
        fns = {
            "eager": _step_fn(copy.deepcopy(base), x, y, False, False, args.steps),
            "c": _step_fn(copy.deepcopy(base), x, y, True, False, args.steps),
            "compiled": _step_fn(copy.deepcopy(base), x, y, False, True, args.steps),
        }
        t0 = time.perf_counter()
        fns["compiled"]()  # the first call traces and generates the code
        compile_s = time.perf_counter() - t0
        times, _ = interleave(fns, args.rounds, warmup=1)
        c = paired_ratio(times["eager"]["cpu"], times["c"]["cpu"])
        comp = paired_ratio(times["eager"]["cpu"], times["compiled"]["cpu"])
        eager_ms = 1000 * sorted(times["eager"]["wall"])[args.rounds // 2] / args.steps
        print(f"| {name} | {fmt_ci(c)} | {fmt_ci(comp)} | {compile_s:.1f} | {eager_ms:.0f} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
