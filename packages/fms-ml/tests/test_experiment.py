"""fms_ml.experiment against scipy.stats reference values."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import scipy.stats as st

from fms_ml import experiment as ex


@pytest.mark.parametrize("df", [1, 2, 3.5, 7, 30, 250])
@pytest.mark.parametrize("t", [-12.0, -2.1, -0.3, 0.0, 0.05, 1.0, 4.7, 40.0])
def test_t_cdf_matches_scipy_to_1e12_abs(t: float, df: float) -> None:
    assert ex.t_cdf(t, df) == pytest.approx(st.t.cdf(t, df), abs=1e-12)
    assert ex.t_sf(t, df) == pytest.approx(st.t.sf(t, df), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("df", [1, 2, 4, 9, 29, 1000])
@pytest.mark.parametrize("q", [1e-6, 0.025, 0.3, 0.6, 0.9, 0.975, 0.995, 1 - 1e-7])
def test_t_ppf_matches_scipy_to_1e9_rel(q: float, df: float) -> None:
    assert ex.t_ppf(q, df) == pytest.approx(st.t.ppf(q, df), rel=1e-9)


def test_t_ppf_near_median_matches_scipy_to_1e7_rel() -> None:
    assert ex.t_ppf(0.5001, 10) == pytest.approx(st.t.ppf(0.5001, 10), rel=1e-7)
    assert ex.t_ppf(0.5, 10) == 0.0


@pytest.mark.parametrize(
    ("a", "b", "x"), [(0.5, 0.5, 0.3), (2, 3, 0.9), (10, 0.5, 0.99), (50, 40, 0.5)]
)
def test_betainc_matches_scipy_special_to_1e12(a: float, b: float, x: float) -> None:
    from scipy.special import betainc

    assert ex.betainc(a, b, x) == pytest.approx(betainc(a, b, x), abs=1e-12)


def test_t_ci_matches_scipy_interval_to_1e10() -> None:
    x = np.random.default_rng(1).normal(3, 2, size=13)
    ci = ex.t_ci(x, 0.9)
    lo, hi = st.t.interval(0.9, len(x) - 1, loc=x.mean(), scale=st.sem(x))
    assert (ci.low, ci.high) == pytest.approx((lo, hi), rel=1e-10)
    assert ci.estimate == pytest.approx(x.mean())


def test_bootstrap_ci_is_seeded_and_close_to_t_interval_for_normal_data() -> None:
    x = np.random.default_rng(2).normal(0, 1, size=200)
    a = ex.bootstrap_ci(x, random_state=5)
    b = ex.bootstrap_ci(x, random_state=5)
    assert a == b
    t = ex.t_ci(x)
    assert a.low == pytest.approx(t.low, abs=0.03)
    assert a.high == pytest.approx(t.high, abs=0.03)
    med = ex.bootstrap_ci(x, np.median, n_resamples=500)
    assert med.low < np.median(x) < med.high


def test_paired_ttest_matches_scipy_ttest_rel() -> None:
    r = np.random.default_rng(3)
    a, b = r.normal(size=12), r.normal(0.3, size=12)
    ref = st.ttest_rel(a, b)
    got = ex.paired_ttest(a, b)
    assert got.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert got.pvalue == pytest.approx(ref.pvalue, rel=1e-9)


def test_corrected_resampled_ttest_formula_against_scipy_t_sf() -> None:
    r = np.random.default_rng(4)
    a, b = r.normal(0.8, 0.02, 10), r.normal(0.79, 0.02, 10)
    d = a - b
    t_ref = d.mean() / math.sqrt((1 / 10 + 30 / 70) * d.var(ddof=1))
    got = ex.corrected_resampled_ttest(a, b, n_train=70, n_test=30)
    assert got.statistic == pytest.approx(t_ref, rel=1e-12)
    assert got.pvalue == pytest.approx(2 * st.t.sf(abs(t_ref), 9), rel=1e-9)
    # the correction always makes the test more conservative than the naive paired t-test
    assert got.pvalue >= ex.paired_ttest(a, b).pvalue


def test_paired_ttest_5x2cv_against_hand_formula_and_scipy_t5() -> None:
    d = np.array([[0.02, 0.01], [0.03, -0.01], [0.0, 0.02], [0.015, 0.025], [0.01, 0.0]])
    s2 = ((d - d.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    t_ref = d[0, 0] / math.sqrt(s2.mean())
    got = ex.paired_ttest_5x2cv(d)
    assert got.statistic == pytest.approx(t_ref, rel=1e-12)
    assert got.pvalue == pytest.approx(2 * st.t.sf(abs(t_ref), 5), rel=1e-9)
    with pytest.raises(ValueError, match=r"shape \(5, 2\)"):
        ex.paired_ttest_5x2cv(np.zeros((4, 2)))


def test_mcnemar_exact_matches_scipy_binomtest_and_chi2_matches_chi2_sf() -> None:
    r = np.random.default_rng(6)
    y = r.integers(0, 2, 300)
    pa = np.where(r.random(300) < 0.85, y, 1 - y)
    pb = np.where(r.random(300) < 0.78, y, 1 - y)
    b = int(np.sum((pa == y) & (pb != y)))
    c = int(np.sum((pa != y) & (pb == y)))
    exact = ex.mcnemar(y, pa, pb, exact=True)
    assert exact.pvalue == pytest.approx(st.binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-9)
    asym = ex.mcnemar(y, pa, pb, exact=False)
    chi2 = (abs(b - c) - 1) ** 2 / (b + c)
    assert asym.statistic == pytest.approx(chi2)
    assert asym.pvalue == pytest.approx(st.chi2.sf(chi2, 1), rel=1e-9)
    assert ex.mcnemar(y, pa, pa).pvalue == 1.0


def test_holm_against_hand_computed_reference() -> None:
    reject, adj = ex.holm([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    assert reject.tolist() == [True, False, False, True]


def test_holm_is_between_raw_and_bonferroni() -> None:
    p = np.random.default_rng(7).random(20) * 0.1
    _, adj = ex.holm(p)
    assert np.all(adj >= p - 1e-15)
    assert np.all(adj <= np.minimum(1, p * 20) + 1e-15)


def test_cohens_d_and_hedges_g() -> None:
    a = np.array([5.0, 6, 7, 8, 9])
    b = np.array([3.0, 4, 5, 6, 7, 8])
    sp = math.sqrt((4 * a.var(ddof=1) + 5 * b.var(ddof=1)) / 9)
    d = (a.mean() - b.mean()) / sp
    assert ex.cohens_d(a, b) == pytest.approx(d)
    # exact J(9) = Gamma(4.5) / (sqrt(4.5) Gamma(4)); the 1 - 3/(4 nu - 1) approximation is close
    j = math.gamma(4.5) / (math.sqrt(4.5) * math.gamma(4))
    assert ex.hedges_g(a, b) == pytest.approx(j * d)
    assert j == pytest.approx(1 - 3 / (4 * 9 - 1), abs=2e-3)
    c = np.array([4.0, 6.5, 6, 7.5, 7])
    diff = a - c
    assert ex.cohens_d(a, c, paired=True) == pytest.approx(diff.mean() / diff.std(ddof=1))


def test_seed_everything_makes_python_and_numpy_reproducible() -> None:
    g1 = ex.seed_everything(11)
    x1 = (random.random(), np.random.random(), g1.random())  # noqa: NPY002
    g2 = ex.seed_everything(11)
    assert (random.random(), np.random.random(), g2.random()) == x1  # noqa: NPY002
    with pytest.raises(ValueError, match="seed"):
        ex.seed_everything(-1)


def test_make_rng_and_run_seeds() -> None:
    g = np.random.default_rng(0)
    assert ex.make_rng(g) is g
    assert ex.make_rng(3).random() == np.random.default_rng(3).random()
    with pytest.raises(TypeError, match="seed"):
        ex.make_rng("3")  # type: ignore[arg-type]
    out = ex.run_seeds(lambda s: ex.make_rng(s).random(), [1, 2, 1])
    assert out[0] == out[2] != out[1]
    assert len(ex.run_seeds(lambda s: s, 4)) == 4
    with pytest.raises(ValueError, match="empty"):
        ex.run_seeds(lambda s: s, [])


def test_experiment_record_round_trips_through_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rec = ex.Experiment("demo", config={"alpha": 0.1, "layers": [2, 3]}, seeds=[0, 1])
    rec.log("scores", np.array([0.5, 0.75]))
    rec.log("ci", ex.t_ci([0.5, 0.75, 0.6]))
    rec.log("n", np.int64(3))
    path = rec.save(tmp_path / "sub" / "demo.json")
    back = ex.Experiment.load(path)
    assert back == ex.Experiment(**json.loads(path.read_text()))
    assert back.results["scores"] == [0.5, 0.75]
    assert back.results["ci"]["confidence"] == 0.95
    assert back.config == rec.config
    assert {"python", "numpy", "platform", "processor"} <= set(back.environment)
    assert not list((tmp_path / "sub").glob("*.tmp"))
    with pytest.raises(TypeError, match="cannot store"):
        rec.log("bad", object())


def test_summarize_and_bad_inputs() -> None:
    s = ex.summarize([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0
    assert s["ci_low"] < 2.0 < s["ci_high"]
    with pytest.raises(ValueError, match="at least 2"):
        ex.t_ci([1.0])
    with pytest.raises(ValueError, match="NaN"):
        ex.t_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        ex.t_ci([1.0, 2.0], confidence=1.5)
    with pytest.raises(ValueError, match="q must"):
        ex.t_ppf(1.0, 3)
