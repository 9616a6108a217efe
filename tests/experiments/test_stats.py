"""The statistics hold their promises on simulated data with a known truth: the false-positive
rate of an A/A test is alpha, a planted effect is found with the planned power, CUPED narrows
the interval, the sequential p-value survives daily peeking, SRM is flagged."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from experiments import stats

ALPHA = 0.05
SD = float(np.exp(0.125) * np.sqrt(np.exp(0.25) - 1))  # sd of exp(0.5 N(0, 1))


def arms(rng: np.random.Generator, n: int, effect_sd: float = 0.0,
         rho: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Skewed per-user metric (watch minutes-like) with a pre-period covariate of
    correlation ~rho; ``effect_sd``: treatment shift in standard deviations."""
    def one(shift: float) -> pd.DataFrame:
        z = rng.standard_normal(n)
        pre = z
        post = rho * z + np.sqrt(1 - rho**2) * rng.standard_normal(n)
        return pd.DataFrame({"y": np.exp(0.5 * post) + shift, "x": np.exp(0.5 * pre)})

    return one(0.0), one(effect_sd * SD)


def test_aa_false_positive_rate_is_alpha() -> None:
    rng = np.random.default_rng(1)
    reps = 300
    hits = sum(stats.welch(*arms(rng, 400), "y", alpha=ALPHA).pvalue < ALPHA
               for _ in range(reps))
    # Binomial(300, 0.05): mean 15, sd 3.8 -> [6, 27] holds with >99.5 %.
    assert 6 <= hits <= 27, hits


def test_planted_effect_found_with_planned_power() -> None:
    rng = np.random.default_rng(2)
    n, power = 400, 0.8
    effect = (sps.norm.ppf(1 - ALPHA / 2) + sps.norm.ppf(power)) * np.sqrt(2 / n)
    reps = 200
    found = [stats.welch(*arms(rng, n, effect), "y", alpha=ALPHA) for _ in range(reps)]
    rate = np.mean([f.pvalue < ALPHA and f.diff > 0 for f in found])
    assert 0.70 <= rate <= 0.90, rate  # Binomial(200, 0.8): sd 0.028
    # The interval covers the truth about 95 % of the time.
    cover = np.mean([f.diff_lo <= effect * SD <= f.diff_hi for f in found])
    assert cover >= 0.90, cover


def test_cuped_narrows_the_interval_on_correlated_pre_period() -> None:
    rng = np.random.default_rng(3)
    widths, estimates = [], []
    for _ in range(40):
        c, t = arms(rng, 1000, rho=0.8)
        plain, adjusted = stats.welch(c, t, "y"), stats.welch(c, t, "y", covariate="x")
        widths.append((adjusted.diff_hi - adjusted.diff_lo) / (plain.diff_hi - plain.diff_lo))
        estimates.append((plain.diff, adjusted.diff))
    assert np.median(widths) < 0.8, np.median(widths)  # ~sqrt(1 - 0.8^2) = 0.6
    plain_sd, cuped_sd = np.std(estimates, axis=0)
    assert cuped_sd < 0.8 * plain_sd
    # The value the sequential test uses is adjusted the same way.
    y = np.r_[c["y"], t["y"]]
    assert np.var(stats.cuped(y, np.r_[c["x"], t["x"]])) < 0.6 * np.var(y)


def test_sequential_p_value_survives_daily_peeking() -> None:
    """14 daily looks at a growing A/A test: the mSPRT p-value rejects at most alpha of the
    time, while re-running a fixed-horizon t-test every day rejects far more often."""
    rng = np.random.default_rng(4)
    reps, days, per_day = 400, 14, 60
    seq_hits = naive_hits = 0
    for _ in range(reps):
        c = rng.exponential(1.0, days * per_day)
        t = rng.exponential(1.0, days * per_day)
        looks = [stats.look(c[: (d + 1) * per_day], t[: (d + 1) * per_day])
                 for d in range(days)]
        d, v, sd = (np.array(x) for x in zip(*looks, strict=True))
        seq_hits += stats.msprt(d, v, sd, ALPHA).pvalue < ALPHA
        naive_hits += any(sps.ttest_ind(c[: (k + 1) * per_day], t[: (k + 1) * per_day],
                                        equal_var=False).pvalue < ALPHA for k in range(days))
    assert seq_hits / reps <= ALPHA + 0.02, seq_hits / reps
    assert naive_hits / reps > 0.12, naive_hits / reps  # peeking at a t-test inflates it


def test_sequential_detects_a_real_effect_and_covers_it() -> None:
    rng = np.random.default_rng(5)
    c, t = rng.normal(0, 1, 5000), rng.normal(0.15, 1, 5000)
    d, v, sd = stats.look(c, t)
    seq = stats.msprt(np.array([d]), np.array([v]), np.array([sd]))
    assert seq.pvalue < 0.01 and seq.lo <= 0.15 <= seq.hi


def test_srm_flags_a_tampered_split() -> None:
    fine = stats.srm({"a": 5030, "b": 4970}, {"a": 0.5, "b": 0.5})[1]
    tampered = stats.srm({"a": 5000, "b": 4500}, {"a": 0.5, "b": 0.5})[1]
    assert fine > 0.05 and tampered < 0.001


def test_bootstrap_agrees_with_welch_and_bh_adjusts() -> None:
    rng = np.random.default_rng(6)
    c, t = arms(rng, 3000, 0.1)
    lo, hi = stats.poisson_bootstrap(c[["y"]].to_numpy(), t[["y"]].to_numpy(), 400)
    w = stats.welch(c, t, "y")
    assert abs(lo[0] - w.diff_lo) < 0.3 * (w.diff_hi - w.diff_lo)
    assert abs(hi[0] - w.diff_hi) < 0.3 * (w.diff_hi - w.diff_lo)
    adjusted = stats.adjust([0.01, 0.04, 0.03, float("nan")])
    assert np.allclose(adjusted[:3], [0.03, 0.04, 0.04]) and np.isnan(adjusted[3])


def test_quantile_interval_brackets_the_p99() -> None:
    rng = np.random.default_rng(7)
    x = rng.exponential(40.0, 20_000)
    q, lo, hi = stats.quantile_ci(x)
    truth = 40.0 * np.log(100)
    assert lo <= q <= hi and lo < truth < hi


def test_a_metric_constant_in_both_arms_has_no_interval_and_no_warning() -> None:
    """No shares in either arm: the difference is 0 with no interval ("-" in the table), and
    the analysis stays quiet (scipy warned twice per bound)."""
    import warnings

    zeros = pd.DataFrame({"m": np.zeros(50)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = stats.welch(zeros, zeros.iloc[:40], "m")
    assert got.diff == 0.0 and np.isnan(got.diff_lo) and np.isnan(got.pvalue)
