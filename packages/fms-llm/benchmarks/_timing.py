"""Timing for the benchmarks: contenders interleaved round by round, ratios paired by round.

On a shared machine the speed of everything drifts by tens of percent from one minute to the
next (other tenants, frequency changes). Two habits keep the comparison honest:

1. **Interleave.** Each round runs every contender once, back to back (A, B, C, A, B, C, ...),
   so that a slow minute slows all of them alike.
2. **Pair.** The ratio between two contenders is computed within each round, and the rounds'
   ratios are summarised by their median with a 95% percentile-bootstrap interval
   ([fms_ml.experiment.bootstrap_ci][]). The interval says how sure the ratio is; a goal counts
   as met when the whole interval clears it.

Times are process CPU time (`time.process_time`), which time-sharing with other processes on
the same cores does not inflate, and wall time for reference.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fms_llm.cli import _positive_int as positive_int  # the CLI's own count type
from fms_ml.experiment import bootstrap_ci

__all__ = ["Timings", "fmt_ci", "interleave", "paired_ratio", "positive_int", "rounds_arg"]

Timings = dict[str, dict[str, list[float]]]


def interleave(
    fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1
) -> tuple[Timings, dict[str, Any]]:
    """Run each function `warmup` times, then `rounds` interleaved rounds.

    Returns:
        `{name: {"wall": [...], "cpu": [...]}}` in seconds, one entry per round, and each
        function's last output.
    """
    outs = {}
    for _ in range(warmup):
        for name, fn in fns.items():
            outs[name] = fn()
    times: Timings = {name: {"wall": [], "cpu": []} for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            outs[name] = fn()
            times[name]["wall"].append(time.perf_counter() - t0)
            times[name]["cpu"].append(time.process_time() - c0)
    return times, outs


def paired_ratio(slow: list[float], fast: list[float]) -> tuple[float, float, float]:
    """Median over rounds of `slow[i] / fast[i]` (a speed-up of `fast`), and its 95% bootstrap
    interval: `(median, low, high)`."""
    ratios = np.asarray(slow) / np.asarray(fast)
    ci = bootstrap_ci(ratios, np.median, n_resamples=2000, random_state=0)
    return ci.estimate, ci.low, ci.high


def fmt_ci(r: tuple[float, float, float]) -> str:
    """`1.23x [1.10, 1.31]`."""
    return f"{r[0]:.2f}x [{r[1]:.2f}, {r[2]:.2f}]"


def rounds_arg(text: str) -> int:
    """An argparse type: a number of rounds, at least 2 (a bootstrap interval needs two ratios)."""
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(
            f"must be at least 2, got {value}: the interval over rounds needs two of them"
        )
    return value
