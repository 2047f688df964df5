"""Fit/predict time and held-out score of every fms_ml estimator against scikit-learn.

Run from the repository root:

    .venv/bin/python packages/fms-ml/benchmarks/bench_estimators.py [--quick] [--only NAME ...]

Both libraries run in this one process, single-threaded (BLAS threads pinned to 1 before numpy
loads, scikit-learn's `n_jobs` left at its default of 1), on the same synthetic data, with the same
hyper-parameters. Each timing is the best of `--repeat` runs (one run when it takes over 1 s),
measured in CPU time of this process (`time.process_time`): everything here is single-threaded,
so CPU time equals the work done and is not inflated by other jobs on a shared machine. Prints a markdown table: speed-ups
are scikit-learn's time / ours (above 1 means fms_ml is faster), the speed-up columns first.
"""

from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from sklearn import cluster as sk_cluster  # noqa: E402
from sklearn import datasets as sk_data  # noqa: E402
from sklearn import decomposition as sk_dec  # noqa: E402
from sklearn import ensemble as sk_ens  # noqa: E402
from sklearn import linear_model as sk_lm  # noqa: E402
from sklearn import metrics as sk_metrics  # noqa: E402
from sklearn import mixture as sk_mix  # noqa: E402
from sklearn import naive_bayes as sk_nb  # noqa: E402
from sklearn import neighbors as sk_nn  # noqa: E402
from sklearn import svm as sk_svm  # noqa: E402
from sklearn import tree as sk_tree  # noqa: E402

from fms_ml import (  # noqa: E402
    cluster,
    decomposition,
    ensemble,
    linear_model,
    mixture,
    naive_bayes,
    neighbors,
    svm,
    tree,
)


@dataclass
class Case:
    name: str
    task: str  # "clf", "reg", "cluster", "decomp"
    ours: Callable[[], Any]
    ref: Callable[[], Any]
    sizes: tuple[int, ...]
    quick_sizes: tuple[int, ...]


def _data(task: str, n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    n_total = int(n * 1.25)
    if task == "clf":
        X, y = sk_data.make_classification(
            n_total, 20, n_informative=10, n_classes=3, random_state=seed
        )
    elif task == "reg":
        X, y = sk_data.make_regression(n_total, 20, n_informative=10, noise=10.0, random_state=seed)
    else:
        X, y = sk_data.make_blobs(n_total, 10, centers=8, random_state=seed)
    X = (X - X.mean(0)) / X.std(0)
    return X[:n], y[:n], X[n:], y[n:]


def _score(task: str, model: Any, Xte: np.ndarray, yte: np.ndarray, Xtr: np.ndarray) -> float:
    if task == "clf":
        return float(sk_metrics.accuracy_score(yte, model.predict(Xte)))
    if task == "reg":
        return float(sk_metrics.r2_score(yte, model.predict(Xte)))
    if task == "cluster":
        labels = model.predict(Xte) if hasattr(model, "predict") else model.labels_
        truth = yte if hasattr(model, "predict") else None
        if truth is None:
            return float(len(set(labels.tolist())))
        return float(sk_metrics.adjusted_rand_score(truth, labels))
    Z = model.transform(Xte)
    return float(np.var(Z, axis=0).sum() / np.var(Xte, axis=0).sum())  # variance kept on held-out


def _time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t)
        if best > 1.0:  # long runs are timed once: their noise is small relative to them
            break
    return best, out


def cases() -> list[Case]:
    L, M, S = (1_000, 10_000, 100_000), (1_000, 10_000), (1_000, 5_000)
    return [
        Case(
            "LinearRegression", "reg", linear_model.LinearRegression, sk_lm.LinearRegression, L, M
        ),
        Case("Ridge", "reg", lambda: linear_model.Ridge(1.0), lambda: sk_lm.Ridge(1.0), L, M),
        Case("Lasso", "reg", lambda: linear_model.Lasso(0.1), lambda: sk_lm.Lasso(alpha=0.1), L, M),
        Case(
            "ElasticNet",
            "reg",
            lambda: linear_model.ElasticNet(0.1),
            lambda: sk_lm.ElasticNet(alpha=0.1),
            L,
            M,
        ),
        Case(
            "LogisticRegression",
            "clf",
            linear_model.LogisticRegression,
            sk_lm.LogisticRegression,
            L,
            M,
        ),
        Case(
            "SGDClassifier",
            "clf",
            lambda: linear_model.SGDClassifier(random_state=0),
            lambda: sk_lm.SGDClassifier(random_state=0),
            L,
            M,
        ),
        Case(
            "SGDRegressor",
            "reg",
            lambda: linear_model.SGDRegressor(random_state=0),
            lambda: sk_lm.SGDRegressor(random_state=0),
            L,
            M,
        ),
        Case("LinearSVC", "clf", svm.LinearSVC, sk_svm.LinearSVC, L, M),
        Case("SVC (rbf)", "clf", svm.SVC, sk_svm.SVC, S, (1_000, 2_000)),
        Case(
            "KNeighborsClassifier",
            "clf",
            neighbors.KNeighborsClassifier,
            sk_nn.KNeighborsClassifier,
            L,
            M,
        ),
        Case(
            "KNeighborsRegressor",
            "reg",
            neighbors.KNeighborsRegressor,
            sk_nn.KNeighborsRegressor,
            L,
            M,
        ),
        Case("GaussianNB", "clf", naive_bayes.GaussianNB, sk_nb.GaussianNB, L, M),
        Case(
            "DecisionTreeClassifier",
            "clf",
            tree.DecisionTreeClassifier,
            lambda: sk_tree.DecisionTreeClassifier(random_state=0),
            L,
            M,
        ),
        Case(
            "DecisionTreeRegressor",
            "reg",
            tree.DecisionTreeRegressor,
            lambda: sk_tree.DecisionTreeRegressor(random_state=0),
            L,
            M,
        ),
        Case(
            "RandomForestClassifier",
            "clf",
            lambda: ensemble.RandomForestClassifier(100, random_state=0),
            lambda: sk_ens.RandomForestClassifier(100, random_state=0),
            M,
            (1_000,),
        ),
        Case(
            "RandomForestRegressor",
            "reg",
            lambda: ensemble.RandomForestRegressor(100, random_state=0),
            lambda: sk_ens.RandomForestRegressor(100, random_state=0),
            M,
            (1_000,),
        ),
        Case(
            "GradientBoostingClassifier",
            "clf",
            ensemble.GradientBoostingClassifier,
            lambda: sk_ens.GradientBoostingClassifier(random_state=0),
            M,
            (1_000,),
        ),
        Case(
            "GradientBoostingRegressor",
            "reg",
            ensemble.GradientBoostingRegressor,
            lambda: sk_ens.GradientBoostingRegressor(random_state=0),
            M,
            (1_000,),
        ),
        Case(
            "KMeans",
            "cluster",
            lambda: cluster.KMeans(8, random_state=0),
            lambda: sk_cluster.KMeans(8, random_state=0),
            L,
            M,
        ),
        Case(
            "DBSCAN",
            "cluster",
            lambda: cluster.DBSCAN(2.0, min_samples=5),
            lambda: sk_cluster.DBSCAN(eps=2.0, min_samples=5),
            M,
            (1_000, 5_000),
        ),
        Case(
            "GaussianMixture (full)",
            "cluster",
            lambda: mixture.GaussianMixture(8, random_state=0),
            lambda: sk_mix.GaussianMixture(8, random_state=0),
            L,
            M,
        ),
        Case(
            "PCA",
            "decomp",
            lambda: decomposition.PCA(5),
            lambda: sk_dec.PCA(5, svd_solver="full"),
            L,
            M,
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="smaller sizes (minutes, not tens of minutes)"
    )
    ap.add_argument("--repeat", type=int, default=None, help="timing repeats (default 3, quick 1)")
    ap.add_argument("--only", nargs="*", default=None, help="estimator names to run")
    args = ap.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    print(
        f"numpy {np.__version__}, scikit-learn {sklearn.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}\n"
    )
    print("| estimator | n | fit | predict | fit s, ours | score, ours | score, sklearn |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    speedups: list[float] = []
    worst: dict[str, float] = {}
    for case in cases():
        if args.only and case.name not in args.only:
            continue
        for n in case.quick_sizes if args.quick else case.sizes:
            Xtr, ytr, Xte, yte = _data(case.task, n)
            fit_args = (Xtr,) if case.task in ("cluster", "decomp") else (Xtr, ytr)
            t_o, m_o = _time(
                lambda case=case, fit_args=fit_args: case.ours().fit(*fit_args), repeat
            )
            t_r, m_r = _time(lambda case=case, fit_args=fit_args: case.ref().fit(*fit_args), repeat)
            if case.name == "DBSCAN":
                p_o = p_r = float("nan")
                s_o, s_r = (
                    _score("cluster", m_o, Xte, yte, Xtr),
                    _score("cluster", m_r, Xte, yte, Xtr),
                )
            else:
                pred = "transform" if case.task == "decomp" else "predict"
                p_o, _ = _time(lambda m_o=m_o, pred=pred, Xte=Xte: getattr(m_o, pred)(Xte), repeat)
                p_r, _ = _time(lambda m_r=m_r, pred=pred, Xte=Xte: getattr(m_r, pred)(Xte), repeat)
                s_o, s_r = (
                    _score(case.task, m_o, Xte, yte, Xtr),
                    _score(case.task, m_r, Xte, yte, Xtr),
                )
            speedup = t_r / t_o
            speedups.append(speedup)
            worst[case.name] = min(worst.get(case.name, np.inf), speedup)
            pr = "n/a" if np.isnan(p_o) else f"{p_r / p_o:.2f}x"
            print(
                f"| {case.name} | {n:,} | {speedup:.2f}x | {pr} | {t_o:.4f} | {s_o:.4f} | {s_r:.4f} |",
                flush=True,
            )
    if speedups:
        print(
            f"\nmedian fit speed-up {statistics.median(speedups):.2f}x over {len(speedups)} rows; "
            f"slowest: {min(worst, key=worst.__getitem__)} at {min(worst.values()):.2f}x"
        )
        slow = sorted((k for k, v in worst.items() if v < 1 / 3), key=lambda k: worst[k])
        print(
            "more than 3x slower: "
            + (", ".join(f"{k} ({worst[k]:.2f}x)" for k in slow) if slow else "none")
        )


if __name__ == "__main__":
    main()
