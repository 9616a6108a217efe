"""The statistics of an A/B comparison, on libraries where they have it.

* **Welch's t-test** and **CUPED** (the pre-period value of the metric as covariate):
  ``tea-tasting``'s ``Mean(value, covariate, equal_var=False)``, difference and relative
  difference with their confidence intervals.
* **SRM** (sample-ratio mismatch): SciPy's chi-square goodness of fit of the users per arm
  against the configured split.
* **Several metrics**: Benjamini-Hochberg adjusted p-values (SciPy's
  ``false_discovery_control``) over the metrics of one comparison.
* **Bootstrap** intervals: a Poisson bootstrap (each user weighted Poisson(1) per resample;
  Chamandy et al. 2012), as one matrix product for all metrics at once. tea-tasting's
  ``Bootstrap`` (SciPy's, per metric) took 15 s for 200k users here; this takes well under 1 s.
* **Always-valid inference**: the mixture sequential probability ratio test (mSPRT, normal
  mixture; Johari et al. 2017, "Peeking at A/B tests"): a p-value and a confidence sequence
  that stay valid however often the analyst looks, taken as the running minimum / running
  intersection over the daily looks. No maintained Python library implements it for
  two-sample means (gbstats's engine is GrowthBook's; spotify-confidence's sequential tests
  are group-sequential with planned looks), so the closed form is here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

# The normal mixture's scale in standard deviations of the metric: the effect sizes the test
# is most sensitive to (0.1 sd is a large effect for a per-user engagement metric).
MSPRT_TAU_SD = 0.1


@dataclass(frozen=True)
class Comparison:
    """A treatment arm against control on one metric."""

    metric: str
    control: float
    treatment: float
    n_control: int
    n_treatment: int
    diff: float
    diff_lo: float
    diff_hi: float
    rel: float
    rel_lo: float
    rel_hi: float
    pvalue: float
    cuped: bool  # diff/interval/p-value are CUPED-adjusted
    boot_lo: float = float("nan")  # bootstrap interval of the difference (not adjusted)
    boot_hi: float = float("nan")
    seq_pvalue: float = float("nan")  # always-valid p-value (mSPRT)
    seq_lo: float = float("nan")  # always-valid confidence sequence of the difference
    seq_hi: float = float("nan")
    pvalue_adj: float = float("nan")  # Benjamini-Hochberg over the comparison's metrics


def welch(control: pd.DataFrame, treatment: pd.DataFrame, metric: str,
          covariate: str | None = None, alpha: float = 0.05) -> Comparison:
    """Welch's t-test of ``metric`` (CUPED with ``covariate`` when given) via tea-tasting."""
    import tea_tasting as tt

    data = pd.concat([control.assign(_arm=0), treatment.assign(_arm=1)], ignore_index=True)
    columns = [metric, "_arm"] + ([covariate] if covariate else [])
    # A metric constant in both arms (no shares in a short test) has no interval: scipy's t
    # with scale 0 gives NaN (shown as "-"), with a RuntimeWarning per bound otherwise.
    with np.errstate(divide="ignore", invalid="ignore"):
        result = tt.Experiment(
            {metric: tt.Mean(metric, covariate, equal_var=False, confidence_level=1 - alpha)},
            variant="_arm",
        ).analyze(data[columns], control=0)[metric]
    return Comparison(
        metric, float(control[metric].mean()), float(treatment[metric].mean()),
        len(control), len(treatment), result.effect_size, result.effect_size_ci_lower,
        result.effect_size_ci_upper, result.rel_effect_size, result.rel_effect_size_ci_lower,
        result.rel_effect_size_ci_upper, result.pvalue, covariate is not None)


def poisson_bootstrap(control: np.ndarray, treatment: np.ndarray, resamples: int = 500,
                      alpha: float = 0.05, seed: int = 0,
                      chunk: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Percentile intervals of ``mean(treatment) - mean(control)`` per column of the
    ``[users, metrics]`` arrays (NaN = the user has no value of that metric)."""
    rng = np.random.default_rng(seed)

    def means(y: np.ndarray) -> np.ndarray:
        has = ~np.isnan(y)
        y0 = np.where(has, y, 0.0)
        out = []
        for start in range(0, resamples, chunk):
            w = rng.poisson(1.0, (min(chunk, resamples - start), len(y))).astype(np.float32)
            out.append((w @ y0) / np.maximum(w @ has, 1))
        return np.concatenate(out)

    diffs = means(treatment) - means(control)
    return (np.nanquantile(diffs, alpha / 2, axis=0),
            np.nanquantile(diffs, 1 - alpha / 2, axis=0))


def srm(observed: dict[str, int], expected_share: dict[str, float]) -> tuple[float, float]:
    """(chi-square statistic, p-value) of the users per arm against the planned shares."""
    arms = [a for a in expected_share if expected_share[a] > 0]
    counts = np.array([observed.get(a, 0) for a in arms], np.float64)
    share = np.array([expected_share[a] for a in arms], np.float64)
    if counts.sum() == 0 or len(arms) < 2:
        return float("nan"), float("nan")
    got = stats.chisquare(counts, share / share.sum() * counts.sum())
    return float(got.statistic), float(got.pvalue)


@dataclass(frozen=True)
class Sequential:
    pvalue: float  # always-valid: running minimum over the looks
    lo: float  # confidence sequence: running intersection over the looks
    hi: float
    pvalues: np.ndarray  # per look
    diffs: np.ndarray
    los: np.ndarray
    his: np.ndarray


def msprt(diffs: np.ndarray, variances: np.ndarray, sds: np.ndarray, alpha: float = 0.05,
          tau_sd: float = MSPRT_TAU_SD) -> Sequential:
    """mSPRT over looks: the difference in means, its variance (``s_c^2/n_c + s_t^2/n_t``) and
    the pooled standard deviation of the metric at each look.

    Mixing the alternative over N(0, tau^2) gives the likelihood ratio
    ``sqrt(V / (V + tau^2)) exp(tau^2 d^2 / (2 V (V + tau^2)))``; ``1 / LR`` is a p-value valid
    at any stopping time, and ``d +- sqrt(V (V + tau^2) / tau^2 (log((V + tau^2) / V) -
    2 log alpha))`` a (1 - alpha) confidence sequence."""
    d, v = np.asarray(diffs, np.float64), np.asarray(variances, np.float64)
    tau2 = (tau_sd * np.asarray(sds, np.float64)) ** 2
    ok = (v > 0) & (tau2 > 0) & np.isfinite(d)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_lr = 0.5 * np.log(v / (v + tau2)) + tau2 * d**2 / (2 * v * (v + tau2))
        p = np.where(ok, np.minimum(1.0, np.exp(-log_lr)), 1.0)
        half = np.sqrt(v * (v + tau2) / tau2 * (np.log((v + tau2) / v) - 2 * np.log(alpha)))
    lo = np.where(ok, d - half, -np.inf)
    hi = np.where(ok, d + half, np.inf)
    return Sequential(float(np.minimum.accumulate(p)[-1]) if len(p) else 1.0,
                      float(np.max(lo)) if len(lo) else -np.inf,
                      float(np.min(hi)) if len(hi) else np.inf, p, d, lo, hi)


def look(control: np.ndarray, treatment: np.ndarray) -> tuple[float, float, float]:
    """(difference in means, its variance, pooled sd) of one look's values (NaN dropped)."""
    c, t = control[~np.isnan(control)], treatment[~np.isnan(treatment)]
    if len(c) < 2 or len(t) < 2:
        return float("nan"), 0.0, 0.0
    vc, vt = c.var(ddof=1), t.var(ddof=1)
    return float(t.mean() - c.mean()), vc / len(c) + vt / len(t), float(
        np.sqrt((vc * (len(c) - 1) + vt * (len(t) - 1)) / (len(c) + len(t) - 2)))


def cuped(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``y - theta (x - mean x)`` with ``theta = cov(x, y) / var(x)`` over all arms together
    (the CUPED-adjusted values the sequential test looks at; NaN ``y`` stay NaN)."""
    ok = ~np.isnan(y) & ~np.isnan(x)
    if ok.sum() < 3 or np.var(x[ok]) == 0:
        return y
    theta = np.cov(x[ok], y[ok])[0, 1] / np.var(x[ok], ddof=1)
    return y - theta * (np.where(np.isnan(x), np.nanmean(x), x) - np.nanmean(x[ok]))


def adjust(pvalues: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (NaN stays NaN)."""
    p = np.asarray(pvalues, np.float64)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out.tolist()


def quantile_ci_first_index(n: int, q: float = 0.99, alpha: float = 0.05) -> int:
    """The lowest position of ``n`` sorted values :func:`quantile_ci` reads (its lower order
    statistic, or the quantile's interpolation point, less one for rounding): the values below
    it may be anything, so a reader of a large log fetches only the top ``n - index``."""
    lo_rank = int(stats.binom.ppf(alpha / 2, n, q))
    return max(0, min(lo_rank - 1, int(np.floor((n - 1) * q))) - 1)


def quantile_ci(values: np.ndarray, q: float = 0.99,
                alpha: float = 0.05) -> tuple[float, float, float]:
    """(quantile, lower, upper): a distribution-free interval from order statistics (the
    binomial count of values below the quantile), for the latency guardrail."""
    x = np.sort(values[~np.isnan(values)])
    n = len(x)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    lo_rank = int(stats.binom.ppf(alpha / 2, n, q))
    hi_rank = int(stats.binom.ppf(1 - alpha / 2, n, q))
    return (float(np.quantile(x, q)), float(x[max(0, lo_rank - 1)]),
            float(x[min(n - 1, hi_rank)]))
