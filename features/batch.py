"""Batch features: point-in-time snapshots of the interaction log, one parquet file per view.

A snapshot at time ``S`` uses only events with ``ts < S`` and carries ``event_timestamp = S``,
so Feast's point-in-time join gives an impression at ``T`` the newest snapshot ``<= T`` and
never anything later. Snapshots fall every ``freq`` (a day by default; the stream job covers
the last hour). Rates are smoothed towards the global rate *as of the same snapshot*
(:data:`SMOOTHING` pseudo-events), so a video seen twice is not "100 % liked" and the prior
itself holds no future information; the priors per snapshot go to ``meta.json``.

Inputs are the canonical tables of ``core.dataset_schema`` as DataFrames (this package may not
import the dataset loader): ``interactions``, ``items``, ``users`` and optionally ``follows``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.clock import DAY_MS, HOUR_MS, utcnow
from features.repo import BATCH_VIEWS, PRIOR, TS_FIELD, VIEW_BY_NAME
from features.windows import EventIndex

SMOOTHING = 20.0
ACTIVITY = {"low_active": 0, "middle_active": 1, "high_active": 2, "full_active": 3}
EXPOSURE_EVENTS = ("impression", "view", "watch")
CLICK_EVENTS = ("click", "view", "watch")
MAX_RATIO = 2.0  # loops past 2x say nothing more about interest
NEVER = 2**62  # 'born' time of an entity with no known time: after every snapshot

# Smoothed rate fields: "view:field" -> (numerator signal, denominator signal, window in ms).
RATES: dict[str, tuple[str, str, int]] = {
    "user_profile:click_rate_30d": ("click", "exposure", 30 * DAY_MS),
    "user_profile:watch_ratio_7d": ("ratio", "rated", 7 * DAY_MS),
    "user_profile:watch_ratio_30d": ("ratio", "rated", 30 * DAY_MS),
    "video_stats:click_rate": ("click", "exposure", 30 * DAY_MS),
    "video_stats:like_rate": ("like", "exposure", 30 * DAY_MS),
    "video_stats:long_view_rate": ("long_view", "exposure", 30 * DAY_MS),
    "video_stats:share_rate": ("share", "exposure", 30 * DAY_MS),
    "video_stats:watch_ratio_30d": ("ratio", "rated", 30 * DAY_MS),
    "creator_stats:completion_30d": ("complete", "rated", 30 * DAY_MS),
}
SIGNALS = ("exposure", "click", "like", "long_view", "share", "ratio", "rated", "complete")


@dataclass
class BatchFeatures:
    frames: dict[str, pd.DataFrame]  # view name -> rows with join keys, event_timestamp, fields
    meta: dict[str, Any]  # topic vocabulary, priors per snapshot, the build's parameters


def _flag(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df:
        return np.zeros(len(df), bool)
    return df[col].fillna(False).to_numpy(dtype=bool)


def _ms(col: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 epoch milliseconds (NaT -> min int)."""
    return pd.to_datetime(col, utc=True).astype("datetime64[ms, UTC]").astype("int64").to_numpy()


def topic_vocabulary(items: pd.DataFrame) -> list[str]:
    if "category" not in items:
        return []
    return sorted(str(c) for c in items["category"].dropna().unique())


def prepare_log(interactions: pd.DataFrame, items: pd.DataFrame, topics: list[str]) -> pd.DataFrame:
    """The log as per-event signals: who, what, when, and the numeric outcomes features count.

    ``exposure`` is a play of the video (an impression, or a view/watch event of the app's
    log), ``like`` is +1 per like and -1 per unlike, ``ratio`` the watch ratio (capped) of an
    exposure whose duration is known (``rated``), ``complete`` whether it was watched to the end.
    """
    log = interactions[interactions["ts"].notna()]
    ev = log["event"].astype(str).to_numpy()
    meta = items.set_index("item_id")
    video = log["item_id"].to_numpy(dtype=np.int64)
    duration = log["duration_ms"] if "duration_ms" in log else pd.Series(np.nan, index=log.index)
    duration = duration.fillna(pd.Series(video, index=log.index).map(meta["duration_ms"]))
    duration = duration.to_numpy(dtype=np.float64)
    exposure = np.isin(ev, EXPOSURE_EVENTS)
    watch = log["watch_ms"].to_numpy(dtype=np.float64) if "watch_ms" in log else np.nan
    rated = exposure & np.isfinite(watch) & (duration > 0)
    ratio = np.where(
        rated, np.clip(np.nan_to_num(watch) / np.where(rated, duration, 1), 0, MAX_RATIO), 0
    )
    topic_of = {t: i for i, t in enumerate(topics)}
    category = meta["category"] if "category" in meta else pd.Series(dtype=object)
    topic_id = pd.Series(video).map(category).map(topic_of).fillna(-1).to_numpy(np.int64)
    creator = pd.Series(video).map(meta["author_id"]).fillna(-1).to_numpy(np.int64)
    return pd.DataFrame(
        {
            "user_id": log["user_id"].to_numpy(np.int64),
            "video_id": video,
            "creator_id": creator,
            "topic_id": topic_id,
            "ts_ms": _ms(log["ts"]),
            "exposure": exposure.astype(np.float64),
            "click": (_flag(log, "clicked") | np.isin(ev, CLICK_EVENTS)).astype(np.float64),
            "like": (_flag(log, "liked") | (ev == "like")).astype(np.float64) - (ev == "unlike"),
            "long_view": (_flag(log, "long_view") | (ev == "long_view")).astype(np.float64),
            "share": (_flag(log, "shared") | (ev == "share")).astype(np.float64),
            "rated": rated.astype(np.float64),
            "ratio": ratio,
            "complete": (rated & (ratio >= 1.0)).astype(np.float64),
        }
    )


def snapshot_times(ts_ms: np.ndarray, freq_ms: int) -> np.ndarray:
    """Boundaries ``origin + k*freq`` from the first one after the first event past the last."""
    if not len(ts_ms):
        return np.zeros(0, np.int64)
    origin = (int(ts_ms.min()) // freq_ms) * freq_ms
    count = (int(ts_ms.max()) - origin) // freq_ms + 1
    return origin + freq_ms * np.arange(1, count + 1, dtype=np.int64)


def _priors(log: pd.DataFrame, at_ms: np.ndarray) -> dict[str, np.ndarray]:
    """Per rate field: the global rate over all events before each time in ``at_ms``."""
    order = np.argsort(log["ts_ms"].to_numpy(), kind="stable")
    ts = log["ts_ms"].to_numpy()[order]
    pos = np.searchsorted(ts, at_ms, side="left")
    cum = {s: np.concatenate([[0.0], np.cumsum(log[s].to_numpy()[order])]) for s in SIGNALS}
    out = {}
    for name, (num, den, _) in RATES.items():
        n = cum[den][pos]
        out[name] = np.where(n > 0, cum[num][pos] / np.maximum(n, 1), 0.0)
    return out


def _smoothed(
    idx: EventIndex, name: str, ent: np.ndarray, at: np.ndarray, prior: np.ndarray
) -> np.ndarray:
    num, den, window = RATES[name]
    k, n = idx.window(num, ent, at, window), idx.window(den, ent, at, window)
    return ((k + SMOOTHING * prior) / (n + SMOOTHING)).astype(np.float32)


def _grid(entities: np.ndarray, born_ms: np.ndarray, snaps: np.ndarray) -> tuple[np.ndarray, ...]:
    """(entity, snapshot, snapshot index) for every snapshot after the entity appeared."""
    alive = born_ms[:, None] < snaps[None, :]
    e, k = np.nonzero(alive)
    return entities[e], snaps[k], k


def _frame(view: str, keys: dict[str, np.ndarray], at: np.ndarray, **fields: Any) -> pd.DataFrame:
    spec = VIEW_BY_NAME[view]
    missing = {f.name for f in spec.fields} - set(fields)
    assert not missing, f"{view}: no values for {sorted(missing)}"
    ts = pd.to_datetime(at, unit="ms", utc=True)
    return pd.DataFrame({**keys, TS_FIELD: ts, **{f.name: fields[f.name] for f in spec.fields}})


def _born(ids: np.ndarray, first_ms: pd.Series) -> np.ndarray:
    return pd.Series(ids).map(first_ms).fillna(NEVER).to_numpy(np.int64)


def build_features(
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    follows: pd.DataFrame | None = None,
    freq: str = "1D",
) -> BatchFeatures:
    """Every batch view's snapshots from the canonical tables (see the module docstring)."""
    freq_ms = int(pd.Timedelta(freq).total_seconds() * 1000)
    if freq_ms <= 0:
        raise ValueError(f"freq must be positive, got {freq!r}")
    topics = topic_vocabulary(items)
    log = prepare_log(interactions, items, topics)
    if log.empty:
        raise ValueError("the interaction log has no timestamped rows to build features from")
    snaps = snapshot_times(log["ts_ms"].to_numpy(), freq_ms)
    priors = _priors(log, snaps)
    signals = {s: log[s].to_numpy() for s in SIGNALS}
    follows = follows if follows is not None and len(follows) else None

    frames = {
        "user_profile": _users(log, users, follows, snaps, priors, signals, len(topics)),
        "video_stats": _videos(log, items, snaps, priors, signals, topics),
        "creator_stats": _creators(log, items, users, follows, snaps, priors, signals),
        "user_creator": _user_creator(log, follows, freq_ms, snaps),
    }
    meta = {
        "built_at": utcnow().isoformat(timespec="seconds"),
        "freq": freq,
        "topics": topics,
        "snapshots_ms": snaps.tolist(),
        # The last event seen: rows after it have no snapshot the daily job would have built
        # (features.freshness refuses them instead of defaulting).
        "log_end_ms": int(log["ts_ms"].max()),
        "priors": {name: values.round(6).tolist() for name, values in priors.items()},
        "rows": {name: len(df) for name, df in frames.items()},
    }
    return BatchFeatures(frames, meta)


def _users(log, users, follows, snaps, priors, signals, n_topics) -> pd.DataFrame:  # noqa: ANN001
    ids = np.union1d(users["user_id"].to_numpy(np.int64), log["user_id"].to_numpy())
    table = users.set_index("user_id")
    reg = table["register_ts"].dropna() if "register_ts" in table else pd.Series(dtype=object)
    reg_ms = pd.Series(_ms(reg), index=reg.index)
    born = np.minimum(_born(ids, reg_ms), _born(ids, log.groupby("user_id")["ts_ms"].min()))
    ent, at, k = _grid(ids, born, snaps)
    col = pd.Series(ent)
    idx = EventIndex(log["user_id"].to_numpy(), log["ts_ms"].to_numpy(), signals)
    if follows is not None:
        follow_ts, one = _ms(follows["ts"]), {"n": np.ones(len(follows))}
        follow_count = EventIndex(follows["user_id"].to_numpy(), follow_ts, one).sum_before(
            "n", ent, at
        )
        fan_count = EventIndex(follows["author_id"].to_numpy(), follow_ts, one).sum_before(
            "n", ent, at
        )
    else:  # only the profile's static counts are known
        follow_count, fan_count = (
            col.map(table[c]).fillna(0).to_numpy() if c in table else np.zeros(len(ent))
            for c in ("follow_count", "fan_count")
        )
    activity = table["activity"] if "activity" in table else pd.Series(dtype=object)
    rate = {
        n.split(":")[1]: _smoothed(idx, n, ent, at, priors[n][k])
        for n in RATES
        if n.startswith("user_profile:")
    }
    return _frame(
        "user_profile",
        {"user_id": ent},
        at,
        register_ts_s=col.map(reg_ms).fillna(-1000).to_numpy(np.int64) // 1000,
        activity_level=col.map(activity).map(ACTIVITY).fillna(-1).to_numpy(np.int64),
        impressions_7d=idx.window("exposure", ent, at, 7 * DAY_MS).astype(np.int64),
        impressions_30d=idx.window("exposure", ent, at, 30 * DAY_MS).astype(np.int64),
        clicks_7d=idx.window("click", ent, at, 7 * DAY_MS).astype(np.int64),
        follow_count=np.asarray(follow_count, np.int64),
        fan_count=np.asarray(fan_count, np.int64),
        topic_affinity=_topic_affinity(log, ent, at, n_topics),
        **rate,
    )


def _topic_affinity(log: pd.DataFrame, ent: np.ndarray, at: np.ndarray, n_topics: int) -> list:
    """Each user's share of clicks per topic over 30 days, smoothed towards uniform."""
    if not n_topics:
        return [np.zeros(0, np.float32)] * len(ent)
    clicked = log[(log["click"] > 0) & (log["topic_id"] >= 0)]
    idx = EventIndex(
        clicked["user_id"].to_numpy() * n_topics + clicked["topic_id"].to_numpy(),
        clicked["ts_ms"].to_numpy(),
        {"n": np.ones(len(clicked))},
    )
    counts = np.stack(
        [idx.window("n", ent * n_topics + t, at, 30 * DAY_MS) for t in range(n_topics)], axis=1
    )
    share = (counts + 1.0 / n_topics) / (counts.sum(1, keepdims=True) + 1.0)
    return list(share.astype(np.float32).round(5))


def _videos(log, items, snaps, priors, signals, topics) -> pd.DataFrame:  # noqa: ANN001
    ids = np.union1d(items["item_id"].to_numpy(np.int64), log["video_id"].to_numpy())
    table = items.set_index("item_id")
    upload = table["upload_ts"].dropna()
    upload_ms = pd.Series(_ms(upload), index=upload.index)
    born = np.minimum(_born(ids, upload_ms), _born(ids, log.groupby("video_id")["ts_ms"].min()))
    ent, at, k = _grid(ids, born, snaps)
    idx = EventIndex(log["video_id"].to_numpy(), log["ts_ms"].to_numpy(), signals)
    col = pd.Series(ent)
    topic = (
        col.map(table["category"]).fillna("")
        if "category" in table
        else pd.Series("", index=col.index)
    )
    topic_of = {t: i for i, t in enumerate(topics)}
    views = {
        w: idx.window("exposure", ent, at, ms).astype(np.int64)
        for w, ms in (("1h", HOUR_MS), ("24h", DAY_MS), ("7d", 7 * DAY_MS))
    }
    rate = {
        n.split(":")[1]: _smoothed(idx, n, ent, at, priors[n][k])
        for n in RATES
        if n.startswith("video_stats:")
    }
    return _frame(
        "video_stats",
        {"video_id": ent},
        at,
        creator_id=col.map(table["author_id"]).fillna(-1).to_numpy(np.int64),
        duration_ms=col.map(table["duration_ms"]).fillna(0).to_numpy(np.int64),
        upload_ts_s=(col.map(upload_ms).fillna(-1000).to_numpy(np.int64) // 1000),
        topic=topic.astype(str).to_numpy(),
        topic_id=topic.map(topic_of).fillna(-1).to_numpy(np.int64),
        views_1h=views["1h"],
        views_24h=views["24h"],
        views_7d=views["7d"],
        **rate,
    )


def _creators(log, items, users, follows, snaps, priors, signals) -> pd.DataFrame:  # noqa: ANN001
    own = items[items["author_id"].notna()]
    ids = np.unique(own["author_id"].to_numpy(np.int64))
    posted = own[own["upload_ts"].notna()]
    author, upload_ms = posted["author_id"].to_numpy(np.int64), _ms(posted["upload_ts"])
    first = pd.Series(upload_ms).groupby(author).min()
    seen = log[log["creator_id"] >= 0].groupby("creator_id")["ts_ms"].min()
    born = np.minimum(_born(ids, first), _born(ids, seen))
    ent, at, k = _grid(ids, born, snaps)
    idx = EventIndex(log["creator_id"].to_numpy(), log["ts_ms"].to_numpy(), signals)
    posts = EventIndex(author, upload_ms, {"n": np.ones(len(author))})
    videos_30d = posts.window("n", ent, at, 30 * DAY_MS).astype(np.int64)
    if follows is not None:
        fans = EventIndex(
            follows["author_id"].to_numpy(), _ms(follows["ts"]), {"n": np.ones(len(follows))}
        )
        follower_count = fans.sum_before("n", ent, at).astype(np.int64)
    else:
        fan = (
            users.set_index("user_id")["fan_count"]
            if "fan_count" in users
            else pd.Series(dtype=float)
        )
        follower_count = pd.Series(ent).map(fan).fillna(0).to_numpy(np.int64)
    name = "creator_stats:completion_30d"
    return _frame(
        "creator_stats",
        {"creator_id": ent},
        at,
        follower_count=follower_count,
        videos_30d=videos_30d,
        impressions_30d=idx.window("exposure", ent, at, 30 * DAY_MS).astype(np.int64),
        posting_rate_30d=(videos_30d / 30.0).astype(np.float32),
        completion_30d=_smoothed(idx, name, ent, at, priors[name][k]),
    )


def _user_creator(log, follows, freq_ms, snaps) -> pd.DataFrame:  # noqa: ANN001
    """Cumulative pair history, a row at the first snapshot after each change."""
    ev = log[log["creator_id"] >= 0]
    parts = [
        pd.DataFrame(
            {
                "user_id": ev["user_id"],
                "creator_id": ev["creator_id"],
                "ts_ms": ev["ts_ms"],
                "impressions": ev["exposure"],
                "clicks": ev["click"],
                "likes": ev["like"],
                "follows": 0.0,
            }
        )
    ]
    if follows is not None:
        parts.append(
            pd.DataFrame(
                {
                    "user_id": follows["user_id"].to_numpy(np.int64),
                    "creator_id": follows["author_id"].to_numpy(np.int64),
                    "ts_ms": _ms(follows["ts"]),
                    "follows": 1.0,
                }
            ).assign(impressions=0.0, clicks=0.0, likes=0.0)
        )
    ev = pd.concat(parts, ignore_index=True)
    code, pairs = pd.factorize(pd.MultiIndex.from_arrays([ev["user_id"], ev["creator_id"]]))
    origin = int(snaps[0]) - freq_ms
    at_ms = origin + ((ev["ts_ms"].to_numpy() - origin) // freq_ms + 1) * freq_ms
    rows = pd.DataFrame({"code": code, "at": at_ms}).drop_duplicates()
    weights = {c: ev[c].to_numpy() for c in ("impressions", "clicks", "likes", "follows")}
    idx = EventIndex(code, ev["ts_ms"].to_numpy(), weights)
    rc, ra = rows["code"].to_numpy(), rows["at"].to_numpy()
    total = {c: idx.sum_before(c, rc, ra) for c in weights}
    return _frame(
        "user_creator",
        {
            "user_id": pairs.get_level_values(0).to_numpy()[rc],
            "creator_id": pairs.get_level_values(1).to_numpy()[rc],
        },
        ra,
        has_followed=(total["follows"] > 0).astype(np.int64),
        impressions=total["impressions"].astype(np.int64),
        clicks=total["clicks"].astype(np.int64),
        likes=np.maximum(total["likes"], 0).astype(np.int64),
    )


def write_features(repo: Path, feats: BatchFeatures) -> dict[str, Path]:
    """Write each view's parquet file and ``meta.json``; each file replaced atomically."""
    paths = {}
    for view in BATCH_VIEWS:
        df = feats.frames[view.name]
        table = pa.Table.from_pandas(df, schema=view.arrow_schema(), preserve_index=False)
        path = repo / view.path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
        paths[view.name] = path
    (repo / "meta.json").write_text(json.dumps(feats.meta, indent=1) + "\n")
    return paths


def prior_defaults(meta: dict[str, Any], at_ms: np.ndarray | None = None) -> dict[str, Any]:
    """Values of ``PRIOR`` fields: the global rates of the last snapshot, or as of ``at_ms``.

    With ``at_ms`` (training), each row gets the rates of the newest snapshot at or before it
    (arrays); without (serving), the newest snapshot's (scalars). No build yet: zeros.
    """
    snaps = np.asarray(meta.get("snapshots_ms", []), dtype=np.int64)
    out: dict[str, Any] = {}
    for view in BATCH_VIEWS:
        for f in view.fields:
            if f.default is not PRIOR:
                continue
            values = np.asarray(meta.get("priors", {}).get(f"{view.name}:{f.name}", []), np.float32)
            if not len(values):
                out[f"{view.name}:{f.name}"] = (
                    0.0 if at_ms is None else np.zeros(len(at_ms), np.float32)
                )
            elif at_ms is None:
                out[f"{view.name}:{f.name}"] = float(values[-1])
            else:
                pos = np.searchsorted(snaps, at_ms, side="right") - 1
                out[f"{view.name}:{f.name}"] = np.where(pos >= 0, values[pos.clip(0)], 0.0).astype(
                    np.float32
                )
    return out
