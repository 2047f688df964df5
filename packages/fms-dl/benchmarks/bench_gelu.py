"""GELU forward + backward: fms_dl's exact (erf) and tanh forms against PyTorch's, paired by round.

Each round runs the four contenders once, back to back (ours exact, ours tanh, torch exact,
torch tanh), on the same float32 tensor, one thread each; every ratio is computed within a
round and the rounds' ratios are summarised by their median with a 95% percentile-bootstrap
interval (`fms_ml.experiment.bootstrap_ci`). Times are the thread's CPU time
(`time.thread_time`), which other tenants of a shared machine do not inflate. Speed-up = the
reference's time / ours (above 1 is faster).

The exact form needs $\\operatorname{erf}$, which numpy lacks: fms_dl evaluates it with two
Chebyshev series (see `fms_dl.engine`). Before that it called `math.erf` element by element,
about 60x slower than the tanh form.

    python packages/fms-dl/benchmarks/bench_gelu.py [--rounds 30] [--size 1048576] [--quick]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

import fms_dl
from fms_ml.experiment import bootstrap_ci


def _step_ours(x: np.ndarray, approximate: str) -> Callable[[], None]:
    g = np.ones_like(x)

    def run() -> None:
        t = fms_dl.Tensor(x, requires_grad=True)
        t.gelu(approximate).backward(g)

    return run


def _step_torch(x: np.ndarray, approximate: str) -> Callable[[], None]:
    g = torch.ones(x.shape)
    base = torch.from_numpy(x)

    def run() -> None:
        t = base.clone().requires_grad_(True)
        torch.nn.functional.gelu(t, approximate=approximate).backward(g)

    return run


def _ratio(slow: list[float], fast: list[float]) -> str:
    ci = bootstrap_ci(np.asarray(slow) / np.asarray(fast), np.median, random_state=0)
    return f"{ci.estimate:.2f}x [{ci.low:.2f}, {ci.high:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--size", type=int, default=1 << 20, help="elements (float32)")
    parser.add_argument("--quick", action="store_true", help="12 rounds of 2**18 elements")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.size = 12, 1 << 18
    if args.rounds < 2:
        parser.error(
            f"--rounds must be at least 2 (an interval needs two ratios), got {args.rounds}"
        )
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        pass
    x = np.random.default_rng(0).standard_normal(args.size).astype(np.float32) * 3
    fns = {
        "ours exact": _step_ours(x, "none"),
        "ours tanh": _step_ours(x, "tanh"),
        "torch exact": _step_torch(x, "none"),
        "torch tanh": _step_torch(x, "tanh"),
    }
    for fn in fns.values():  # warm-up
        fn()
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            c0 = time.thread_time()
            fn()
            cpu[name].append(time.thread_time() - c0)
    ms = {k: 1e3 * float(np.median(v)) for k, v in cpu.items()}
    print(f"machine: {platform.processor() or platform.machine()}; 1 thread; {args.size} float32")
    print(
        f"GELU forward + backward, {args.rounds} paired rounds, CPU time, median [95% bootstrap CI]\n"
    )
    print("| comparison | speed-up | ours ms | reference ms |")
    print("|---|---:|---:|---:|")
    rows = [
        ("exact: torch / ours", "torch exact", "ours exact"),
        ("tanh: torch / ours", "torch tanh", "ours tanh"),
        ("ours: tanh / exact (the cost of erf)", "ours tanh", "ours exact"),
    ]
    for label, ref, ours in rows:
        print(f"| {label} | {_ratio(cpu[ref], cpu[ours])} | {ms[ours]:.2f} | {ms[ref]:.2f} |")


if __name__ == "__main__":
    main()
