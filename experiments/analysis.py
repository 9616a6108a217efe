"""``analyze(session, name)``: an experiment's results from its logs, as one object the CLI
prints, the report plots and the notebooks re-plot.

Steps: per-user metrics (:mod:`experiments.metrics`) - read from the rows the ``exposures``
worker keeps (:mod:`experiments.aggregates`; about one per user), or, for an explicit window
end, computed from the exposures and the exposed users' interactions (and the pre-period's);
users seen in more than one arm are excluded (and counted: a tampered or broken assignment
shows there and in the SRM check); then for each treatment arm against control and each
per-user metric: Welch's t-test, CUPED where a pre-period value exists, a Poisson-bootstrap
interval, the always-valid mSPRT p-value and confidence sequence, Benjamini-Hochberg across
the metrics; page-level guardrails (latency p99 with order-statistic intervals, share of
degraded pages); the SRM chi-square; and the primary metric's cumulative lift day by day.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from experiments import aggregates as agg
from experiments import metrics as m
from experiments import stats
from experiments.aggregates import COVARIATE, PageStats
from experiments.assignment import HOLDOUT
from experiments.catalog import METRICS
from experiments.logs import PRE_PERIOD_DAYS, Logs, end_of, load, start_ms
from experiments.models import Experiment
from experiments.store import get

__all__ = ["PRE_PERIOD_DAYS", "Analysis", "Guardrail", "Logs", "analyze", "analyze_logs", "load"]
SRM_ALPHA = 0.001  # a mismatch this unlikely by chance means the assignment is broken


@dataclass
class Guardrail:
    metric: str
    variant: str
    control: float
    treatment: float
    lo: float  # treatment's interval (latency) or the difference's (error rate)
    hi: float
    pvalue: float
    breached: bool


@dataclass
class Analysis:
    experiment: dict
    control: str
    arms: pd.DataFrame  # per arm: users, expected share, observed share, pages
    srm_chi2: float
    srm_pvalue: float
    excluded_users: int  # seen in more than one arm
    comparisons: dict[str, list[stats.Comparison]]  # treatment arm -> one per metric
    guardrails: list[Guardrail]
    cumulative: dict[str, pd.DataFrame]  # treatment arm -> day, diff, lo, hi, p (primary)
    timings: dict[str, float] = field(default_factory=dict)
    alpha: float = 0.05

    @property
    def srm(self) -> bool:
        """True when the users per arm do not match the split (the results are suspect)."""
        return bool(self.srm_pvalue < SRM_ALPHA)

    def table(self) -> pd.DataFrame:
        """One row per (treatment arm, metric): the numbers the CLI prints."""
        rows = []
        for arm, comps in self.comparisons.items():
            for c in comps:
                rows.append({
                    "variant": arm, "metric": c.metric, "control": c.control,
                    "treatment": c.treatment, "diff": c.diff, "ci": (c.diff_lo, c.diff_hi),
                    "rel": c.rel, "rel_ci": (c.rel_lo, c.rel_hi),
                    "boot_ci": (c.boot_lo, c.boot_hi), "p": c.pvalue, "p_adj": c.pvalue_adj,
                    "p_seq": c.seq_pvalue, "seq_ci": (c.seq_lo, c.seq_hi), "cuped": c.cuped,
                    "n": (c.n_control, c.n_treatment)})
        return pd.DataFrame(rows)


@dataclass
class _PerUser:
    """The analysis's inputs: per-user rows (arm, first exposure, metrics, covariates), their
    watch minutes per day, the day ends, and per arm the pages and page guardrail data."""

    rows: pd.DataFrame
    minutes: np.ndarray
    ends: np.ndarray
    pages: pd.Series
    page_stats: dict[str, PageStats]


def analyze(session: Session, name: str, end_ms: int | None = None, alpha: float = 0.05,
            resamples: int = 500) -> Analysis:
    """Everything about experiment ``name`` (see the module doc). The window ends at the stop
    (or now) from the stored per-user rows; an explicit ``end_ms`` reads the logs instead."""
    t = time.perf_counter()
    exp = get(session, name)
    if end_ms is not None:
        logs = load(session, exp, end_ms)
        read_s = time.perf_counter() - t
        out = analyze_logs(exp, logs, alpha, resamples)
        out.timings = {"read_s": read_s, **out.timings}
        return out
    end = end_of(exp)
    rows, minutes, ends, pages = agg.read(session, exp, end)
    inputs = _PerUser(rows, minutes, ends, pages, agg.page_stats(session, exp, alpha))
    read_s = time.perf_counter() - t
    out = _analyze(exp, inputs, start_ms(exp), alpha, resamples)
    out.timings = {"read_s": read_s, "metrics_s": 0.0, **out.timings}
    return out


def analyze_logs(exp: Experiment, logs: Logs, alpha: float = 0.05,
                 resamples: int = 500) -> Analysis:
    """The analysis of already loaded logs (an explicit window end; the tests call it too)."""
    t = time.perf_counter()
    ends = m.day_ends(logs.start_ms, logs.end_ms)
    rows, minutes = agg.compute(logs.start_ms, logs.exposures, logs.interactions, logs.end_ms,
                                ends)
    inputs = _PerUser(rows, minutes, ends, logs.exposures["variant"].value_counts(),
                      agg.page_stats_of(logs.exposures))
    metrics_s = time.perf_counter() - t
    out = _analyze(exp, inputs, logs.start_ms, alpha, resamples)
    out.timings = {"metrics_s": metrics_s, **out.timings}
    return out


def _analyze(exp: Experiment, data: _PerUser, start: int, alpha: float,
             resamples: int) -> Analysis:
    from experiments.store import describe

    t = time.perf_counter()
    control = exp.variants[0].name
    switched = (data.rows["n_variants"] > 1).to_numpy()
    users = data.rows[~switched]
    frame = users[[*m.PER_USER, *map(COVARIATE.format, m.PER_USER), "variant"]]
    arms = _arms(exp, users, data.pages)
    chi2, p_srm = stats.srm(arms["users"].to_dict(), arms["expected_share"].to_dict())
    names = [n for n in dict.fromkeys([exp.primary_metric, *exp.secondary_metrics,
                                       *exp.guardrail_metrics]) if METRICS[n].per_user]
    comparisons = {v.name: _compare(frame, control, v.name, names, alpha, resamples)
                   for v in exp.variants[1:]}
    guardrails = _guardrails(exp, data.page_stats, control, alpha)
    cumulative = {}
    if METRICS[exp.primary_metric].per_user and exp.primary_metric == "watch_time_per_user":
        values = m.cumulate(users["t0"].to_numpy(), data.minutes[~switched], data.ends)
        pre_watch = frame[COVARIATE.format("watch_time_per_user")]
        values = np.column_stack([stats.cuped(values[:, j], pre_watch.to_numpy(np.float64))
                                  for j in range(values.shape[1])])
        arm_of = users["variant"].to_numpy()
        for v in exp.variants[1:]:
            cumulative[v.name] = _cumulative(data.ends, values[arm_of == control],
                                             values[arm_of == v.name], alpha)
    stats_s = time.perf_counter() - t
    return Analysis(describe(exp), control, arms, chi2, p_srm, int(switched.sum()), comparisons,
                    guardrails, cumulative, {"stats_s": stats_s}, alpha)


def _arms(exp: Experiment, users: pd.DataFrame, pages: pd.Series) -> pd.DataFrame:
    inside = 1 - exp.holdout_pct / 100
    share = {v.name: inside * v.weight_pct / 100 for v in exp.variants}
    if exp.holdout_pct:
        share[HOLDOUT] = exp.holdout_pct / 100
    counts = users["variant"].value_counts()
    arms = pd.DataFrame({"expected_share": pd.Series(share)})
    arms["users"] = counts.reindex(arms.index, fill_value=0).astype(int)
    arms["observed_share"] = arms["users"] / max(int(arms["users"].sum()), 1)
    arms["pages"] = pages.reindex(arms.index, fill_value=0).astype(int)
    return arms


def _compare(frame: pd.DataFrame, control: str, arm: str, names: list[str], alpha: float,
             resamples: int) -> list[stats.Comparison]:
    c_all, t_all = frame[frame["variant"] == control], frame[frame["variant"] == arm]
    out = []
    for name in names:
        c, t = c_all[c_all[name].notna()], t_all[t_all[name].notna()]
        if len(c) < 2 or len(t) < 2:
            continue
        cov = COVARIATE.format(name)
        usable = cov in frame and frame[cov].notna().any() and frame[cov].std() > 0
        if usable:  # users without a pre-period value get the mean (CUPED stays unbiased)
            fill = frame[cov].mean()
            c, t = c.assign(**{cov: c[cov].fillna(fill)}), t.assign(**{cov: t[cov].fillna(fill)})
        comp = stats.welch(c, t, name, cov if usable else None, alpha)
        yc, yt = c[name].to_numpy(np.float64), t[name].to_numpy(np.float64)
        if usable:  # the sequential test looks at the same CUPED-adjusted values
            both = stats.cuped(np.r_[yc, yt], np.r_[c[cov].to_numpy(), t[cov].to_numpy()])
            yc, yt = both[:len(yc)], both[len(yc):]
        d, var, sd = stats.look(yc, yt)
        seq = stats.msprt(np.array([d]), np.array([var]), np.array([sd]), alpha)
        out.append(stats.Comparison(**{**comp.__dict__, "seq_pvalue": seq.pvalue,
                                       "seq_lo": seq.lo, "seq_hi": seq.hi}))
    if not out:
        return out
    lo, hi = stats.poisson_bootstrap(c_all[[x.metric for x in out]].to_numpy(np.float64),
                                     t_all[[x.metric for x in out]].to_numpy(np.float64),
                                     resamples, alpha)
    adjusted = stats.adjust([x.pvalue for x in out])
    return [stats.Comparison(**{**x.__dict__, "boot_lo": float(lo[j]), "boot_hi": float(hi[j]),
                                "pvalue_adj": adjusted[j]}) for j, x in enumerate(out)]


def _guardrails(exp: Experiment, pages: dict[str, PageStats], control: str,
                alpha: float) -> list[Guardrail]:
    out: list[Guardrail] = []
    if control not in pages:
        return out
    base = pages[control]
    c_p99, _, c_hi = stats.quantile_ci(base.latency, agg.LATENCY_Q, alpha)
    for v in exp.variants[1:]:
        if v.name not in pages:
            continue
        arm = pages[v.name]
        if "latency_p99_ms" in exp.guardrail_metrics:
            p99, lo, hi = stats.quantile_ci(arm.latency, agg.LATENCY_Q, alpha)
            out.append(Guardrail("latency_p99_ms", v.name, c_p99, p99, lo, hi, float("nan"),
                                 bool(lo > c_hi)))
        if "error_rate" in exp.guardrail_metrics:
            cmp = stats.welch(pd.DataFrame({"err": base.degraded}),
                              pd.DataFrame({"err": arm.degraded}), "err", None, alpha)
            out.append(Guardrail("error_rate", v.name, cmp.control, cmp.treatment, cmp.diff_lo,
                                 cmp.diff_hi, cmp.pvalue,
                                 bool(cmp.diff_lo > 0 and cmp.pvalue < alpha)))
    return out


def _cumulative(ends: np.ndarray, control: np.ndarray, treatment: np.ndarray,
                alpha: float) -> pd.DataFrame:
    looks = [stats.look(control[:, d], treatment[:, d]) for d in range(len(ends))]
    d, var, sd = (np.array(x) for x in zip(*looks, strict=True))
    seq = stats.msprt(d, var, sd, alpha)
    base = np.array([np.nanmean(control[:, j]) if np.isfinite(control[:, j]).any() else np.nan
                     for j in range(len(ends))])
    return pd.DataFrame({
        "day_end": pd.to_datetime(ends, unit="ms", utc=True), "diff": d,
        "rel": d / base, "seq_lo": seq.los, "seq_hi": seq.his,
        "p_seq": np.minimum.accumulate(seq.pvalues)})
