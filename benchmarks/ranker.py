"""``reelrank bench ranker``: the ranker against its baselines on KuaiRand, and its latency.

Features are built once from KuaiRand (into ``<var>/bench/ranker-features``, leaving the
configured store alone); then, per seed, the pipeline trains the multi-task ranker, LightGBM
per task and the single-task networks on the same encoded features (04-25..04-28 train, 04-29
validates, refit on 04-25..04-29) and tests on 04-30. Metrics are means over seeds; the GAUC
spread (standard deviation over seeds) says how much of a gap is noise. Latency is
:meth:`RankerBundle.predict` for one user and 500 candidate rows of the test day.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.report import RESULTS_DIR, table, write_report
from core.config import get_settings
from training.ranker.bundle import RankerBundle
from training.ranker.pipeline import (
    RunConfig,
    build_feature_repo,
    feature_columns,
    point_in_time,
    run,
)
from training.ranker.trainer import TrainConfig

MODELS = ("ranker", "lightgbm", "single-task")
TEST_DAY = "2022-04-30"
CANDIDATES = 500


def latency(bundle: RankerBundle, frame: pd.DataFrame, n: int = CANDIDATES,
            repeats: int = 200) -> dict[str, float]:
    """p50 / p99 ms of scoring ``n`` candidates: per-request scalars + a candidate frame, and
    one flat frame (the feed's contract)."""
    rows = frame.sample(n, replace=len(frame) < n, random_state=0).reset_index(drop=True)
    user_cols = [c for c in bundle.columns if c.startswith(("u_", "ctx_")) or c == "user_id"]
    user = {c: rows[c].iloc[0] for c in user_cols if c in rows}
    items = rows[[c for c in bundle.columns if c in rows and c not in user]]
    flat = rows[[c for c in bundle.columns if c in rows]]
    out = {}
    for name, call in (("split", lambda: bundle.predict(items, user)),
                       ("frame", lambda: bundle.score(flat))):
        for _ in range(20):
            call()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
        out[f"{name}_p50"], out[f"{name}_p99"] = np.percentile(times, [50, 99]).tolist()
    return out


def _fmt(mean: float, sd: float | None = None) -> str:
    if np.isnan(mean):
        return "–"
    return f"{mean:.4f}" if sd is None or np.isnan(sd) else f"{mean:.4f} ± {sd:.4f}"


def run_bench(data: Path, seeds: int = 3, threads: int = 2,
              results_dir: Path = RESULTS_DIR) -> Path:
    from training.retrieval.pipeline import load_data, parse_day

    load = os.getloadavg()[0]
    started = time.perf_counter()
    ds = load_data("kuairand", data)
    settings = get_settings()
    repo = Path(settings.var_dir) / "bench" / "ranker-features"
    build_feature_repo(settings, repo, ds)
    built = time.perf_counter()
    frame = point_in_time(settings, repo, ds.interactions, ds.items)
    joined = time.perf_counter()
    end = parse_day(TEST_DAY, "kuairand")
    outcomes = [run(frame, end, RunConfig(train=TrainConfig(seed=s), threads=threads))
                for s in range(seeds)]
    first = outcomes[0]
    tables = pd.concat([o.eval_table.assign(seed=i) for i, o in enumerate(outcomes)])
    mean = tables.groupby(["task", "model"]).mean(numeric_only=True)
    sd = tables.groupby(["task", "model"]).std(numeric_only=True)

    rows = []
    for task in first.tasks:
        for model in MODELS:
            if (task, model) not in mean.index:
                continue
            m, s = mean.loc[(task, model)], sd.loc[(task, model)]
            base = mean.loc[(task, "lightgbm")] if (task, "lightgbm") in mean.index else None
            if "auc" in m and not np.isnan(m["auc"]):
                ratio = "" if base is None else f"{m['gauc'] / base['gauc']:.3f}"
                rows.append([task, model, _fmt(m["auc"]), _fmt(m["logloss"]),
                             _fmt(m["gauc"], s["gauc"]), int(m["gauc_users"]), ratio,
                             _fmt(m["ece"]), f"{m['mean_pred']:.4f} / {m['mean_obs']:.4f}"])
            else:
                rows.append([task, model, f"mae {m['mae']:.4f}", f"rmse {m['rmse']:.4f}", "–",
                             "–", "", _fmt(m["ece"]), f"{m['mean_pred']:.4f} / "
                             f"{m['mean_obs']:.4f}"])
    header = ["task", "model", "AUC", "log-loss", f"GAUC (± sd, {seeds} seeds)", "GAUC users",
              "GAUC / LightGBM", "ECE", "mean pred / observed"]

    secs = pd.DataFrame([o.seconds for o in outcomes]).mean()
    lat = {}
    for k in (1, 2):
        torch.set_num_threads(k)
        lat[k] = latency(first.bundle, frame[frame["ts"] >= end])
    torch.set_num_threads(threads)
    calib = first.calibration[first.calibration["task"].isin(["click", "long_view"])]
    cat, num = feature_columns(frame)
    body = f"""
KuaiRand-Pure (Gao et al., CIKM 2022, CC BY-SA 4.0): {len(frame):,} logged impressions,
train on 2022-04-25..29 (UTC+8; 04-29 validates epochs / trees, then every model is refitted on
all five days), test on {TEST_DAY} ({first.rows['test']:,} impressions). Every model reads the
same point-in-time features from the feature store (`features.training_set`: {len(num)} numeric,
{len(cat)} categorical: {', '.join(cat)}), encoded once by the ranker's featurizer.

- **ranker**: MMoE ({first.bundle.model.cfg.n_experts} experts) over DCN-v2 crosses, one tower per
  task ({', '.join(first.tasks)}), EMA weights; best epoch {first.best_epoch}.
- **lightgbm**: LightGBM 4.7 per task, ids as categorical features, trees early-stopped on 04-29.
- **single-task**: the same network with one task and one expert, per task.

GAUC: per-user AUC averaged with impression weights over users with both classes on the test
day. Rare tasks (follow, share, hate) have a few dozen positives: their AUC and GAUC are noise.

## Per task (means over {seeds} seeds)

{table(header, rows)}

## Training time (mean per seed, {threads} threads)

{table(["model", "seconds (tune + refit)"], [[k, f"{v:.1f}"] for k, v in secs.items()])}

Features: batch snapshots {built - started:.1f} s (incl. loading KuaiRand), point-in-time
join of {len(frame):,} impressions {joined - built:.1f} s.

## Scoring latency, {CANDIDATES} candidates, one request

Load average when the benchmark started: {load:.1f} (other jobs share these cores; a second
torch thread only helps on an idle machine).

{table(["input", "threads", "p50 ms", "p99 ms"], [
        [name, k, f"{lat[k][key + '_p50']:.2f}", f"{lat[k][key + '_p99']:.2f}"]
        for key, name in (("split", "user scalars + candidate frame (`predict`)"),
                          ("frame", "one flat frame (`score`, the feed's call)"))
        for k in (1, 2)])}

## Calibration of the ranker (seed 0, test day, equal-count buckets)

{table(["task", "bucket", "n", "predicted", "observed"],
       [[r.task, int(r.bucket), int(r.n), f"{r.predicted:.3f}", f"{r.observed:.3f}"]
        for r in calib.itertuples()])}
"""
    return write_report("ranker", "Ranker vs LightGBM vs single-task on KuaiRand", body,
                        results_dir)
