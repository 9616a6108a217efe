"""From canonical tables to what retrieval learns from and is judged on.

A user's *timeline* is what they consumed, oldest first: watches, clicks, long views, likes.
Rows with a clock are ordered by it; rows without one (MicroLens, KuaiRand's pre-period
history lists) by their ``seq`` position and placed before every timed row of the same user,
because they are history from before the log.

A *positive* (a training target and an evaluation hit) is: an impression that was clicked and
long-viewed, or liked; an explicit long view, like, share, comment or follow; or a view/watch
recorded without its exposure (MicroLens, KuaiRand history), where having watched is all we
know. Impressions that were not clicked are real negatives: they are neither context nor
targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.clock import DAY_MS
from core.dataset_schema import IMPRESSION, DataError

_CONSUMED_EVENTS = {"view", "watch", "click", "long_view", "like", "share", "comment", "follow"}
_POSITIVE_EVENTS = {"view", "watch", "long_view", "like", "share", "comment", "follow"}
EVENT_COLUMNS = ("user_id", "item_id", "order", "ts", "long", "liked", "positive")


def _flag(df: pd.DataFrame, name: str) -> np.ndarray:
    return df[name].fillna(False).to_numpy(bool) if name in df else np.zeros(len(df), bool)


def timeline(interactions: pd.DataFrame, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """Consumption rows of all users, one per (user, item) (the first), sorted by user, order.

    Columns: user_id, item_id, order (float, increasing within a user), ts (ms since epoch, NaN
    when unknown), long, liked, positive (flags merged over repeated rows of the same pair).
    """
    missing = [c for c in ("user_id", "item_id", "event") if c not in interactions]
    if missing:
        raise DataError(f"interactions: missing column '{missing[0]}'")
    frames = [interactions] if history is None else [history, interactions]
    parts = []
    for df in frames:
        event = df["event"].astype(str).to_numpy()
        imp = event == IMPRESSION
        clicked, long, liked = _flag(df, "clicked"), _flag(df, "long_view"), _flag(df, "liked")
        positive = np.isin(event, list(_POSITIVE_EVENTS)) | (imp & ((clicked & long) | liked))
        consumed = np.isin(event, list(_CONSUMED_EVENTS)) | (imp & clicked) | positive
        ts = df["ts"] if "ts" in df else pd.Series(pd.NaT, index=df.index)
        ts_ms = pd.to_datetime(ts, utc=True).dt.as_unit("ms").astype("int64").to_numpy(np.float64)
        ts_ms[ts.isna().to_numpy()] = np.nan
        part = pd.DataFrame(
            {
                "user_id": df["user_id"].to_numpy(np.int64),
                "item_id": df["item_id"].to_numpy(np.int64),
                "ts": ts_ms,
                "seq": df["seq"].fillna(0).to_numpy(np.float64) if "seq" in df else 0.0,
                "event": event,
                "long": long | (event == "long_view"),
                "liked": liked | (event == "like"),
                "positive": positive,
            }
        )[consumed]
        parts.append(part)
    rows = pd.concat(parts, ignore_index=True)
    # Untimed rows: normalised position within their (user, event) list, so KuaiRand's three
    # history lists interleave instead of following one another; timed rows come after them.
    untimed = rows["ts"].isna()
    span = rows[untimed].groupby(["user_id", "event"])["seq"].transform("max") + 1
    rows["order"] = np.where(untimed, 0.0, 1.0)
    rows.loc[untimed, "order"] = rows.loc[untimed, "seq"] / span - 1.0
    rows.loc[~untimed, "order"] = rows.loc[~untimed, "ts"]
    rows = rows.sort_values(["user_id", "order"], kind="stable", ignore_index=True)
    flags = rows.groupby(["user_id", "item_id"])[["long", "liked", "positive"]].transform("max")
    rows[["long", "liked", "positive"]] = flags
    rows = rows.drop_duplicates(["user_id", "item_id"], keep="first", ignore_index=True)
    return rows[list(EVENT_COLUMNS)]


@dataclass
class Fold:
    """Fit on ``train`` (timeline rows); rank ``catalog`` (None: every item) for the users in
    ``test`` (positive rows) and count hits. ``now`` is the time the model is used at."""

    name: str
    train: pd.DataFrame
    test: pd.DataFrame
    catalog: np.ndarray | None = None
    now: pd.Timestamp | None = None


@dataclass
class Protocol:
    """Tune on ``tune`` (train / validation), then refit with the chosen settings on ``final``
    (train + validation / test); every model and baseline goes through the same two folds."""

    name: str
    tune: Fold
    final: Fold


def _positives(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["positive"]].reset_index(drop=True)


def temporal(rows: pd.DataFrame, end: pd.Timestamp, valid_days: float = 1.0,
             test_end: pd.Timestamp | None = None) -> Protocol:
    """Train before ``end`` (plus untimed history), test on ``[end, test_end)``; validate on
    the last ``valid_days`` before ``end`` while tuning. Never splits a timeline at random."""
    end_ms = end.value / 1e6
    valid_ms = end_ms - valid_days * DAY_MS
    ts = rows["ts"].to_numpy()
    untimed = np.isnan(ts)
    after = ts >= end_ms
    if test_end is not None:
        after &= ts < test_end.value / 1e6
    train = rows[untimed | (ts < end_ms)]
    tune_train = rows[untimed | (ts < valid_ms)]
    valid = rows[(ts >= valid_ms) & (ts < end_ms)]
    valid_now = pd.Timestamp(valid_ms * 1e6, tz="UTC")
    return Protocol(
        "temporal",
        tune=Fold("valid", tune_train.reset_index(drop=True), _positives(valid), now=valid_now),
        final=Fold("test", train.reset_index(drop=True), _positives(rows[after]), now=end),
    )


def leave_last_out(rows: pd.DataFrame) -> Protocol:
    """Per user with at least three rows: the last positive is the test, the one before it the
    validation; for data without a clock (MicroLens)."""
    pos = rows.groupby("user_id").cumcount(ascending=False).to_numpy()
    size = rows.groupby("user_id")["item_id"].transform("size").to_numpy()
    eligible = (size >= 3) & rows["positive"].to_numpy()
    last, second = eligible & (pos == 0), eligible & (pos == 1)
    return Protocol(
        "leave-last-out",
        tune=Fold("valid", rows[~(last | second)].reset_index(drop=True), _positives(rows[second])),
        final=Fold("test", rows[~last].reset_index(drop=True), _positives(rows[last])),
    )


def cold_items(rows: pd.DataFrame, fraction: float = 0.2, seed: int = 0) -> Protocol:
    """Hold ``fraction`` of the items out of training entirely (half for validation, half for
    test): the models rank only held-out items, so only content can place them."""
    items = np.unique(rows["item_id"].to_numpy())
    rng = np.random.default_rng(seed)
    cold = rng.choice(items, max(2, int(len(items) * fraction)), replace=False)
    valid_items, test_items = np.sort(cold[: len(cold) // 2]), np.sort(cold[len(cold) // 2 :])
    is_cold = rows["item_id"].isin(cold).to_numpy()
    warm = rows[~is_cold].reset_index(drop=True)
    warm_users = warm["user_id"].unique()

    def targets(held: np.ndarray) -> pd.DataFrame:
        t = rows[rows["item_id"].isin(held) & rows["user_id"].isin(warm_users)]
        return _positives(t)

    return Protocol(
        "cold-item",
        tune=Fold("cold-valid", warm, targets(valid_items), catalog=valid_items),
        final=Fold("cold-test", warm, targets(test_items), catalog=test_items),
    )
