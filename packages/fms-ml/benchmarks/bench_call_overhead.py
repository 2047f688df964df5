"""What the per-call checks cost: `predict` and `transform` with and without the shared wrapper.

Every fms_ml prediction method is wrapped once per class (`BaseEstimator.__init_subclass__`): it
checks that the estimator is fitted, the DataFrame columns, the number of features, and that the
output is finite (the overflow guard). This measures that wrapper's price per call, the place it
matters most: predicting one row at a time, as a server does. Three callers, in paired,
interleaved rounds in this one process (single-threaded, timed in process CPU time):

* `wrapped`: `est.predict(X)`, what users call;
* `bare`: the same method without the wrapper (`type(est).predict.__wrapped__`);
* `sklearn`: scikit-learn's estimator of the same name, which runs its own checks.

Run from the repository root:

    .venv/bin/python packages/fms-ml/benchmarks/bench_call_overhead.py [--rounds 30]

It prints a markdown table: the wrapper's overhead in microseconds per call (wrapped - bare) and
as a share of the wrapped call, and the speed-up sklearn time / ours (above 1: ours is faster),
each with a 95% bootstrap interval over the rounds.
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import functools  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from sklearn import linear_model as sk_lm  # noqa: E402
from sklearn import neighbors as sk_nn  # noqa: E402
from sklearn import preprocessing as sk_pre  # noqa: E402
from sklearn import tree as sk_tree  # noqa: E402

from fms_ml import linear_model, neighbors, preprocessing, tree  # noqa: E402
from fms_ml.experiment import bootstrap_ci  # noqa: E402

CASES: list[tuple[str, Callable[[], Any], Callable[[], Any], str]] = [
    ("LinearRegression", linear_model.LinearRegression, sk_lm.LinearRegression, "predict"),
    ("LogisticRegression", linear_model.LogisticRegression, sk_lm.LogisticRegression, "predict"),
    ("StandardScaler", preprocessing.StandardScaler, sk_pre.StandardScaler, "transform"),
    (
        "DecisionTreeClassifier",
        tree.DecisionTreeClassifier,
        sk_tree.DecisionTreeClassifier,
        "predict",
    ),
    ("KNeighborsClassifier", neighbors.KNeighborsClassifier, sk_nn.KNeighborsClassifier, "predict"),
]


def _per_call(fn: Callable[[], Any], calls: int) -> float:
    # CPU time of this process: single-threaded work, not inflated by other jobs on the machine
    t0 = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - t0) / calls * 1e6  # microseconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=200, help="calls per timing")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 1000])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 10))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    print(f"numpy {np.__version__}, scikit-learn {sklearn.__version__}, {platform.processor()}")
    print(f"{args.rounds} paired rounds of {args.calls} calls; 95% bootstrap intervals\n")
    print(
        "| estimator | method | rows | wrapper overhead (µs/call) | share of the call | "
        "speed-up sklearn/ours | ours (µs/call) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, ours_cls, theirs_cls, method in CASES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = ours_cls().fit(X, y)
            theirs = theirs_cls().fit(X, y)
        bare_method = getattr(type(ours), method).__wrapped__
        for rows in args.rows:
            Q = X[:rows]
            callers = {
                "wrapped": functools.partial(getattr(ours, method), Q),
                "bare": functools.partial(bare_method, ours, Q),
                "sklearn": functools.partial(getattr(theirs, method), Q),
            }
            times: dict[str, list[float]] = {k: [] for k in callers}
            for _ in range(args.rounds):
                for key in rng.permutation(list(callers)):  # interleaved, order shuffled
                    times[str(key)].append(_per_call(callers[str(key)], args.calls))
            w, b, s = (np.array(times[k]) for k in ("wrapped", "bare", "sklearn"))
            over = bootstrap_ci(w - b)
            share = bootstrap_ci((w - b) / w)
            speed = bootstrap_ci(s / w)
            print(
                f"| {name} | {method} | {rows} | {over.estimate:.1f} [{over.low:.1f}, "
                f"{over.high:.1f}] | {share.estimate:.0%} [{share.low:.0%}, {share.high:.0%}] | "
                f"{speed.estimate:.2f} [{speed.low:.2f}, {speed.high:.2f}] | {np.median(w):.1f} |"
            )


if __name__ == "__main__":
    main()
