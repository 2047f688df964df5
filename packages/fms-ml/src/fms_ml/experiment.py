r"""Experiment design: seeding, repeated runs, confidence intervals, paired tests, records.

Every layer of fms reports its experiments through this module, so a claim like "model A beats
model B" always comes with the seeds it was run on, an interval, and a test that respects how the
numbers were produced.

* **Seeding**: [`seed_everything`][fms_ml.experiment.seed_everything] seeds Python, numpy (and
  torch when it is already imported) and [`make_rng`][fms_ml.experiment.make_rng] hands out an
  independent `numpy.random.Generator`; [`run_seeds`][fms_ml.experiment.run_seeds] runs a
  function once per seed.
* **Intervals**: [`t_ci`][fms_ml.experiment.t_ci] (Student $t$, whose CDF and quantiles are
  computed here from the regularised incomplete beta function, numpy and `math` only) and
  [`bootstrap_ci`][fms_ml.experiment.bootstrap_ci] (percentile bootstrap).
* **Paired comparisons**: [`mcnemar`][fms_ml.experiment.mcnemar] (two classifiers, one test set),
  [`corrected_resampled_ttest`][fms_ml.experiment.corrected_resampled_ttest] (Nadeau & Bengio,
  2003), [`paired_ttest_5x2cv`][fms_ml.experiment.paired_ttest_5x2cv] (Dietterich, 1998), and
  [`holm`][fms_ml.experiment.holm] for many comparisons at once.
* **Effect sizes**: [`cohens_d`][fms_ml.experiment.cohens_d], [`hedges_g`][fms_ml.experiment.hedges_g].
* **Records**: [`Experiment`][fms_ml.experiment.Experiment] stores config, seeds, environment and
  results, and round-trips through JSON.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import random
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "CI",
    "Experiment",
    "TestResult",
    "bootstrap_ci",
    "cohens_d",
    "corrected_resampled_ttest",
    "environment",
    "hedges_g",
    "holm",
    "make_rng",
    "mcnemar",
    "paired_ttest",
    "paired_ttest_5x2cv",
    "run_seeds",
    "seed_everything",
    "t_cdf",
    "t_ci",
    "t_ppf",
    "t_sf",
]

T = TypeVar("T")


# ------------------------------------------------------------------------------------------------
# Seeding
# ------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> np.random.Generator:
    """Seed every source of randomness a run may touch, and return a fresh Generator.

    Seeds Python's `random`, numpy's legacy global state, `PYTHONHASHSEED` (for subprocesses), and
    torch (CPU and CUDA) when torch has already been imported by the caller; fms_ml itself never
    imports torch.

    Args:
        seed: a non-negative integer.

    Returns:
        `numpy.random.default_rng(seed)`, the generator new code should draw from.
    """
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}.")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeding the legacy global state is the point
    os.environ["PYTHONHASHSEED"] = str(seed)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)
    return np.random.default_rng(seed)


def make_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """Return a `numpy.random.Generator` from an int seed, a Generator (returned as is) or None."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, int | np.integer) and not isinstance(seed, bool)):
        return np.random.default_rng(None if seed is None else int(seed))
    raise TypeError(f"seed must be an int, a numpy Generator or None; got {type(seed).__name__}.")


def run_seeds(fn: Callable[[int], T], seeds: Iterable[int] | int) -> list[T]:
    """Call `fn(seed)` once per seed, after [`seed_everything`][fms_ml.experiment.seed_everything].

    Args:
        fn: the experiment; it receives the seed and should derive all randomness from it.
        seeds: the seeds, or an int `n` meaning `range(n)`.

    Returns:
        The results, in the order of `seeds`.
    """
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ValueError("seeds is empty; expected at least one seed.")
    out = []
    for s in seed_list:
        seed_everything(s)
        out.append(fn(s))
    return out


# ------------------------------------------------------------------------------------------------
# Student t distribution from first principles
# ------------------------------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    r"""Regularised incomplete beta function $I_x(a, b)$.

    $$I_x(a,b) = \frac{1}{B(a,b)} \int_0^x t^{a-1} (1-t)^{b-1}\, dt,$$

    evaluated with the continued fraction of Numerical Recipes (sec. 6.4), using the symmetry
    $I_x(a,b) = 1 - I_{1-x}(b,a)$ where the fraction converges faster.
    """
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1]; got {x}.")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    r"""Survival function $P(T > t)$ of Student's $t$ with `df` degrees of freedom.

    $P(T > t) = \tfrac12 I_{\nu/(\nu + t^2)}(\nu/2, 1/2)$ for $t \ge 0$.
    """
    if df <= 0:
        raise ValueError(f"df must be positive; got {df}.")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_cdf(t: float, df: float) -> float:
    """Cumulative distribution function $P(T \\le t)$ of Student's $t$."""
    return 1.0 - t_sf(t, df) if t >= 0 else t_sf(-t, df)


def t_ppf(q: float, df: float) -> float:
    """Quantile function (inverse CDF) of Student's $t$, by bracketing and bisection on the CDF.

    Accurate to about `1e-12` relative; scipy's `scipy.stats.t.ppf` is the test reference.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must lie in (0, 1); got {q}.")
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    target = 1.0 - q  # upper-tail probability, computed without cancellation
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > target:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf(mid, df) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-14 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _norm_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


# ------------------------------------------------------------------------------------------------
# Confidence intervals
# ------------------------------------------------------------------------------------------------
class CI(NamedTuple):
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float
    confidence: float

    def __str__(self) -> str:
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}]"


def _as_1d(x: ArrayLike, name: str, min_len: int = 1) -> NDArray[np.float64]:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-d; got shape {a.shape}.")
    if a.size < min_len:
        raise ValueError(f"{name} has {a.size} value(s); expected at least {min_len}.")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf; expected finite numbers.")
    return a


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}.")


def t_ci(x: ArrayLike, confidence: float = 0.95) -> CI:
    r"""Student-$t$ interval for the mean of `x`.

    $$\bar x \pm t_{1-\alpha/2,\,n-1} \frac{s}{\sqrt n},$$

    valid when the values are independent draws (e.g. one score per seed). Matches
    `scipy.stats.t.interval(confidence, n-1, loc=mean, scale=sem)`.
    """
    a = _as_1d(x, "x", min_len=2)
    _check_confidence(confidence)
    n = a.size
    mean = float(a.mean())
    sem = float(a.std(ddof=1) / math.sqrt(n))
    h = t_ppf(0.5 + confidence / 2.0, n - 1) * sem
    return CI(mean, mean - h, mean + h, confidence)


def bootstrap_ci(
    x: ArrayLike,
    statistic: Callable[[NDArray[np.float64]], Any] = np.mean,
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    random_state: int | np.random.Generator | None = 0,
) -> CI:
    """Percentile bootstrap interval for `statistic(x)` (Efron & Tibshirani, 1993, ch. 13).

    Resamples `x` with replacement `n_resamples` times and takes the `(1-c)/2` and `(1+c)/2`
    quantiles of the statistic. Makes no normality assumption; needs a dozen or more values.
    """
    a = _as_1d(x, "x", min_len=2)
    _check_confidence(confidence)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1; got {n_resamples}.")
    rng = make_rng(random_state)
    idx = rng.integers(0, a.size, size=(n_resamples, a.size))
    samples = a[idx]
    if statistic is np.mean:
        stats = samples.mean(axis=1)
    else:
        stats = np.array([statistic(s) for s in samples])
    alpha = 1.0 - confidence
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return CI(float(statistic(a)), float(lo), float(hi), confidence)


# ------------------------------------------------------------------------------------------------
# Paired tests
# ------------------------------------------------------------------------------------------------
class TestResult(NamedTuple):
    """A test statistic with its two-sided p-value (and degrees of freedom where they apply)."""

    statistic: float
    pvalue: float
    df: float | None = None


def _t_result(t: float, df: float) -> TestResult:
    if math.isnan(t):
        return TestResult(t, float("nan"), df)
    return TestResult(t, min(1.0, 2.0 * t_sf(abs(t), df)), df)


def paired_ttest(a: ArrayLike, b: ArrayLike) -> TestResult:
    r"""Classical paired $t$-test on `a - b` (`scipy.stats.ttest_rel`).

    Assumes the differences are independent: true across seeds on fresh data, **false** across
    cross-validation folds that share training data (use the corrected test there).
    """
    d = _as_1d(a, "a", 2) - _as_1d(b, "b", 2)
    sd = d.std(ddof=1)
    t = float(d.mean() / (sd / math.sqrt(d.size))) if sd > 0 else float("nan")
    return _t_result(t, d.size - 1)


def corrected_resampled_ttest(a: ArrayLike, b: ArrayLike, n_train: int, n_test: int) -> TestResult:
    r"""Nadeau & Bengio's (2003) corrected resampled $t$-test.

    For $k$ train/test resamplings with score differences $d_j$, the training sets overlap, so the
    $d_j$ are correlated and the naive variance $s^2/k$ is too small. The correction inflates it:

    $$t = \frac{\bar d}{\sqrt{\left(\frac1k + \frac{n_\text{test}}{n_\text{train}}\right) s_d^2}},
    \qquad \nu = k - 1.$$

    Args:
        a: scores of model A, one per resampling (or fold).
        b: scores of model B on the same resamplings.
        n_train: training-set size of one resampling.
        n_test: test-set size of one resampling.
    """
    d = _as_1d(a, "a", 2) - _as_1d(b, "b", 2)
    if n_train <= 0 or n_test <= 0:
        raise ValueError(f"n_train and n_test must be positive; got {n_train}, {n_test}.")
    k = d.size
    var = d.var(ddof=1)
    denom = math.sqrt((1.0 / k + n_test / n_train) * var)
    t = float(d.mean() / denom) if denom > 0 else float("nan")
    return _t_result(t, k - 1)


def paired_ttest_5x2cv(diffs: ArrayLike) -> TestResult:
    r"""Dietterich's (1998) 5x2cv paired $t$-test.

    Five replications of 2-fold cross-validation give differences $p_i^{(j)}$ (replication $i$,
    fold $j$). With $\bar p_i$ the mean and $s_i^2 = \sum_j (p_i^{(j)} - \bar p_i)^2$ the variance
    estimate of replication $i$,

    $$t = \frac{p_1^{(1)}}{\sqrt{\tfrac15 \sum_{i=1}^5 s_i^2}} \sim t_5.$$

    Args:
        diffs: `(5, 2)` array of score differences (A minus B) per replication and fold.
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.shape != (5, 2):
        raise ValueError(f"diffs must have shape (5, 2) (5 replications x 2 folds); got {d.shape}.")
    if not np.isfinite(d).all():
        raise ValueError("diffs contains NaN or inf; expected finite numbers.")
    s2 = ((d - d.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    denom = math.sqrt(s2.mean())
    t = float(d[0, 0] / denom) if denom > 0 else float("nan")
    return _t_result(t, 5)


def mcnemar(
    y_true: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike, *, exact: bool | None = None
) -> TestResult:
    r"""McNemar's test: do two classifiers err on the same test set at different rates?

    Only discordant pairs count: $b$ = A right and B wrong, $c$ = A wrong and B right. Under the
    null $b \sim \text{Binomial}(b + c, 1/2)$. The exact test sums that binomial's tails; the
    asymptotic one uses $\chi^2 = (|b - c| - 1)^2 / (b + c)$ with one degree of freedom
    (Edwards' continuity correction).

    Args:
        y_true: true labels.
        pred_a: predictions of classifier A.
        pred_b: predictions of classifier B.
        exact: exact binomial test; by default when $b + c < 25$.

    Returns:
        For the exact test, `statistic` is `min(b, c)`; otherwise the $\chi^2$ value.
    """
    yt, pa, pb = np.asarray(y_true), np.asarray(pred_a), np.asarray(pred_b)
    if not (yt.shape == pa.shape == pb.shape) or yt.ndim != 1:
        raise ValueError(
            f"y_true, pred_a and pred_b must be 1-d of one length; got shapes {yt.shape}, "
            f"{pa.shape}, {pb.shape}."
        )
    ca, cb = pa == yt, pb == yt
    b = int(np.sum(ca & ~cb))
    c = int(np.sum(~ca & cb))
    n = b + c
    if exact is None:
        exact = n < 25
    if n == 0:
        return TestResult(0.0, 1.0, None)
    if exact:
        k = min(b, c)
        # two-sided exact binomial p-value: 2 * P(X <= k), X ~ Bin(n, 1/2), capped at 1
        log_terms = [
            math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
            for i in range(k + 1)
        ]
        p = min(1.0, 2.0 * math.fsum(math.exp(t) for t in log_terms))
        return TestResult(float(k), p, None)
    chi2 = (abs(b - c) - 1.0) ** 2 / n
    return TestResult(chi2, 2.0 * _norm_sf(math.sqrt(chi2)), 1.0)


def holm(pvalues: ArrayLike, alpha: float = 0.05) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    r"""Holm's (1979) step-down correction for $m$ simultaneous tests.

    Sort the p-values $p_{(1)} \le \dots \le p_{(m)}$; the adjusted values are
    $\tilde p_{(i)} = \max_{j \le i} \min(1, (m - j + 1) p_{(j)})$, and hypothesis $(i)$ is rejected
    when $\tilde p_{(i)} \le \alpha$. Controls the family-wise error rate, uniformly more powerful
    than Bonferroni.

    Returns:
        `(reject, adjusted)` in the input order.
    """
    p = _as_1d(pvalues, "pvalues")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("pvalues must lie in [0, 1].")
    m = p.size
    order = np.argsort(p, kind="stable")
    adj_sorted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = adj_sorted
    return adjusted <= alpha, adjusted


# ------------------------------------------------------------------------------------------------
# Effect sizes
# ------------------------------------------------------------------------------------------------
def cohens_d(a: ArrayLike, b: ArrayLike, *, paired: bool = False) -> float:
    r"""Cohen's $d$: the mean difference in standard-deviation units.

    Independent samples: $d = (\bar a - \bar b) / s_p$ with pooled
    $s_p^2 = \frac{(n_a - 1)s_a^2 + (n_b - 1)s_b^2}{n_a + n_b - 2}$.
    Paired (`paired=True`): $d_z = \bar d / s_d$ on the differences $d = a - b$.
    """
    x, y = _as_1d(a, "a", 2), _as_1d(b, "b", 2)
    if paired:
        if x.size != y.size:
            raise ValueError(f"paired samples need equal lengths; got {x.size} and {y.size}.")
        d = x - y
        return float(d.mean() / d.std(ddof=1))
    na, nb = x.size, y.size
    sp = math.sqrt(((na - 1) * x.var(ddof=1) + (nb - 1) * y.var(ddof=1)) / (na + nb - 2))
    return float((x.mean() - y.mean()) / sp)


def hedges_g(a: ArrayLike, b: ArrayLike) -> float:
    r"""Hedges' $g$: Cohen's $d$ with the exact small-sample bias correction.

    $$g = J(\nu)\, d, \qquad J(\nu) = \frac{\Gamma(\nu/2)}{\sqrt{\nu/2}\;\Gamma((\nu-1)/2)},
    \qquad \nu = n_a + n_b - 2.$$
    """
    x, y = _as_1d(a, "a", 2), _as_1d(b, "b", 2)
    nu = x.size + y.size - 2
    j = math.exp(math.lgamma(nu / 2) - math.lgamma((nu - 1) / 2)) / math.sqrt(nu / 2)
    return j * cohens_d(x, y)


# ------------------------------------------------------------------------------------------------
# Experiment record
# ------------------------------------------------------------------------------------------------
def environment() -> dict[str, Any]:
    """Describe where a run happened: Python, numpy, platform, CPU, and torch/CUDA if loaded."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch"] = torch.__version__
        env["cuda"] = bool(torch.cuda.is_available())
    return env


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        if hasattr(obj, "_asdict"):
            return _jsonable(obj._asdict())
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in an Experiment record; use JSON types.")


@dataclass
class Experiment:
    """A record of one experiment: what was run, on which seeds, where, and what came out.

    Example:
        ```python
        exp = Experiment("ridge-alpha", config={"alpha": 1.0}, seeds=[0, 1, 2])
        exp.log("r2", [0.91, 0.90, 0.92])
        exp.save("runs/ridge.json")
        same = Experiment.load("runs/ridge.json")
        ```
    """

    name: str
    config: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=environment)
    created: str = field(
        default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    )
    notes: str = ""

    def log(self, key: str, value: Any) -> None:
        """Store a result under `key` (numpy arrays/scalars and CIs become JSON types)."""
        self.results[key] = _jsonable(value)

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON-compatible Python objects."""
        return {k: _jsonable(v) for k, v in asdict(self).items()}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the record as indented JSON, atomically (temp file then rename)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; a record is meant to be shared
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Experiment:
        """Read a record written by [`save`][fms_ml.experiment.Experiment.save]."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"{path} has unknown fields {sorted(unknown)}; expected {sorted(known)}."
            )
        return cls(**data)


def summarize(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean, standard deviation and $t$ interval of per-seed values, as a dict for records."""
    ci = t_ci(values, confidence)
    return {
        "mean": ci.estimate,
        "std": float(np.std(np.asarray(values, dtype=float), ddof=1)),
        "ci_low": ci.low,
        "ci_high": ci.high,
        "n": len(values),
        "confidence": confidence,
    }


__all__ += ["betainc", "summarize"]
