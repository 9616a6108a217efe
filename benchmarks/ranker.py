"""``reelrank bench ranker``: the ranker against its baselines on KuaiRand, and its latency.

Features are built once from KuaiRand (into ``<var>/bench/ranker-features``, leaving the
configured store alone); then, per seed, the pipeline trains the multi-task ranker, LightGBM
per task and the single-task networks on the same encoded features (on KuaiRand-Pure:
04-25..04-28 train, 04-29 validates every choice (``training.ranker.selection``: loss weights,
learning rate, epochs, LightGBM's parameters, single- vs multi-task, calibration), refit on
04-25..04-29) and tests on 04-30: the log's last day, whatever log it is given. Metrics are
means over seeds with a 95 % Student-t interval over seeds (``scipy.stats.t``); ranker vs
LightGBM is a paired difference per seed, and a "win" only when its interval excludes 0.
Grids, trials and chosen values go into the results file. Latency is
:meth:`RankerBundle.predict` for one user and 500 candidate rows of the test day, with the
network in float32 and in bfloat16 (serving's precision on CPUs with native bfloat16).
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from benchmarks.report import RESULTS_DIR, table, write_report
from core.config import get_settings
from core.dataset_schema import DataError
from training.ranker.bundle import RankerBundle
from training.ranker.history import HISTORY_COLUMN
from training.ranker.pipeline import (
    RunConfig,
    build_feature_repo,
    default_end,
    feature_columns,
    point_in_time,
    run,
)
from training.ranker.trainer import TrainConfig

MODELS = ("ranker", "lightgbm", "single-task")
PRECISIONS = ("float32", "bfloat16")
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
    if bundle.featurizer.history_len:  # the attention reads one real history per request
        user[HISTORY_COLUMN] = max(rows[HISTORY_COLUMN], key=len)
        flat = flat.assign(**{HISTORY_COLUMN: [user[HISTORY_COLUMN]] * len(flat)})
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


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): a Student-t interval over seeds (NaN bounds with one seed)."""
    values = np.asarray(values, np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, np.nan, np.nan
    sem = float(stats.sem(values))
    if sem == 0:  # identical over seeds (a deterministic model): the interval is the point
        return mean, mean, mean
    low, high = stats.t.interval(level, len(values) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def verdict(low: float, high: float) -> str:
    """'win' / 'loss' only when the difference's interval excludes 0."""
    if np.isnan(low):
        return "– (one seed)"
    return "win" if low > 0 else "loss" if high < 0 else "tie"


def _choices(outcomes: list) -> str:  # noqa: ANN001
    """Grids, chosen values per seed and seed 0's trials (all on the validation day)."""
    first = outcomes[0].selection
    grids = RunConfig().grids
    per_seed = [[i, o.selection.train.loss_weights.get("like", 1.0), o.selection.train.lr,
                 "on" if o.selection.history else "off", o.selection.train.epochs,
                 o.selection.chosen,
                 ", ".join(f"{k}={v}" for k, v in o.selection.lgb_params.get("click", {}).items()),
                 ", ".join(f"{k}={v}" for k, v in
                           o.selection.lgb_params.get("long_view", {}).items())]
                for i, o in enumerate(outcomes)]
    net = pd.DataFrame(first.net_trials)
    lgb = pd.DataFrame(first.lgb_trials)
    cal = pd.DataFrame(first.calibration_trials)
    return f"""
Grids (budget: {grids.budget} trials per model family): auxiliary-loss weight
{list(grids.aux_weights)} x learning rate {list(grids.learning_rates)} x watch-history
attention {["on" if h else "off" for h in grids.history]} for the network;
LightGBM {', '.join(f'{k} {list(v)}' for k, v in grids.lightgbm.items())} (random draws, the
hand-set defaults first). Main tasks (click, long view) choose by validation GAUC, the others
by validation log-loss.

{table(["seed", "aux weight", "lr", "history", "epochs", "single vs multi (valid)",
        "LightGBM click",
        "LightGBM long view"], per_seed)}

Network trials, seed 0 (validation day):

{table(list(net.columns), net.round(4).values.tolist())}

LightGBM trials, seed 0 (validation day):

{table(list(lgb.columns), lgb.round(4).values.tolist())}

Validation GAUC of the chosen models, seed 0: {first.valid_gauc}.

Calibration check, seed 0 (Platt scaling fitted on half the validation users, ECE on the
other half, both ways; `RunConfig.calibrate` is off, so it is reported, not applied):

{table(list(cal.columns), cal.round(4).values.tolist()) if len(cal) else "(none)"}
"""


def _precision(outcomes: list) -> str:  # noqa: ANN001
    rows = []
    for task in ("click", "long_view"):
        gauc = [o.selection.precision_gauc for o in outcomes]
        if not all(task in g.get("bfloat16", {}) for g in gauc):
            continue
        full = np.array([g["float32"][task] for g in gauc])
        diff = np.array([g["bfloat16"][task] for g in gauc]) - full
        mean, low, high = interval(diff)
        rows.append([task, f"{full.mean():.4f}", f"{mean:+.5f}", f"[{low:+.5f}, {high:+.5f}]"])
    return table(["task", "valid GAUC float32", "bfloat16 - float32", "95 % CI"], rows)


def _paired(tables: pd.DataFrame) -> str:
    """Ranker minus LightGBM per seed, GAUC and ECE, with the difference's interval."""
    rows = []
    for task in ("click", "long_view"):
        for metric in ("gauc", "ece"):
            a = tables[(tables.task == task) & (tables.model == "ranker")].set_index("seed")
            b = tables[(tables.task == task) & (tables.model == "lightgbm")].set_index("seed")
            if a.empty or b.empty:
                continue
            diff = (a[metric] - b[metric]).to_numpy()
            mean, low, high = interval(diff)
            better = verdict(low, high) if metric == "gauc" else verdict(-high, -low)
            rows.append([task, metric, f"{mean:+.4f}", f"[{low:+.4f}, {high:+.4f}]", better])
    return table(["task", "metric", "ranker - LightGBM (mean)", "95 % CI (t, seeds)",
                  "verdict (ECE: lower wins)"], rows)


def _fmt(mean: float, sd: float | None = None) -> str:
    if np.isnan(mean):
        return "–"
    return f"{mean:.4f}" if sd is None or np.isnan(sd) else f"{mean:.4f} ± {sd:.4f}"


def run_bench(data: Path, seeds: int = 3, threads: int = 2,
              results_dir: Path = RESULTS_DIR, test_day: str | None = None) -> Path:
    """The benchmark with ``test_day`` as the test, by default the log's last day (as
    ``reelrank train ranker`` splits; 2022-04-30 on the published KuaiRand-Pure, the same
    command tests a later log on its own last day). A day before the last one makes the same
    protocol one day earlier, on rows before it and that day only (``ranker-<day>.md``): the
    check of a choice before the real test day is read (the later days are dropped first)."""
    from training.retrieval.pipeline import load_data

    load = os.getloadavg()[0]
    started = time.perf_counter()
    ds = load_data("kuairand", data)
    settings = get_settings()
    repo = Path(settings.var_dir) / "bench" / "ranker-features"
    build_feature_repo(settings, repo, ds)
    built = time.perf_counter()
    frame = point_in_time(settings, repo, ds.interactions, ds.items, history=ds.history)
    joined = time.perf_counter()
    end, last = split_day(frame["ts"], test_day)
    frame = frame[frame["ts"] < end + pd.Timedelta(days=1)]  # one test day
    test_day = _local_day(end).strftime("%Y-%m-%d")
    days = _days(frame, end)
    outcomes = [run(frame, end, RunConfig(train=TrainConfig(seed=s), threads=threads))
                for s in range(seeds)]
    first = outcomes[0]
    tables = pd.concat([o.eval_table.assign(seed=i) for i, o in enumerate(outcomes)])
    mean = tables.groupby(["task", "model"]).mean(numeric_only=True)
    half = tables.groupby(["task", "model"])["gauc"].agg(
        lambda v: (interval(v.dropna().to_numpy())[2] - v.mean()) if v.notna().any() else np.nan)

    rows = []
    for task in first.tasks:
        for model in MODELS:
            if (task, model) not in mean.index:
                continue
            m, s = mean.loc[(task, model)], {"gauc": half.loc[(task, model)]}
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
    header = ["task", "model", "AUC", "log-loss", f"GAUC (± 95 % CI, {seeds} seeds)",
              "GAUC users",
              "GAUC / LightGBM", "ECE", "mean pred / observed"]

    secs = pd.DataFrame([o.seconds for o in outcomes]).mean()
    cost = pd.DataFrame([o.cost for o in outcomes]).mean()
    lat = {}
    for precision in PRECISIONS:
        served = copy.deepcopy(first.bundle).to_precision(precision)
        for k in (1, 2):
            torch.set_num_threads(k)
            lat[precision, k] = latency(served, frame[frame["ts"] >= end])
    torch.set_num_threads(threads)
    calib = first.calibration[first.calibration["task"].isin(["click", "long_view"])]
    cat, num = feature_columns(frame)
    body = f"""
KuaiRand-Pure (Gao et al., CIKM 2022, CC BY-SA 4.0): {len(frame):,} logged impressions,
train on {days['first']}..{days['valid']} (UTC+8; {days['valid']} validates every choice listed
below, then every model is refitted on all {days['train']} days), test on {test_day}
({first.rows['test']:,} impressions). Every
model reads the same point-in-time features from the feature store
(`features.training_set`: {len(num)} numeric, {len(cat)} categorical: {', '.join(cat)}),
encoded once by the ranker's featurizer.

- **ranker**: MMoE ({first.bundle.model.cfg.n_experts} experts) over DCN-v2 crosses, one tower per
  task ({', '.join(first.tasks)}), EMA weights; best epoch {first.best_epoch}. With the history
  input (chosen on {days['valid']} per seed, below), DIN-style target attention over the user's last
  {RunConfig().history_len} watched videos strictly before the impression (clicked impressions
  of the log, after KuaiRand's pre-log `user_sequences` views), each described by its id,
  creator and topic embeddings like the candidate. LightGBM and the flat features do not see
  this list.
- **lightgbm**: LightGBM 4.7 per task, ids as categorical features, parameters searched and
  trees early-stopped on {days['valid']} (below).
- **single-task**: the same network with one task and one expert, per task.

GAUC: per-user AUC averaged with impression weights over users with both classes on the test
day. Rare tasks (follow, share, hate) have a few dozen positives: their AUC and GAUC are noise.

## Per task (means over {seeds} seeds)

{table(header, rows)}

## Training time (mean per seed, {threads} threads)

{table(["model", "seconds (search + refit)"], [[k, f"{v:.1f}"] for k, v in secs.items()])}

Ranker refit: {cost['ranker_examples_per_s']:,.0f} examples/s, {cost['ranker_s_per_epoch']:.1f} s
per epoch.

## Ranker vs tuned LightGBM, paired by seed

{_paired(tables)}

## Choices, on the validation day only

{_choices(outcomes)}

Features: batch snapshots {built - started:.1f} s (incl. loading KuaiRand), point-in-time
join of {len(frame):,} impressions {joined - built:.1f} s.

## Scoring latency, {CANDIDATES} candidates, one request

Load average when the benchmark started: {load:.1f} (other jobs share these cores; a second
torch thread only helps on an idle machine).

{table(["input", "network", "threads", "p50 ms", "p99 ms"], [
        [name, precision, k, f"{lat[precision, k][key + '_p50']:.2f}",
         f"{lat[precision, k][key + '_p99']:.2f}"]
        for key, name in (("split", "user scalars + candidate frame (`predict`)"),
                          ("frame", "one flat frame (`score`, the feed's call)"))
        for precision in PRECISIONS for k in (1, 2)])}

The feed serves the network in bfloat16 where the CPU multiplies it natively
(`ranker_precision=auto`). What that costs in ranking quality, on the validation day (the
tuned network of each seed; GAUC bfloat16 - float32, 95 % Student-t interval over seeds):

{_precision(outcomes)}

## How the test day differs (features only: no label is read)

{_shift(frame, end, num)}

## Calibration of the ranker (seed 0, test day, equal-count buckets)

{table(["task", "bucket", "n", "predicted", "observed"],
       [[r.task, int(r.bucket), int(r.n), f"{r.predicted:.3f}", f"{r.observed:.3f}"]
        for r in calib.itertuples()])}
"""
    name, title = "ranker", "Ranker vs LightGBM vs single-task on KuaiRand"
    if not last:
        name, title = f"ranker-{test_day}", f"{title}, test day {test_day}"
    return write_report(name, title, body, results_dir)


def _shift(frame: pd.DataFrame, end: pd.Timestamp, numeric: list[str], top: int = 8) -> str:
    """Impressions per local day with its weekday, and the numeric features whose mean moved
    most from the validation day to the test day (in training standard deviations) beside the
    step from the day before to the validation day: a calibration that holds on validation and
    not on the test day is read against these."""
    day, test = _local_day(frame["ts"]), _local_day(end)
    valid = test - pd.Timedelta(days=1)
    counts = day.value_counts().sort_index()
    per_day = table(["day (UTC+8)", "weekday", "impressions"],
                    [[d.strftime("%Y-%m-%d"), d.day_name(), f"{n:,}"] for d, n in counts.items()])
    x = frame[numeric].astype(float)
    std = x[day < test].std().replace(0.0, np.nan)
    mean = {d: x[day == d].mean() for d in (valid - pd.Timedelta(days=1), valid, test)}
    step = {d: (mean[d] - mean[d - pd.Timedelta(days=1)]) / std for d in (valid, test)}
    moved = step[test].dropna()
    moved = moved.reindex(moved.abs().sort_values(ascending=False).index)[:top]
    rows = [[c, f"{mean[valid][c]:.3g}", f"{mean[test][c]:.3g}", f"{v:+.2f}",
             f"{step[valid][c]:+.2f}"] for c, v in moved.items()]
    return per_day + "\n\n" + table(
        ["feature", "validation-day mean", "test-day mean", "test - validation day (training std)",
         "validation - day before"], rows)


def _local_day(ts: pd.Series | pd.Timestamp) -> pd.Series | pd.Timestamp:
    """KuaiRand's local (UTC+8) day of each timestamp (the days the report names)."""
    from training.retrieval.pipeline import TIMEZONES

    if isinstance(ts, pd.Timestamp):
        return ts.tz_convert(TIMEZONES["kuairand"]).normalize()
    return pd.to_datetime(ts, utc=True).dt.tz_convert(TIMEZONES["kuairand"]).dt.normalize()


def split_day(ts: pd.Series, test_day: str | None) -> tuple[pd.Timestamp, bool]:
    """The start of the test day (UTC) and whether it is the log's last day: ``test_day``
    (a KuaiRand local date) or, when None, the last day, as ``reelrank train ranker`` splits."""
    from training.retrieval.pipeline import TIMEZONES, parse_day

    last = default_end(ts, TIMEZONES["kuairand"])
    end = parse_day(test_day, "kuairand") if test_day else last
    if not (ts >= end).any():
        raise DataError(f"--test-day {test_day}: the log has no impressions that day")
    return end, end == last


def _days(frame: pd.DataFrame, end: pd.Timestamp) -> dict[str, object]:
    """The local (UTC+8) days of the split at ``end``: first, validation, training days."""
    first, test = _local_day(frame["ts"]).min(), _local_day(end)
    return {"first": first.strftime("%Y-%m-%d"),
            "valid": (test - pd.Timedelta(days=1)).strftime("%Y-%m-%d"),
            "train": (test - first).days}
