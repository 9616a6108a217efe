"""Offline A/A tests on the simulated users, cheap enough to repeat over many seeds.

The HTTP simulation (:mod:`experiments.simulator`) drives the real API and workers, which
takes minutes per run; the question "does an A/A test on these users reject about alpha of the
time?" needs hundreds of runs. Here the same response model (fitted to KuaiRand) answers a
*fixed served page log* - the pages a popularity feed serves, the same sequence for everyone,
as the preset's control arm does - for all users at once (:func:`answer_pages`), in simulated
time; each repetition draws new responses (its seed) and a new assignment (the real salted
hash with a salt per repetition), and the real analysis (:func:`analyze_logs`: Welch/CUPED,
bootstrap, mSPRT, Benjamini-Hochberg, SRM) judges the two identical arms.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from core.clock import DAY_MS
from experiments.analysis import analyze_logs
from experiments.assignment import BUCKETS, assign_user, live
from experiments.logs import Logs
from experiments.simulator import Population, answer_pages
from experiments.simulator_fit import ResponseModel
from experiments.spec import parse_spec
from experiments.store import new_experiment

START_MS = 1_767_225_600_000  # 2026-01-01 UTC: the replay's simulated clock starts here
# The metrics the simulated users move (they neither share, follow nor report: KuaiRand's
# rates are about 0.1 %); the guardrails are the serving's, which the replay has none of.
AA_SPEC = {"name": "aa", "hypothesis": "two identical arms (A/A)",
           "variants": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}],
           "secondary_metrics": ["completion_rate", "likes_per_session", "topic_diversity"],
           "guardrail_metrics": []}


def popularity_pages(pop: Population, page_size: int = 10, pages: int = 5) -> list[list[dict]]:
    """The page log: the world's videos by views, most viewed first, as the feed's items."""
    order = pop.item_views.sort_values(ascending=False, kind="stable")
    duration = pop.duration.reindex(order.index)
    items = [{"video_id": int(v), "duration": None if np.isnan(d) else d / 1000,
              "stats": {"views": float(n)}, "position": p}
             for p, (v, n, d) in enumerate(zip(order.index, order.to_numpy(),
                                              duration.to_numpy(np.float64), strict=True))]
    return [items[k * page_size:(k + 1) * page_size] for k in range(pages)
            if items[k * page_size:(k + 1) * page_size]]


def replay(pop: Population, model: ResponseModel, users: np.ndarray,
           pages: list[list[dict]], seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every user visits once (arriving within two days), page after page of ``pages`` until
    the model says they leave: the exposure and interaction logs, as the analysis reads them."""
    rng = np.random.default_rng(seed)
    arrive = START_MS + rng.integers(0, 2 * DAY_MS, len(users))
    visitors = [pop.visitor(int(u)) for u in users]
    active = np.arange(len(users))
    shown, events = [], []
    for items in pages:
        if not len(active):
            break
        at = arrive[active] + np.round([visitors[i].visit_s * 1000 for i in active]).astype(
            np.int64)
        seen, left = answer_pages([visitors[i] for i in active], pop, model,
                                  [items] * len(active), rng)
        shown.append(pd.DataFrame({"user_id": users[active], "ts": at}))
        row = seen["visitor"].to_numpy()
        rows = pd.DataFrame({
            "user_id": users[active][row], "ts": at[row] + 1000 * seen["position"].to_numpy(),
            "action": np.where(seen["clicked"].to_numpy() > 0, "watch", "skip"),
            "watch_ms": seen["watch_ms"].to_numpy(np.float64),
            "duration_ms": seen["duration_ms"].to_numpy(np.float64),
            "topic": seen["topic"].to_numpy()})
        likes = rows[seen["liked"].to_numpy() > 0].assign(action="like", watch_ms=np.nan)
        events += [rows, likes.assign(ts=likes["ts"] + 500)]
        active = active[~left]
    exposures = pd.concat(shown, ignore_index=True).assign(latency_ms=np.nan, degraded=False)
    interactions = pd.concat(events, ignore_index=True)[
        ["user_id", "action", "ts", "watch_ms", "duration_ms", "topic"]]
    return exposures, interactions


def aa_tests(pop: Population, model: ResponseModel, users: np.ndarray,
             pages: list[list[dict]], seeds: Iterable[int], alpha: float = 0.05,
             resamples: int = 200) -> pd.DataFrame:
    """One A/A test per seed: per metric, the difference, its p-value (Welch, CUPED where a
    pre-period exists), the Benjamini-Hochberg-adjusted and the always-valid p-values, and the
    SRM p-value of the split."""
    spec = parse_spec(AA_SPEC)
    rows = []
    for seed in seeds:
        exposures, interactions = replay(pop, model, users, pages, seed)
        exp = new_experiment(spec, salt=f"aa-{seed}")
        exp.bucket_lo, exp.bucket_hi = 0, BUCKETS
        arms = [live(exp)]
        variant = {u: assign_user(arms, int(u)).variant for u in exposures["user_id"].unique()}
        exposures["variant"] = exposures["user_id"].map(variant)
        end = int(pd.concat([exposures["ts"], interactions["ts"]]).max()) + 1
        result = analyze_logs(exp, Logs(exposures, interactions, START_MS, end), alpha,
                              resamples)
        for c in result.comparisons["b"]:
            rows.append({"seed": seed, "metric": c.metric, "n_a": c.n_control,
                         "n_b": c.n_treatment, "diff": c.diff, "p": c.pvalue,
                         "p_adj": c.pvalue_adj, "p_seq": c.seq_pvalue,
                         "srm_p": result.srm_pvalue})
    return pd.DataFrame(rows)
