"""Six classifiers on breast cancer over 20 random splits: intervals, paired tests, Holm.

Run from the repository root:

    .venv/bin/python packages/fms-ml/experiments/model_comparison.py [--seeds 20]

Each seed draws a stratified 70/30 split; every model is fitted on the same training part and
scored on the same test part, so the comparisons are paired. Reported per model: mean accuracy
with a 95% t-interval over seeds. Each model is then compared with the best one by Nadeau and
Bengio's corrected resampled t-test (the splits share training data, so the naive t-test is too
optimistic), with Holm's correction over the five comparisons, and Hedges' g of the paired
differences as an effect size. Writes `docs/figures/fms-ml/model_comparison.png` and `.json`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_breast_cancer

from fms_ml.ensemble import GradientBoostingClassifier, RandomForestClassifier
from fms_ml.experiment import (
    Experiment,
    cohens_d,
    corrected_resampled_ttest,
    holm,
    paired_ttest,
    run_seeds,
    t_ci,
)
from fms_ml.linear_model import LogisticRegression
from fms_ml.model_selection import train_test_split
from fms_ml.naive_bayes import GaussianNB
from fms_ml.neighbors import KNeighborsClassifier
from fms_ml.pipeline import make_pipeline
from fms_ml.preprocessing import StandardScaler
from fms_ml.svm import SVC

OUT = Path(__file__).resolve().parents[3] / "docs" / "figures" / "fms-ml"


def models(seed: int) -> dict[str, object]:
    return {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(C=1.0)),
        "svc-rbf": make_pipeline(StandardScaler(), SVC(C=1.0)),
        "knn-5": make_pipeline(StandardScaler(), KNeighborsClassifier(5)),
        "gaussian-nb": GaussianNB(),
        "random-forest": RandomForestClassifier(100, random_state=seed),
        "grad-boosting": GradientBoostingClassifier(n_estimators=100, random_state=seed),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    seeds = list(range(ap.parse_args().seeds))
    X, y = load_breast_cancer(return_X_y=True)

    def one_seed(seed: int) -> dict[str, float]:
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=seed, stratify=y)
        return {name: float(m.fit(Xtr, ytr).score(Xte, yte)) for name, m in models(seed).items()}  # type: ignore[attr-defined]

    runs = run_seeds(one_seed, seeds)
    names = list(runs[0])
    acc = {n: np.array([r[n] for r in runs]) for n in names}
    cis = {n: t_ci(acc[n]) for n in names}
    best = max(names, key=lambda n: cis[n].estimate)
    n_test = int(np.ceil(0.3 * len(y)))
    n_train = len(y) - n_test
    others = [n for n in names if n != best]
    tests = {n: corrected_resampled_ttest(acc[best], acc[n], n_train, n_test) for n in others}
    naive = {n: paired_ttest(acc[best], acc[n]) for n in others}
    reject, adjusted = holm([tests[n].pvalue for n in others])

    order = sorted(names, key=lambda n: cis[n].estimate)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, n in enumerate(order):
        c = cis[n]
        ax.errorbar(
            c.estimate,
            i,
            xerr=[[c.estimate - c.low], [c.high - c.estimate]],
            fmt="o",
            color="C3" if n == best else "C0",
            capsize=4,
        )
        ax.scatter(acc[n], np.full(len(seeds), i) + 0.18, s=6, color="gray", alpha=0.5)
    ax.set_yticks(range(len(order)), order)
    ax.set_xlabel(
        f"held-out accuracy ({len(seeds)} stratified 70/30 splits; mean and 95% t-interval)"
    )
    ax.set_title(
        "Breast cancer (n=569): six fms_ml classifiers, paired over the same splits", fontsize=10
    )
    fig.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / "model_comparison.png", dpi=100)

    rec = Experiment(
        "model-comparison-breast-cancer",
        config={"test_size": 0.3, "stratify": True, "models": names},
        seeds=seeds,
    )
    rec.log("accuracy", {n: acc[n] for n in names})
    rec.log("accuracy_ci", cis)
    rec.log("best", best)
    rec.log(
        "vs_best",
        {
            n: {
                "corrected_t": tests[n].statistic,
                "corrected_p": tests[n].pvalue,
                "holm_p": float(adjusted[k]),
                "holm_reject_at_0.05": bool(reject[k]),
                "naive_paired_p": naive[n].pvalue,
                "effect_size_dz": cohens_d(acc[best], acc[n], paired=True),
            }
            for k, n in enumerate(others)
        },
    )
    rec.save(OUT / "model_comparison.json")

    print(
        f"| model | accuracy (95% t-CI, {len(seeds)} seeds) | corrected p vs {best} | Holm p | naive p | d_z |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for n in sorted(names, key=lambda n: -cis[n].estimate):
        if n == best:
            print(f"| **{n}** | {cis[n]} | - | - | - | - |")
            continue
        k = others.index(n)
        print(
            f"| {n} | {cis[n]} | {tests[n].pvalue:.3g} | {adjusted[k]:.3g} | {naive[n].pvalue:.3g} | "
            f"{cohens_d(acc[best], acc[n], paired=True):.2f} |"
        )


if __name__ == "__main__":
    main()
