"""Benchmark: one AdamW step, fms_dl.torch.optim.AdamW against torch.optim.AdamW(foreach=True).

The parameter set has the shapes of a GPT-style decoder (token and position embeddings, per
layer: attention in/out projections, MLP up/down projections, two LayerNorms; a final
LayerNorm), so the mix of a few large and many small tensors is realistic. Gradients are fixed
random tensors; each timed call is one `optimizer.step()`. Ours and torch's alternate in the
same process. Reported: the median process CPU time per step on CPU (wall time on CUDA), which
the other tenants of a shared machine disturb least, and the best wall time; speed-ups are
`torch.optim.AdamW(foreach=True)`'s time / the candidate's (above 1 is faster).

    python packages/fms-dl/benchmarks/bench_adamw.py [--quick] [--device cpu|cuda] [--threads N]

Default: 8 layers, d_model 512, vocab 32000 (~42M parameters). `--quick`: 4 layers, d_model
256, vocab 8000 (~5M parameters) and fewer repeats.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from fms_dl.torch.optim import AdamW


def gpt_shapes(layers: int, d: int, vocab: int, ctx: int = 1024) -> list[tuple[int, ...]]:
    """Parameter shapes of a GPT-2-style decoder (biases and LayerNorm included)."""
    shapes: list[tuple[int, ...]] = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,)]  # ln1, attention
        shapes += [(d,), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)]  # ln2, MLP
    shapes += [(d,), (d,)]
    return shapes


def make_params(shapes: list[tuple[int, ...]], device: torch.device) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    params = []
    for s in shapes:
        p = torch.randn(s, generator=g).mul_(0.02).to(device).requires_grad_()
        p.grad = torch.randn(s, generator=g).to(device)
        params.append(p)
    return params


def timer(step: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call; CPU time is what a shared machine's
    other tenants disturb least (on CUDA only the wall time is meaningful)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model, few repeats")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    layers, d, vocab = (4, 256, 8000) if args.quick else (8, 512, 32000)
    repeats = args.repeats or (15 if args.quick else 25)
    shapes = gpt_shapes(layers, d, vocab)

    candidates: dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]] = {
        "torch.optim.AdamW(foreach=True)": lambda p: torch.optim.AdamW(
            p, lr=1e-3, weight_decay=0.1, foreach=True
        ),
        "fms_dl AdamW (foreach)": lambda p: AdamW(p, lr=1e-3, weight_decay=0.1),
        "fms_dl AdamW (per-parameter loop)": lambda p: AdamW(
            p, lr=1e-3, weight_decay=0.1, foreach=False
        ),
        "torch.optim.AdamW(foreach=False)": lambda p: torch.optim.AdamW(
            p, lr=1e-3, weight_decay=0.1, foreach=False
        ),
        "torch.optim.AdamW(fused=True)": lambda p: torch.optim.AdamW(
            p, lr=1e-3, weight_decay=0.1, fused=True
        ),
    }
    optimizers = {}
    for name, make in candidates.items():
        params = make_params(shapes, device)
        try:
            opt = make(params)
            opt.step()  # warm-up: allocates the state
        except RuntimeError as exc:  # e.g. no fused kernel for this device
            print(f"skipping {name}: {exc}")
            continue
        optimizers[name] = opt
    n_params = sum(p.numel() for p in params)

    walls: dict[str, list[float]] = {name: [] for name in optimizers}
    cpus: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(repeats):  # interleave so that machine noise hits every candidate alike
        for name, opt in optimizers.items():
            wall, cpu = timer(opt.step, device)
            walls[name].append(wall)
            cpus[name].append(cpu)
    # on CPU the speed-up uses process CPU time; on CUDA, wall time
    times = cpus if device.type == "cpu" else walls
    ref_name = "torch.optim.AdamW(foreach=True)"
    ref = statistics.median(times[ref_name])
    ref_wall = min(walls[ref_name])
    print(
        f"AdamW step, {n_params / 1e6:.1f}M parameters in {len(shapes)} tensors "
        f"({layers} layers, d_model {d}, vocab {vocab}), device {device}, "
        f"median of {repeats}; torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads\n"
    )
    kind = "CPU" if device.type == "cpu" else "wall"
    print(
        f"| implementation | speed-up | median {kind} ms / step | speed-up (best wall) | best wall ms / step |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, ts in times.items():
        med, best = statistics.median(ts), min(walls[name])
        print(
            f"| {name} | {ref / med:.2f}x | {1e3 * med:.1f} | {ref_wall / best:.2f}x | {1e3 * best:.1f} |"
        )


if __name__ == "__main__":
    main()
