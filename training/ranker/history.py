"""Each impression's recent watch history, as of the impression: the ranker's attention input.

Online, the stream keeps ``user_realtime:last_watched`` (``features.stream``): the user's last
:data:`~features.stream.LAST_WATCHED` distinct watched videos, newest first. Training needs the
same list as it was at every logged impression, so :func:`watch_history` rebuilds it from the
log with events **strictly before** the impression's timestamp (never the impression itself
nor anything later), plus, where the data set has one, the untimed history that precedes the
whole log (KuaiRand's ``user_sequences``: older than every timed event, oldest first).

A watch is what the stream counts as one: a ``view`` / ``watch`` event, or a clicked
impression (a logged impression's click is the user opening the video).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features import schema
from features.stream import LAST_WATCHED

HISTORY_COLUMN = schema.HISTORY  # the online list's name, shared with serving
WATCH_EVENTS = ("view", "watch")
PAD = -1


def _watches(interactions: pd.DataFrame) -> pd.DataFrame:
    """Timed watch events: user_id, item_id, ts_ms (sorted by user, time)."""
    event = interactions["event"].astype(str) if "event" in interactions \
        else pd.Series("impression", index=interactions.index)
    watched = event.isin(WATCH_EVENTS).to_numpy()
    if "clicked" in interactions:
        clicked = interactions["clicked"].fillna(False).astype(bool).to_numpy()
        watched |= (event == "impression").to_numpy() & clicked
    rows = interactions[watched & interactions["ts"].notna().to_numpy()]
    ts = pd.to_datetime(rows["ts"], utc=True).dt.as_unit("ms").astype("int64").to_numpy()
    out = pd.DataFrame({"user_id": rows["user_id"].to_numpy(np.int64),
                        "item_id": rows["item_id"].to_numpy(np.int64), "ts_ms": ts})
    return out.sort_values(["user_id", "ts_ms"], kind="stable").reset_index(drop=True)


def _prior(history: pd.DataFrame | None) -> dict[int, list[int]]:
    """User -> watched videos before the log, oldest first (untimed ``view`` rows)."""
    if history is None or history.empty:
        return {}
    views = history[history["event"].astype(str).isin(WATCH_EVENTS)]
    if "seq" in views:
        views = views.sort_values(["user_id", "seq"], kind="stable")
    return {int(u): g.tolist() for u, g in views.groupby("user_id")["item_id"]}


def watch_history(users: np.ndarray, at_ms: np.ndarray, interactions: pd.DataFrame,
                  history: pd.DataFrame | None = None, length: int = LAST_WATCHED
                  ) -> np.ndarray:
    """``[N, length]`` int64: per row the last ``length`` distinct videos the user watched
    strictly before ``at_ms`` (newest first, :data:`PAD` after the end)."""
    users = np.asarray(users, np.int64)
    at_ms = np.asarray(at_ms, np.int64)
    out = np.full((len(users), length), PAD, np.int64)
    log = _watches(interactions)
    prior = _prior(history)
    by_user = {int(u): (g["ts_ms"].to_numpy(), g["item_id"].to_numpy())
               for u, g in log.groupby("user_id")}
    for i, (u, t) in enumerate(zip(users.tolist(), at_ms.tolist(), strict=True)):
        times, items = by_user.get(u, (np.empty(0, np.int64), np.empty(0, np.int64)))
        before = int(np.searchsorted(times, t, side="left"))  # events with ts < t only
        seq = [*prior.get(u, ()), *items[:before].tolist()]
        recent = list(dict.fromkeys(reversed(seq)))[:length]
        out[i, : len(recent)] = recent
    return out


def as_lists(matrix: np.ndarray) -> list[list[int]]:
    """Rows of a padded history matrix as plain lists (a frame's list column)."""
    return [[int(v) for v in row if v != PAD] for row in matrix]
