"""Training step of an MLP and of a small CNN: the fms_dl numpy engine against PyTorch on CPU.

Both engines get the same shapes, the same float32 data and the same weights, run in one process
(timed alternately, step by step, so both see the same load) with the same number of BLAS/intra-op threads (`--threads`, default 1), and do the same step:
forward, cross-entropy, backward, SGD with momentum. We report the median step time over
`--reps` timed steps after warm-up, and the speed-up torch / ours (above 1.0 is faster; 1.0 = parity).

    python packages/fms-dl/benchmarks/bench_engine.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

import fms_dl
from fms_dl import nn, optim
from fms_dl.nn import functional as F


def _limit_threads(n: int) -> str:
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
        return f"{n} (numpy via threadpoolctl, torch via set_num_threads)"
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return f"torch {n}; numpy BLAS default (threadpoolctl not installed)"


def _interleaved_median_ms(
    a: Callable[[], None], b: Callable[[], None], warmup: int, reps: int
) -> tuple[float, float, float, float]:
    """Median wall and CPU ms per call of `a` and `b`, timed alternately (same machine load).

    CPU time (`time.thread_time`, valid because both engines run on this one thread) counts the
    work done and not the time spent waiting for a core, so it is the steadier measure on a
    shared machine; wall time is what a user waits.
    """
    for _ in range(warmup):
        a()
        b()
    wall: dict[int, list[float]] = {0: [], 1: []}
    cpu: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(reps):
        for i, fn in enumerate((a, b)):
            c0, t0 = time.thread_time(), time.perf_counter()
            fn()
            wall[i].append(time.perf_counter() - t0)
            cpu[i].append(time.thread_time() - c0)
    med = [1e3 * statistics.median(x) for x in (wall[0], wall[1], cpu[0], cpu[1])]
    return med[0], med[1], med[2], med[3]


def _mlp(lib: str) -> object:
    if lib == "ours":
        return nn.Sequential(
            nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)
        )
    return torch.nn.Sequential(
        torch.nn.Linear(784, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )


def _cnn(lib: str) -> object:
    if lib == "ours":
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
        )  # fmt: skip
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 7 * 7, 10),
    )  # fmt: skip


def bench(
    name: str, build: Callable[[str], object], x: np.ndarray, y: np.ndarray, warmup: int, reps: int
) -> tuple[float, float]:
    """Median wall and CPU ms per training step, ours then torch, with identical weights and data."""
    fms_dl.manual_seed(0)
    ours = build("ours")
    theirs = build("torch")
    assert isinstance(ours, nn.Module)
    assert isinstance(theirs, torch.nn.Module)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    opt_o = optim.SGD(ours.parameters(), lr=0.01, momentum=0.9)
    opt_t = torch.optim.SGD(theirs.parameters(), lr=0.01, momentum=0.9)
    xo, yo = fms_dl.Tensor(x), fms_dl.Tensor(y)
    xt, yt = torch.tensor(x), torch.tensor(y)

    def step_ours() -> None:
        opt_o.zero_grad()
        F.cross_entropy(ours(xo), yo).backward()
        opt_o.step()

    def step_torch() -> None:
        opt_t.zero_grad()
        torch.nn.functional.cross_entropy(theirs(xt), yt).backward()
        opt_t.step()

    # sanity: the first losses agree, so both really do the same work
    with fms_dl.no_grad(), torch.no_grad():
        lo = float(F.cross_entropy(ours(xo), yo).item())
        lt = float(torch.nn.functional.cross_entropy(theirs(xt), yt))
    assert abs(lo - lt) < 1e-4, (name, lo, lt)
    return _interleaved_median_ms(step_ours, step_torch, warmup, reps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    threads = _limit_threads(args.threads)
    warmup, reps = (3, 10) if args.quick else (10, 50)
    rng = np.random.default_rng(0)
    rows = []
    for batch in (32, 128):
        x = rng.standard_normal((batch, 784)).astype(np.float32)
        y = rng.integers(0, 10, batch)
        rows.append(
            (f"MLP 784-512-256-10, batch {batch}", *bench("mlp", _mlp, x, y, warmup, reps), 1.5)
        )
    for batch in (32, 64):
        x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
        y = rng.integers(0, 10, batch)
        rows.append(
            (
                f"CNN 2x(conv3x3+ReLU+maxpool) 16/32 ch, 28x28, batch {batch}",
                *bench("cnn", _cnn, x, y, warmup, reps),
                3.0,
            )
        )
    print(f"machine: {platform.processor() or platform.machine()}; threads: {threads}")
    print(
        f"numpy {np.__version__}, torch {torch.__version__}, fms_dl {fms_dl.__version__}; median of {reps} steps\n"
    )
    print(
        "| training step (float32, SGD momentum) | speed-up (CPU) | speed-up (wall) | goal | fms_dl ms (CPU) | torch ms (CPU) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, w_o, w_t, c_o, c_t, goal in rows:
        ok = "met" if c_t / c_o >= 1 / goal else "missed"
        print(
            f"| {name} | {c_t / c_o:.2f}x | {w_t / w_o:.2f}x | >= {1 / goal:.2f}x ({ok}) | "
            f"{c_o:.2f} | {c_t:.2f} |"
        )
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
