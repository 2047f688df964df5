"""Regularisation paths of the lasso and ridge on the diabetes data, with held-out R² over seeds.

Run from the repository root:

    .venv/bin/python packages/fms-ml/experiments/regularisation_path.py

Writes `docs/figures/fms-ml/regularisation_path.png` and the record
`docs/figures/fms-ml/regularisation_path.json` (an `fms_ml.experiment.Experiment`).
The diabetes data (442 patients, 10 standardised features) ships inside scikit-learn; nothing is
downloaded. Everything fitted here is fms_ml.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_diabetes

from fms_ml.experiment import Experiment, run_seeds, t_ci
from fms_ml.linear_model import Lasso, Ridge, enet_path
from fms_ml.model_selection import train_test_split

OUT = Path(__file__).resolve().parents[3] / "docs" / "figures" / "fms-ml"
SEEDS = list(range(20))


def main() -> None:
    data = load_diabetes()
    X, y = data.data, data.target
    names = data.feature_names
    X = (X - X.mean(0)) / X.std(0)

    alphas, lasso_coefs = enet_path(X, y, l1_ratio=1.0, n_alphas=60, eps=1e-3, tol=1e-8)
    ridge_alphas = np.geomspace(1e-2, 1e5, 60)
    ridge_coefs = np.array([Ridge(a).fit(X, y).coef_ for a in ridge_alphas]).T

    # held-out R^2 along each path, over 20 random 70/30 splits
    lasso_grid = alphas[::4]
    ridge_grid = ridge_alphas[::4]

    def scores(seed: int) -> dict[str, list[float]]:
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=seed)
        return {
            "lasso": [Lasso(a, tol=1e-6).fit(Xtr, ytr).score(Xte, yte) for a in lasso_grid],
            "ridge": [Ridge(a).fit(Xtr, ytr).score(Xte, yte) for a in ridge_grid],
        }

    runs = run_seeds(scores, SEEDS)
    lasso_r2 = np.array([r["lasso"] for r in runs])  # (seeds, alphas)
    ridge_r2 = np.array([r["ridge"] for r in runs])
    lasso_ci = [t_ci(lasso_r2[:, j]) for j in range(lasso_r2.shape[1])]
    ridge_ci = [t_ci(ridge_r2[:, j]) for j in range(ridge_r2.shape[1])]

    fig, ax = plt.subplots(2, 2, figsize=(11, 7.5), sharex="col")
    for coefs, a, axis, title in (
        (lasso_coefs, alphas, ax[0, 0], r"Lasso ($\ell_1$): coefficients hit zero one by one"),
        (
            ridge_coefs,
            ridge_alphas,
            ax[0, 1],
            r"Ridge ($\ell_2$): coefficients shrink, none vanish",
        ),
    ):
        for j in range(coefs.shape[0]):
            axis.plot(a, coefs[j], lw=1.5, label=names[j])
        axis.set_xscale("log")
        axis.invert_xaxis()
        axis.axhline(0, color="k", lw=0.5)
        axis.set_title(title, fontsize=10)
        axis.set_ylabel("coefficient")
    ax[0, 0].legend(fontsize=7, ncol=2, loc="upper left")
    for grid, cis, axis in ((lasso_grid, lasso_ci, ax[1, 0]), (ridge_grid, ridge_ci, ax[1, 1])):
        m = np.array([c.estimate for c in cis])
        lo = np.array([c.low for c in cis])
        hi = np.array([c.high for c in cis])
        axis.plot(grid, m, "o-", ms=3, color="C3")
        axis.fill_between(grid, lo, hi, color="C3", alpha=0.25, label="95% t-interval, 20 splits")
        axis.set_xscale("log")
        axis.set_xlabel(r"regularisation strength $\alpha$ (weaker to the right)")
        axis.set_ylabel(r"held-out $R^2$")
        axis.legend(fontsize=8, loc="lower left")
    fig.suptitle("Regularisation paths on diabetes (n=442, p=10), fms_ml", fontsize=11)
    fig.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / "regularisation_path.png", dpi=100)

    best_l = int(np.argmax([c.estimate for c in lasso_ci]))
    best_r = int(np.argmax([c.estimate for c in ridge_ci]))
    rec = Experiment(
        "regularisation-path-diabetes",
        config={"test_size": 0.3, "lasso_alphas": lasso_grid, "ridge_alphas": ridge_grid},
        seeds=SEEDS,
    )
    rec.log("lasso_heldout_r2", {f"{a:.4g}": c for a, c in zip(lasso_grid, lasso_ci, strict=True)})
    rec.log("ridge_heldout_r2", {f"{a:.4g}": c for a, c in zip(ridge_grid, ridge_ci, strict=True)})
    rec.log("best_lasso", {"alpha": lasso_grid[best_l], "r2": lasso_ci[best_l]})
    rec.log("best_ridge", {"alpha": ridge_grid[best_r], "r2": ridge_ci[best_r]})
    rec.log("lasso_nonzero_at_best", int(np.sum(Lasso(lasso_grid[best_l]).fit(X, y).coef_ != 0)))
    rec.save(OUT / "regularisation_path.json")
    print(f"best lasso alpha={lasso_grid[best_l]:.3g}: R2 {lasso_ci[best_l]}")
    print(f"best ridge alpha={ridge_grid[best_r]:.3g}: R2 {ridge_ci[best_r]}")
    print(f"least squares limit (smallest lasso alpha): R2 {lasso_ci[-1]}")


if __name__ == "__main__":
    main()
