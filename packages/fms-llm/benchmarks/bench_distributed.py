"""Training throughput on 1 process against 2 (DDP, FSDP, tensor parallelism), same global batch.

Each round runs every contender once, interleaved (1 process, then each 2-process strategy), as
processes started by [spawn][fms_llm.distributed.launch.spawn]; each rank times its own training
loop after warm-up steps (process start-up, the model's construction and the wrapping are not
counted) and the slowest rank's wall time is the step time. Speed-up = one-process time /
2-process time, paired by round, median with a 95% bootstrap interval. Tokens/s counts the
global batch.

On this project's CPU machine (2 cores shared with other engineers) 2 processes of 1 thread
each can at best double the throughput of 1 process of 1 thread, and only if both cores are free;
the rank CPU time is reported next to the wall time so that a busy machine shows as such.
On CUDA the backend is NCCL and each rank drives its own GPU: with fewer than 2 GPUs the
distributed contenders run on 1 process (the NCCL process group and the wrapping, without a peer),
which measures the overhead of the distributed path rather than a speed-up.

    uv run python packages/fms-llm/benchmarks/bench_distributed.py              # CPU, gloo
    python packages/fms-llm/benchmarks/bench_distributed.py --device cuda --size gpt2-small
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import fmt_ci, paired_ratio, positive_int

from fms_llm.distributed import DistEnv, count_parameters, make_strategy, spawn
from fms_llm.models.gpt import GPT, GPTConfig, Llama, LlamaConfig, ModelConfig

SIZES: dict[str, tuple[ModelConfig, int, int]] = {
    # config, global batch, sequence length
    "tiny": (LlamaConfig(vocab_size=2048, n_layers=4, d_model=128, n_heads=4, n_kv_heads=2), 8, 128),
    "small": (LlamaConfig(vocab_size=8192, n_layers=6, d_model=256, n_heads=8, n_kv_heads=4), 8, 256),
    "gpt2-small": (GPTConfig(), 16, 1024),
}  # fmt: skip


def _rank(
    env: DistEnv, strategy_name: str, size: str, steps: int, warmup: int, threads: int
) -> dict[str, float]:
    """One rank's timed training loop."""
    torch.set_num_threads(threads)
    config, batch, seq = SIZES[size]
    torch.manual_seed(0)
    strategy = make_strategy(strategy_name, env)
    model = (Llama if isinstance(config, LlamaConfig) else GPT)(config).to(env.device)
    wrapped = strategy.wrap(model)
    opt = torch.optim.AdamW(strategy.unwrap(wrapped).parameters(), lr=1e-4)
    rows = batch // strategy.data_world_size
    g = torch.Generator().manual_seed(env.rank)
    data = torch.randint(0, config.vocab_size, (rows, seq + 1), generator=g).to(env.device)
    autocast = torch.autocast("cuda", torch.bfloat16) if env.device.type == "cuda" else None

    def step() -> None:
        if autocast is not None:
            with autocast:
                loss = wrapped(data[:, :-1], data[:, 1:])
        else:
            loss = wrapped(data[:, :-1], data[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if env.device.type == "cuda":
        torch.cuda.synchronize(env.device)
        torch.cuda.reset_peak_memory_stats(env.device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    if env.device.type == "cuda":
        torch.cuda.synchronize(env.device)
    out = {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}
    if env.device.type == "cuda":
        out["peak_bytes"] = float(torch.cuda.max_memory_allocated(env.device))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--strategies", nargs="+", default=["ddp", "fsdp", "tp"])
    parser.add_argument("--rounds", type=positive_int, default=5)
    parser.add_argument("--steps", type=positive_int, default=5, help="timed steps a round")
    parser.add_argument("--warmup", type=positive_int, default=2)
    parser.add_argument("--threads", type=positive_int, default=1, help="threads a rank")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # import torch._dynamo once, here

    backend = "nccl" if args.device == "cuda" else "gloo"
    world = 2 if args.device == "cpu" else min(2, torch.cuda.device_count())
    config, batch, seq = SIZES[args.size]
    tokens = args.steps * batch * seq
    runs = {"1 process": ("none", 1)} | {f"{world} x {s}": (s, world) for s in args.strategies}
    times: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in runs}
    peaks: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, (strategy, w) in runs.items():
            ranks = spawn(
                _rank, w, strategy, args.size, args.steps, args.warmup, args.threads,
                backend=backend, timeout_s=600, threads=args.threads,
                start_method="fork" if args.device == "cpu" else "spawn",  # CUDA cannot fork
            )  # fmt: skip
            times[name]["wall"].append(max(r["wall"] for r in ranks))
            times[name]["cpu"].append(sum(r["cpu"] for r in ranks))
            if "peak_bytes" in ranks[0]:
                peaks[name] = max(r["peak_bytes"] for r in ranks)

    print(
        f"# distributed training throughput: {args.size} ({type(config).__name__}, "
        f"{count_parameters(config).total / 1e6:.1f}M parameters, global batch {batch} x {seq}), "
        f"{args.device} ({backend}), {args.threads} thread(s) a "
        f"rank, {args.rounds} rounds of {args.steps} steps\n"
    )
    print("| contender | speed-up vs 1 process (95% CI) | tokens/s | rank CPU s / wall s |")
    print("|---|---|---|---|")
    base = times["1 process"]["wall"]
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": {}}
    for name, t in times.items():
        ratio = paired_ratio(base, t["wall"])
        tps = tokens / float(np.median(t["wall"]))
        load = float(np.median(np.asarray(t["cpu"]) / np.asarray(t["wall"])))
        print(f"| {name} | {fmt_ci(ratio)} | {tps:,.0f} | {load:.2f} |")
        results["rows"][name] = {
            "speedup": ratio, "tokens_per_s": tps, "cpu_over_wall": load,
            "peak_bytes": peaks.get(name),
        }  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
