"""The simulated users' response model, fitted to the real KuaiRand logs.

A simulated user answers each video the feed shows with a click (or a skip), a watch ratio, a
like and whether they leave the session afterwards. Each response is a LightGBM model over
features that exist both in KuaiRand and in our platform (:data:`FEATURES`):

- the video: log duration and popularity percentile in the catalog (KuaiRand:
  the user-history watches and earlier days' clicks of the video; the platform: its views);
- the user: activity level (KuaiRand's ``user_active_degree``, which the synthetic world
  shares), prior click rate (smoothed towards the data's mean), history length, and the share
  of their history in this video's category (the topic match);
- the session: seconds since the visit began (a visit ends after 30 idle minutes).

**Leaving.** KuaiRand-Pure keeps only the impressions of a video subset, so a user's logged
impressions are a sample of the real session: most logged impressions (~84 %) are the last
*logged* one of their visit. The leave model is fitted to that label and turned into a
per-impression hazard with the sampling rate ``r`` estimated from the same log: within a visit
the mean gap between logged impressions spans ``1/r`` impressions of mean play time, so
``r = mean play time / mean within-visit gap``; a hazard ``h`` with each later impression
logged with probability ``r`` ends the logged visit with ``p = h / (h + r - h r)``, so
``h = p r / (1 - p + p r)``.

**Fit and evaluation.** Rows before the last day train (its last day validates the number of
trees, then the model is refitted on all of them); the last day (04-30) is held out: AUC and
ECE per binary response, R², MAE and the AUC of the predicted ratio for KuaiRand's
``long_view`` for the watch ratio. :func:`fit_kuairand` returns the model and that report.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from training.datasets import kuairand
from training.ranker.metrics import auc, ece

log = logging.getLogger(__name__)

FEATURES = ("log_duration_s", "pop_pct", "activity", "user_ctr", "log_history",
            "topic_share", "log_visit_s")
# Response -> (extra inputs besides FEATURES, rows it is fitted on, kind).
RESPONSES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "click": ((), "all", "binary"),
    "watch_ratio": (("clicked",), "all", "regression"),
    "like": (("watch_ratio",), "clicked", "binary"),
    "leave": (("clicked", "watch_ratio"), "all", "binary"),
}
ACTIVITY = {"full_active": 3.0, "high_active": 2.0, "middle_active": 1.0}  # others: 0
VISIT_GAP_S = 1800.0
MAX_RATIO = 3.0
PARAMS = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 31,
          "min_data_in_leaf": 50, "feature_fraction": 0.9, "verbose": -1, "num_threads": 2,
          "seed": 0}
TZ = "Asia/Shanghai"


def activity_level(values: pd.Series) -> np.ndarray:
    return values.map(ACTIVITY).fillna(0.0).to_numpy(np.float64)


def topic_share(same: np.ndarray, total: np.ndarray, n_topics: int) -> np.ndarray:
    """The share of a user's history in a topic, smoothed by one pseudo-item spread evenly."""
    return (same + 1.0 / max(n_topics, 1)) / (total + 1.0)


def smoothed_ctr(clicks: np.ndarray, shown: np.ndarray, prior: float) -> np.ndarray:
    return (clicks + 2.0 * prior) / (shown + 2.0)


def _percentile(counts: pd.Series) -> pd.Series:
    return counts.rank(pct=True, method="average")


def kuairand_frame(root: Path) -> pd.DataFrame:
    """One row per logged KuaiRand impression: :data:`FEATURES`, the responses and ``day``."""
    tables = kuairand.load(Path(root))
    imp = tables["interactions"].to_pandas()
    items = tables["items"].to_pandas().set_index("item_id")
    users = tables["users"].to_pandas().set_index("user_id")
    hist = tables["history"].to_pandas() if tables["history"] is not None else None
    imp = imp.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
    stamp = pd.to_datetime(imp["ts"], utc=True)
    ts_s = (stamp - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
    day = pd.to_datetime(imp["ts"], utc=True).dt.tz_convert(TZ).dt.normalize()
    category = imp["item_id"].map(items["category"]).fillna("?")
    n_topics = int(items["category"].nunique())
    clicked = imp["clicked"].fillna(False).astype(bool).to_numpy()
    # Video popularity: history watches + clicks of earlier days, as a catalog percentile.
    base = (hist[hist["event"] == "view"].groupby("item_id").size() if hist is not None
            else pd.Series(dtype=float)).reindex(items.index, fill_value=0).astype(float)
    pop = np.zeros(len(imp))
    for d in sorted(day.unique()):
        before = imp[(day < d).to_numpy() & clicked].groupby("item_id").size()
        pct = _percentile(base.add(before, fill_value=0).reindex(items.index, fill_value=0))
        rows = (day == d).to_numpy()
        pop[rows] = imp.loc[rows, "item_id"].map(pct).fillna(0.0).to_numpy()
    # The user's history before each impression: sequences + earlier logged clicks.
    h_views = hist[hist["event"] == "view"] if hist is not None else imp.iloc[:0]
    h_user = h_views.groupby("user_id").size()
    h_topic = h_views.assign(c=h_views["item_id"].map(items["category"]).fillna("?")) \
        .groupby(["user_id", "c"]).size()
    prior_clicks = imp.assign(k=clicked.astype(int)).groupby("user_id")["k"].cumsum() - clicked
    prior_shown = imp.groupby("user_id").cumcount()
    prior_topic = imp.assign(k=clicked.astype(int), c=category).groupby(
        ["user_id", "c"])["k"].cumsum() - clicked
    total = imp["user_id"].map(h_user).fillna(0).to_numpy() + prior_clicks.to_numpy()
    keys = pd.MultiIndex.from_arrays([imp["user_id"], category])
    same = h_topic.reindex(keys).fillna(0).to_numpy() + prior_topic.to_numpy()
    # Visits: a new one after 30 idle minutes; leave = the last logged impression of a visit.
    gap = np.diff(ts_s, prepend=-np.inf)
    new_user = imp["user_id"].ne(imp["user_id"].shift()).to_numpy()
    starts = new_user | (gap > VISIT_GAP_S)
    visit = np.cumsum(starts)
    visit_start = pd.Series(ts_s).groupby(visit).transform("min").to_numpy()
    leave = np.append(starts[1:], True)
    duration = pd.to_numeric(imp["duration_ms"], errors="coerce").fillna(
        imp["item_id"].map(items["duration_ms"])).to_numpy(np.float64)
    watch = pd.to_numeric(imp["watch_ms"], errors="coerce").fillna(0).to_numpy(np.float64)
    return pd.DataFrame({
        "log_duration_s": np.log1p(np.nan_to_num(duration) / 1000),
        "pop_pct": pop,
        "activity": activity_level(imp["user_id"].map(users["activity"])),
        "user_ctr": smoothed_ctr(prior_clicks.to_numpy(), prior_shown.to_numpy(),
                                 float(clicked.mean())),
        "log_history": np.log1p(total),
        "topic_share": topic_share(same, total, n_topics),
        "log_visit_s": np.log1p(ts_s - visit_start),
        "clicked": clicked.astype(float),
        "watch_ratio": np.clip(np.where(duration > 0, watch / np.maximum(duration, 1), 0),
                               0, MAX_RATIO),
        "liked": imp["liked"].fillna(False).astype(bool).to_numpy().astype(float),
        "long_view": imp["long_view"].fillna(False).astype(bool).to_numpy().astype(float),
        "leave": leave.astype(float),
        "day": day.dt.strftime("%Y-%m-%d").to_numpy(),
        "gap_s": np.where(starts, np.nan, gap),
        "play_s": watch / 1000,
    })


def sampling_rate(frame: pd.DataFrame) -> float:
    """The share of a session's impressions the log keeps (see the module doc)."""
    gaps = frame["gap_s"].dropna()
    return float(min(1.0, frame["play_s"].mean() / gaps.mean())) if len(gaps) else 1.0


def hazard(p_last_logged: np.ndarray, rate: float) -> np.ndarray:
    """Per-impression leave probability from the probability that a logged impression is the
    last logged one of its visit, when each impression is logged with probability ``rate``."""
    p = np.clip(p_last_logged, 1e-6, 1 - 1e-6)
    return p * rate / (1 - p + p * rate)


@dataclass
class ResponseModel:
    """The fitted boosters, the log's sampling rate and the watch-ratio residuals (ratio to
    prediction, resampled so simulated watch ratios keep the real spread)."""

    boosters: dict[str, lgb.Booster]
    sampling_rate: float
    residuals: np.ndarray
    report: dict = field(default_factory=dict)

    def inputs(self, name: str) -> list[str]:
        return [*FEATURES, *RESPONSES[name][0]]

    def predict(self, name: str, frame: pd.DataFrame) -> np.ndarray:
        return self.boosters[name].predict(frame[self.inputs(name)].to_numpy(np.float64))

    def respond(self, frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        """Draw click, watch ratio, like and leave for each row of ``frame`` (FEATURES)."""
        frame = frame.copy()
        frame["clicked"] = (rng.random(len(frame)) < self.predict("click", frame)).astype(float)
        mean = np.clip(self.predict("watch_ratio", frame), 0, MAX_RATIO)
        noise = rng.choice(self.residuals, len(frame)) if len(self.residuals) else 1.0
        frame["watch_ratio"] = np.clip(mean * noise, 0, MAX_RATIO)
        like = rng.random(len(frame)) < self.predict("like", frame)
        frame["liked"] = (like & (frame["clicked"] > 0)).astype(float)
        leave_p = hazard(self.predict("leave", frame), self.sampling_rate)
        frame["leave"] = (rng.random(len(frame)) < leave_p).astype(float)
        return frame

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name, booster in self.boosters.items():
            booster.save_model(str(path / f"{name}.txt"))
        np.save(path / "residuals.npy", self.residuals)
        (path / "model.json").write_text(json.dumps(
            {"sampling_rate": self.sampling_rate, "features": FEATURES,
             "responses": list(self.boosters), "report": self.report}, indent=2))
        return path

    @classmethod
    def load(cls, path: Path) -> ResponseModel:
        path = Path(path)
        meta = json.loads((path / "model.json").read_text())
        boosters = {n: lgb.Booster(model_file=str(path / f"{n}.txt")) for n in meta["responses"]}
        return cls(boosters, meta["sampling_rate"], np.load(path / "residuals.npy"),
                   meta["report"])


def _rows(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    return frame[frame["clicked"] > 0] if RESPONSES[name][1] == "clicked" else frame


def _target(name: str) -> str:
    return {"click": "clicked", "like": "liked"}.get(name, name)


def _train(name: str, tr: pd.DataFrame, va: pd.DataFrame | None, rounds: int = 400
           ) -> lgb.Booster:
    inputs, _, kind = RESPONSES[name]
    cols = [*FEATURES, *inputs]
    params = PARAMS | ({"objective": "regression"} if kind == "regression" else {})
    train = lgb.Dataset(tr[cols].to_numpy(np.float64), tr[_target(name)].to_numpy())
    if va is None:
        return lgb.train(params, train, num_boost_round=rounds)
    valid = lgb.Dataset(va[cols].to_numpy(np.float64), va[_target(name)].to_numpy(),
                        reference=train)
    return lgb.train(params, train, num_boost_round=rounds, valid_sets=[valid],
                     callbacks=[lgb.early_stopping(30, verbose=False)])


def evaluate(model: ResponseModel, test: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Held-out fit per response (module doc)."""
    out: dict[str, dict[str, float]] = {}
    for name in model.boosters:
        rows = _rows(test, name)
        y, p = rows[_target(name)].to_numpy(), model.predict(name, rows)
        if RESPONSES[name][2] == "binary":
            out[name] = {"rows": len(rows), "auc": auc(y, p), "ece": ece(y, p),
                         "mean_pred": float(p.mean()), "mean_obs": float(y.mean())}
        else:
            resid = y - p
            out[name] = {"rows": len(rows), "r2": 1 - resid.var() / y.var(),
                         "mae": float(np.abs(resid).mean()),
                         "auc_long_view": auc(rows["long_view"].to_numpy(), p),
                         "mean_pred": float(p.mean()), "mean_obs": float(y.mean())}
    return out


def fit(frame: pd.DataFrame, test_day: str | None = None) -> ResponseModel:
    """Fit every response on the days before ``test_day`` (default: the last day), choosing
    tree counts on the day before it, and evaluate on ``test_day``."""
    days = sorted(frame["day"].unique())
    test_day = test_day or days[-1]
    train, test = frame[frame["day"] < test_day], frame[frame["day"] == test_day]
    valid_day = max(d for d in days if d < test_day)
    tune, valid = train[train["day"] < valid_day], train[train["day"] == valid_day]
    boosters = {}
    for name in RESPONSES:
        best = _train(name, _rows(tune, name), _rows(valid, name)).best_iteration or 100
        boosters[name] = _train(name, _rows(train, name), None, rounds=best)
    rate = sampling_rate(train)
    model = ResponseModel(boosters, rate, np.zeros(0))
    clicked = _rows(train, "like")
    pred = np.clip(model.predict("watch_ratio", train), 1e-3, MAX_RATIO)
    model.residuals = np.clip(train["watch_ratio"].to_numpy() / pred, 0, 20)[::7].astype(
        np.float32)  # every 7th training row: enough for the spread, small on disk
    model.report = {
        "train_days": [d for d in days if d < test_day], "test_day": test_day,
        "rows": {"train": len(train), "test": len(test), "train_clicked": len(clicked)},
        "sampling_rate": rate, "test": evaluate(model, test),
        "leave_hazard_mean": float(hazard(model.predict("leave", test), rate).mean()),
    }
    return model


def fit_kuairand(root: Path, out: Path) -> ResponseModel:
    """Fit on the KuaiRand log in ``root`` and save the model to ``out``."""
    frame = kuairand_frame(root)
    model = fit(frame)
    model.save(out)
    log.info("simulator response model: %s", json.dumps(model.report["test"]))
    return model
