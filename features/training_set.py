"""Point-in-time training sets: every logged impression with its features as of its timestamp.

The ranker's trainer (and ``reelrank rank`` for logged impressions) calls::

    frame = build_training_set(store, interactions, items, labels=["click", "long_view"],
                               meta=read_meta(settings))

and gets one row per impression (``event == "impression"``; pass a frame of impressions only
to score something else) in input order: ``user_id, video_id, ts``, the columns of
:data:`features.schema.USER_COLUMNS` and :data:`~features.schema.ITEM_COLUMNS`, and
``label_<name>`` per label. Nothing from after ``ts`` reaches a row:

- batch views come from Feast's ``get_historical_features`` (newest snapshot ``<= ts`` within
  the view's TTL; snapshots only summarise events before their own timestamp);
- real-time windows are counted from the log with the stream's minute arithmetic
  (:func:`features.windows.log_window_counts`, events strictly before ``ts``), and the
  session depth likewise;
- ``video_fresh`` is what ``video.processed`` would have pushed: the item's creator and
  duration once its upload time has passed;
- defaults (rates: the global rate of the newest snapshot ``<= ts``) fill whatever is missing
  for entities the snapshots do not know (yet);
- an impression after the events the repo was built from is refused
  (:func:`features.freshness.check_coverage`): its snapshots were never built, and defaults
  there would be silent damage, not the state of the world.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features import schema
from features.batch import _ms, prepare_log, prior_defaults
from features.freshness import check_coverage
from features.repo import BATCH_VIEWS, PRIOR, TS_FIELD
from features.store import FeatureStoreError
from features.windows import SESSION_GAP_S, EventIndex, log_window_counts

if TYPE_CHECKING:
    from feast import FeatureStore

# Label name -> the impression's outcome column (watch_ratio is computed).
LABELS: dict[str, str] = {
    "click": "clicked",
    "long_view": "long_view",
    "like": "liked",
    "follow": "followed",
    "comment": "commented",
    "share": "shared",
    "hate": "hated",
    "watch_ratio": "watch_ms",
}
CHUNK_ROWS = 200_000  # Feast's file store joins in memory: bound it


def _labels(imp: pd.DataFrame, labels: Sequence[str]) -> dict[str, np.ndarray]:
    out = {}
    for name in labels:
        if name not in LABELS:
            raise FeatureStoreError(f"unknown label {name!r} (known: {', '.join(LABELS)})")
        column = LABELS[name]
        if column not in imp:
            raise FeatureStoreError(f"label {name!r} needs column {column!r}, not in the log")
        if name == "watch_ratio":
            duration = imp["duration_ms"].where(imp["duration_ms"] > 0)
            out[f"label_{name}"] = (imp["watch_ms"] / duration).clip(0, 2).to_numpy(np.float32)
        else:
            out[f"label_{name}"] = imp[column].fillna(False).to_numpy(dtype=np.int8)
    return out


def _historical(store: FeatureStore, entities: pd.DataFrame) -> pd.DataFrame:
    """Batch view values per entity row, in its order (rows no snapshot covers: NaN).

    One query per view, over the distinct (join keys, time) pairs, merged back onto every
    row: Feast's file store drops an entity row that has no row in a view it joins, and keeps
    one of several rows equal in keys and time. A joint query over all views lost every view's
    values of a row that only one view lacked (on KuaiRand nearly every impression is a first
    user x creator pair: 0.3 % of the rows kept their batch features).
    """
    parts = []
    for view in BATCH_VIEWS:
        on = [*view.join_keys, "_ts_ms"]
        cols = [f"{view.name}__{f.name}" for f in view.fields]
        keys = entities[[*view.join_keys, TS_FIELD]].assign(_ts_ms=_ms(entities[TS_FIELD]))
        distinct = keys.drop_duplicates(on).reset_index(drop=True)
        refs = [f"{view.name}:{f.name}" for f in view.fields]
        chunks = [
            store.get_historical_features(
                distinct.iloc[start : start + CHUNK_ROWS].drop(columns="_ts_ms"), refs,
                full_feature_names=True,
            ).to_df()
            for start in range(0, len(distinct), CHUNK_ROWS)
        ]
        got = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()
        if got.empty:
            parts.append(pd.DataFrame(np.nan, index=np.arange(len(entities)), columns=cols))
            continue
        got = got.assign(_ts_ms=_ms(got[TS_FIELD])).drop_duplicates(on)[[*on, *cols]]
        merged = keys[on].merge(got, on=on, how="left", validate="many_to_one")
        parts.append(merged[cols].set_axis(np.arange(len(entities))))
    return pd.concat(parts, axis=1)


def _session(log: pd.DataFrame, users: np.ndarray, at_ms: np.ndarray) -> dict[str, np.ndarray]:
    """``session_events`` and ``last_event_s`` as the stream pushed them with the user's newest
    event before each ``at`` (the idle rule is applied in :func:`features.schema.assemble`)."""
    order = np.lexsort((log["ts_ms"].to_numpy(), log["user_id"].to_numpy()))
    u, t = log["user_id"].to_numpy()[order], log["ts_ms"].to_numpy()[order]
    new = np.r_[True, (u[1:] != u[:-1]) | (t[1:] - t[:-1] > SESSION_GAP_S * 1000)]
    start = np.maximum.accumulate(np.where(new, np.arange(len(u)), 0))
    depth = np.empty(len(u), np.int64)
    depth[order] = np.arange(len(u)) - start + 1  # events so far in the event's session
    last = EventIndex(log["user_id"].to_numpy(), log["ts_ms"].to_numpy()).last_before(users, at_ms)
    found = last >= 0
    return {
        "user_realtime:session_events": np.where(found, depth[last.clip(0)], 0),
        "user_realtime:last_event_s": np.where(
            found, log["ts_ms"].to_numpy()[last.clip(0)] // 1000, 0
        ),
    }


def build_training_set(
    store: FeatureStore,
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    labels: Sequence[str] = ("click", "long_view", "like"),
    meta: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """The ranker's training table (see the module docstring); ``meta`` from ``read_meta``."""
    meta = meta or {}
    imp = interactions
    if "event" in imp and (imp["event"] == "impression").any():
        imp = imp[imp["event"] == "impression"]
    imp = imp[imp["ts"].notna()].reset_index(drop=True)
    label_cols = _labels(imp, labels)
    at_ms = _ms(imp["ts"])
    check_coverage(meta, at_ms)
    users = imp["user_id"].to_numpy(np.int64)
    videos = imp["item_id"].to_numpy(np.int64)
    table = items.set_index("item_id")
    creators = pd.Series(videos).map(table["author_id"]).fillna(-1).to_numpy(np.int64)

    entities = pd.DataFrame(
        {
            "row_id": np.arange(len(imp)),
            "user_id": users,
            "video_id": videos,
            "creator_id": creators,
            TS_FIELD: pd.to_datetime(at_ms, unit="ms", utc=True),
        }
    )
    hist = _historical(store, entities)
    priors = prior_defaults(meta, at_ms)
    raw: dict[str, Any] = {}
    for view in BATCH_VIEWS:
        for f in view.fields:
            ref = f"{view.name}:{f.name}"
            col = hist[f"{view.name}__{f.name}"]
            if f.default is PRIOR:
                raw[ref] = col.astype(np.float64).fillna(pd.Series(priors[ref])).to_numpy()
            elif isinstance(f.default, tuple):
                raw[ref] = [list(v) if isinstance(v, list | np.ndarray) else [] for v in col]
            elif f.kind == "str":
                raw[ref] = col.fillna(f.default).astype(str).to_numpy()
            else:
                raw[ref] = (
                    col.astype(np.float64)
                    .fillna(f.default)
                    .astype(f.arrow.to_pandas_dtype())
                    .to_numpy()
                )
    raw |= _fresh(table, videos, at_ms)

    log = prepare_log(interactions, items, list(meta.get("topics", [])))
    index = EventIndex(
        log["video_id"].to_numpy(),
        log["ts_ms"].to_numpy(),
        {"views": log["exposure"].to_numpy(), "likes": log["like"].to_numpy()},
    )
    for kind in ("views", "likes"):
        for window, counts in log_window_counts(index, kind, videos, at_ms).items():
            raw[f"v_rt_{kind}_{window}"] = np.maximum(counts, 0)
    raw |= _session(log, users, at_ms)

    cols = schema.assemble(raw, at_ms)
    out = pd.DataFrame({"user_id": users, "video_id": videos, "ts": imp["ts"].to_numpy()})
    features = pd.DataFrame({c: cols[c] for c in (*schema.USER_COLUMNS, *schema.ITEM_COLUMNS)})
    return pd.concat([out, features, pd.DataFrame(label_cols)], axis=1)


def _fresh(table: pd.DataFrame, videos: np.ndarray, at_ms: np.ndarray) -> dict[str, np.ndarray]:
    """``video_fresh`` as serving would have had it: known once the upload time has passed."""
    col = pd.Series(videos)
    upload = table["upload_ts"].dropna() if "upload_ts" in table else pd.Series(dtype=object)
    upload_ms = col.map(pd.Series(_ms(upload), index=upload.index)).to_numpy(np.float64)
    known = upload_ms <= at_ms  # NaN (unknown upload) compares False
    author = col.map(table["author_id"]).fillna(-1).to_numpy()
    duration = col.map(table["duration_ms"]).fillna(0).to_numpy()
    return {
        "video_fresh:creator_id": np.where(known, author, -1).astype(np.int64),
        "video_fresh:duration_ms": np.where(known, duration, 0).astype(np.int64),
        "video_fresh:ready": known.astype(np.int64),
        "video_fresh:upload_ts_s": np.where(known, upload_ms // 1000, -1).astype(np.int64),
    }
