"""Forward+backward time and activation memory of naive, tiled and PyTorch's fused attention.

Usage: `python packages/fms-transformer/benchmarks/bench_attention.py [--quick] [--causal]
[--threads N] [--json PATH] [--device cpu|cuda]`.

For each sequence length `L` (512 ... 8192; `--quick`: 512 ... 2048) and shape
`(batch=1, heads=2, L, head_dim=64)` float32 on CPU, one process measures three attentions:

- **naive**: [`fms_transformer.attention.scaled_dot_product_attention`][] (explicit scores);
- **tiled**: [`fms_transformer.tiled_attention.tiled_attention`][] (online softmax, recomputing
  backward), default tiles;
- **torch**: `torch.nn.functional.scaled_dot_product_attention` (PyTorch's fused CPU kernel, the
  reference).

Metrics:

- **time**: the minimum over `--reps` of one forward + backward (`out.backward(grad)`), the three
  attentions interleaved so that machine load hits them alike.
- **saved activations**: the bytes autograd keeps between forward and backward, measured with
  `torch.autograd.graph.saved_tensors_hooks`: every tensor saved for backward is recorded, bytes are
  counted once per distinct storage, and the storages of the inputs `q, k, v` are excluded (they
  exist anyway). This is the activation memory a model pays per attention layer during training.
- **peak RSS delta**: the process's resident memory, sampled every millisecond by a thread
  during forward + backward, minus its value before: includes transient buffers (the naive
  score matrix, the tiled tiles). Coarse (page granularity, allocator reuse), reported for honesty.
  On a GPU (`--device cuda`) it is the peak of `torch.cuda.max_memory_allocated` instead, exact,
  and the times end with a synchronisation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from fms_transformer.attention import scaled_dot_product_attention, tiled_attention

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, bool], torch.Tensor]

IMPLS: dict[str, Attention] = {
    "naive": lambda q, k, v, c: scaled_dot_product_attention(q, k, v, is_causal=c),
    "tiled": lambda q, k, v, c: tiled_attention(q, k, v, is_causal=c),
    "torch": lambda q, k, v, c: F.scaled_dot_product_attention(q, k, v, is_causal=c),
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def saved_activation_bytes(
    fn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool
) -> int:
    """Bytes of the distinct storages autograd saves for backward, excluding q, k, v's own."""
    inputs = {t.untyped_storage().data_ptr() for t in (q, k, v)}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in inputs:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(q, k, v, causal)
    total = sum(seen.values())
    del out
    return total


def peak_rss_delta(
    fn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool
) -> int:
    """Peak resident-memory increase during one forward + backward (1 ms sampling thread); on a
    GPU, the peak increase of the caching allocator's allocated bytes."""
    if q.is_cuda:
        torch.cuda.synchronize(q.device)
        base_gpu = torch.cuda.memory_allocated(q.device)
        torch.cuda.reset_peak_memory_stats(q.device)
        out = fn(q, k, v, causal)
        out.backward(torch.ones_like(out))
        torch.cuda.synchronize(q.device)
        q.grad = k.grad = v.grad = None
        return torch.cuda.max_memory_allocated(q.device) - base_gpu
    base = _rss_bytes()
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out = fn(q, k, v, causal)
    out.backward(torch.ones_like(out))
    done.set()
    thread.join()
    peak = max(peak, _rss_bytes())
    q.grad = k.grad = v.grad = None
    return peak - base


def fwd_bwd_seconds(
    fn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool
) -> float:
    if q.is_cuda:
        torch.cuda.synchronize(q.device)
    start = time.perf_counter()
    out = fn(q, k, v, causal)
    out.backward(torch.ones_like(out))
    if q.is_cuda:
        torch.cuda.synchronize(q.device)
    elapsed = time.perf_counter() - start
    q.grad = k.grad = v.grad = None
    return elapsed


def measure(
    lengths: list[int],
    *,
    heads: int,
    head_dim: int,
    causal: bool,
    reps: int,
    device: torch.device | None = None,
) -> list[dict[str, Any]]:
    rows = []
    for length in lengths:
        gen = torch.Generator().manual_seed(length)
        q, k, v = (
            torch.randn(1, heads, length, head_dim, generator=gen).to(device).requires_grad_()
            for _ in range(3)
        )
        row: dict[str, Any] = {"L": length}
        for name, fn in IMPLS.items():
            row[f"{name}_saved_bytes"] = saved_activation_bytes(fn, q, k, v, causal)
            row[f"{name}_rss_bytes"] = peak_rss_delta(fn, q, k, v, causal)
        best = dict.fromkeys(IMPLS, math.inf)
        for _ in range(reps):
            for name, fn in IMPLS.items():
                best[name] = min(best[name], fwd_bwd_seconds(fn, q, k, v, causal))
        for name in IMPLS:
            row[f"{name}_s"] = best[name]
        rows.append(row)
        print(
            f"  L={length}: " + ", ".join(f"{n} {best[n] * 1e3:.0f} ms" for n in IMPLS), flush=True
        )
    return rows


def markdown(rows: list[dict[str, Any]], memory: str = "peak RSS") -> str:
    """Two tables, the ratio first: time (torch ÷ ours, above 1 means ours is faster) and memory
    (naive ÷ tiled saved activations, how many times less the tiled kernel keeps)."""
    mib = 2.0**20
    lines = [
        "| L | speed-up vs torch: tiled | naive | tiled ms | naive ms | torch ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['L']} | {r['torch_s'] / r['tiled_s']:.2f}x | {r['torch_s'] / r['naive_s']:.2f}x "
            f"| {r['tiled_s'] * 1e3:.0f} | {r['naive_s'] * 1e3:.0f} | {r['torch_s'] * 1e3:.0f} |"
        )
    lines += [
        "",
        f"| L | saved: naive ÷ tiled | saved MiB tiled | naive | torch | {memory} MiB tiled "
        "| naive | torch |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['L']} | {r['naive_saved_bytes'] / max(r['tiled_saved_bytes'], 1):.0f}x "
            f"| {r['tiled_saved_bytes'] / mib:.2f} | {r['naive_saved_bytes'] / mib:.1f} "
            f"| {r['torch_saved_bytes'] / mib:.2f} | {r['tiled_rss_bytes'] / mib:.0f} "
            f"| {r['naive_rss_bytes'] / mib:.0f} | {r['torch_rss_bytes'] / mib:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="lengths 512..2048 only")
    parser.add_argument("--causal", action="store_true", help="causal attention")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--json", type=str, default=None, help="also write the rows as JSON")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    lengths = [512, 1024, 2048] if args.quick else [512, 1024, 2048, 4096, 8192]
    print(
        f"# attention fwd+bwd, batch 1, heads {args.heads}, head_dim {args.head_dim}, float32, "
        f"causal={args.causal}, {args.threads} thread(s), min of {args.reps}; "
        f"torch {torch.__version__}, "
        + (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine()
        )
    )
    rows = measure(
        lengths,
        heads=args.heads,
        head_dim=args.head_dim,
        causal=args.causal,
        reps=args.reps,
        device=device,
    )
    print(markdown(rows, "peak allocated" if device.type == "cuda" else "peak RSS"))
    if args.json:
        meta = {"causal": args.causal, "threads": args.threads, "heads": args.heads,
                "head_dim": args.head_dim, "torch": torch.__version__, "device": args.device}  # fmt: skip
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
