"""``reelrank bench experiments``: the showcase offline A/B test, two-tower + ranker against
popularity only, with simulated users fitted to KuaiRand -> ``benchmarks/results/experiments.md``.

1. The world (``world_users`` users, ``videos`` videos) is generated and loaded, the two-tower
   (id variant, with its index), the features and the ranker are trained and deployed as
   ``make demo`` does, under ``var/bench-experiments`` (:func:`benchmarks.serve.prepare`;
   reused when present). The ranker runs in the API process (two cores: no Ray here).
2. ``reelrank experiment simulate --preset two-tower-vs-popularity`` in-process
   (:func:`experiments.simulate_cli.run_simulation`): the API and the workers as processes
   on ``port``, ``users`` simulated users over HTTP, the exposure log drained, the analysis.
3. The results file records the lift on watch time per user with its intervals, every other
   metric, the SRM check, the guardrails and the simulator's held-out fit.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from benchmarks.report import RESULTS_DIR, table, write_report

ROOT = Path("var/bench-experiments")
PRESET = "two-tower-vs-popularity"


def _ci(lo: float, hi: float, pct: bool = False) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "n/a"
    return f"[{lo:+.1%}, {hi:+.1%}]" if pct else f"[{lo:+.4g}, {hi:+.4g}]"


def _results(a) -> list[list[object]]:  # noqa: ANN001 - experiments.analysis.Analysis
    rows = []
    for arm, comps in a.comparisons.items():
        for c in comps:
            rows.append([arm, c.metric, c.control, c.treatment, f"{c.diff:+.4g}",
                         _ci(c.diff_lo, c.diff_hi), f"{c.rel:+.1%}" if np.isfinite(c.rel)
                         else "n/a", _ci(c.rel_lo, c.rel_hi, pct=True),
                         _ci(c.boot_lo, c.boot_hi), c.pvalue, c.pvalue_adj, c.seq_pvalue,
                         "yes" if c.cuped else "no", f"{c.n_control} / {c.n_treatment}"])
    return rows


def _fit_rows(fit: dict) -> list[list[object]]:
    rows = []
    for response, m in fit["test"].items():
        quality = (f"AUC {m['auc']:.3f}, ECE {m['ece']:.4f}" if "auc" in m else
                   f"R² {m['r2']:.3f}, MAE {m['mae']:.3f}, AUC(long view) "
                   f"{m['auc_long_view']:.3f}")
        rows.append([response, m["rows"], quality, m["mean_pred"], m["mean_obs"]])
    return rows


def body(outcome, info: dict, users: int, command: str) -> str:  # noqa: ANN001 - Outcome
    a, sim = outcome.analysis, outcome.simulation
    summary = sim.summary()
    watch = next(c for c in a.comparisons["treatment"] if c.metric == "watch_time_per_user")
    arms = a.arms.rename_axis("arm").reset_index() if "variant" not in a.arms else a.arms
    fit = outcome.fit
    guard = [[g.metric, g.variant, g.control, g.treatment, _ci(g.lo, g.hi), g.pvalue,
              "BREACHED" if g.breached else "ok"] for g in a.guardrails]
    return f"""
Command: `{command}`

An offline A/B test with {users:,} simulated users against the real API (HTTP, JWT per
user, `POST /api/v1/events` like the app), on a synthetic world of
{info['config']['users']:,} users and {info['config']['videos']:,} videos
({info['config']['days']} days of history). **Control** serves popularity only (every
candidate from the trending source, no exploration, every ranker task weighted 0 so the
trending order stands); **treatment** is production: the two-tower retriever (ANN) and the
multi-task ranker champions, with the other sources. Serving budgets were widened for the run
(ranker 2 s, features and sources 1 s) so the arms differ by their models, not by this
two-core machine's load. Experiment `{outcome.experiment}`;
exposures and interactions were read by the analysis from the tables the `exposures` worker
fills ({outcome.logged[0]:,} exposure rows, {outcome.logged[1]:,} interaction rows).

## Lift on watch time per user (primary)

{table(["", "control", "treatment", "difference (95 % CI)", "relative (95 % CI)",
        "bootstrap CI", "p", "always-valid p"], [[
    "minutes per user", watch.control, watch.treatment,
    f"{watch.diff:+.3f} {_ci(watch.diff_lo, watch.diff_hi)}",
    f"{watch.rel:+.1%} {_ci(watch.rel_lo, watch.rel_hi, True)}",
    _ci(watch.boot_lo, watch.boot_hi), watch.pvalue, watch.seq_pvalue]])}

## Every metric

{table(["arm", "metric", "control", "treatment", "diff", "95 % CI", "rel", "rel CI",
        "bootstrap CI", "p", "p (BH)", "p (seq.)", "CUPED", "users c / t"], _results(a))}

## Sample ratio mismatch

chi² = {a.srm_chi2:.3f}, p = {a.srm_pvalue:.3g} ({'**SRM: the split is broken**' if a.srm
else 'no mismatch at p < 0.001'}); users seen in more than one arm (excluded):
{a.excluded_users}.

{table(list(arms.columns), arms.values.tolist())}

## Guardrails

{table(["metric", "arm", "control", "treatment", "interval", "p", "status"], guard)}

## The simulation

{table(list(summary), [list(summary.values())])}

HTTP statuses: {', '.join(f'{k}: {v:,}' for k, v in sorted(sim.statuses.items()))}.

## The simulated users' fit (KuaiRand, held-out day {fit['test_day']})

Response models (LightGBM) trained on {', '.join(fit['train_days'])}
({fit['rows']['train']:,} impressions), evaluated on {fit['test_day']}
({fit['rows']['test']:,}); features shared by KuaiRand and the platform (duration,
popularity percentile, activity, prior click rate, history length, topic match, time into the
visit). The log keeps a sample of each session's impressions: estimated sampling rate
{fit['sampling_rate']:.4f}, so the per-video leave hazard averages
{fit['leave_hazard_mean']:.3f} (see `experiments/simulator_fit.py`).

{table(["response", "test rows", "held-out quality", "mean predicted", "mean observed"],
       _fit_rows(fit))}

HTML report with plots: `{outcome.report}`.
"""


def run_bench(users: int = 2000, world_users: int = 2500, videos: int = 3000, days: int = 7,
              port: int = 8023, concurrency: int = 8, seed: int = 0,
              kuairand: Path = Path("../shared/data/kuairand"),
              results_dir: Path = RESULTS_DIR) -> Path:
    from benchmarks.serve import prepare
    from core.config import get_settings
    from experiments.simulate_cli import run_simulation

    # The ranker in the API process (two cores: no Ray), and budgets wide enough that a page
    # degraded by this small machine's load is rare: the arms are compared on their models
    # (the share of degraded pages per arm is the error-rate guardrail).
    os.environ.update({"REELRANK_RANKER_BACKEND": "local", "REELRANK_RANKER_TIMEOUT_MS": "2000",
                       "REELRANK_FEATURE_READ_TIMEOUT_MS": "1000",
                       "REELRANK_FEED_SOURCES_TIMEOUT_MS": "1000"})
    info = prepare(ROOT, videos, world_users, days)  # sets the REELRANK_* paths under ROOT
    get_settings.cache_clear()
    settings = get_settings()
    name = f"{PRESET}-{datetime.now(UTC):%Y%m%d%H%M}"
    outcome = run_simulation(settings, users=users, preset_name=PRESET, name=name, port=port,
                             seed=seed, concurrency=concurrency, kuairand=kuairand,
                             out=ROOT / "reports")
    command = (f"reelrank bench experiments --users {users} --world-users {world_users} "
               f"--videos {videos} --concurrency {concurrency} --seed {seed}")
    return write_report("experiments", "Offline A/B test: two-tower + ranker vs popularity",
                        body(outcome, info, users, command), results_dir)
