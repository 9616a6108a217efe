"""Per-user metrics of an experiment from its logs: exposures and interactions as frames.

Everything is counted from a user's **first exposure** in the experiment until its end (the
stop time, or now): what the variant could have influenced. The same per-user metrics over a
**pre-period** before the experiment started are the CUPED covariates. Definitions
(:data:`experiments.catalog.METRICS`):

* ``watch_time_per_user``: minutes watched (``watch_ms`` summed);
* ``completion_rate``: share of the user's watches that reached 90 % of the video (users with
  no watch of known duration have none);
* ``likes|shares|follows_per_session``: actions per session, a session ending after 30 minutes
  without an exposure or an interaction;
* ``return_d1``: any activity 24-48 h after the first exposure (only users whose 48 h have
  passed);
* ``topic_diversity``: Gini-Simpson index ``1 - sum p_topic^2`` of the topics watched;
* ``report_rate``: reports per user.

Frames: ``exposures`` (``user_id``, ``variant``, ``ts`` ms, ``latency_ms``, ``degraded``
bool) and ``interactions`` (``user_id``, ``action``, ``ts`` ms, ``watch_ms``,
``duration_ms``, ``topic``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.clock import DAY_MS, MINUTE_MS

SESSION_GAP_MS = 30 * MINUTE_MS
COMPLETE = 0.9
PER_USER = ("watch_time_per_user", "completion_rate", "likes_per_session",
            "shares_per_session", "follows_per_session", "return_d1", "topic_diversity",
            "report_rate")


def first_exposures(exposures: pd.DataFrame) -> pd.DataFrame:
    """One row per user: ``variant``, ``t0`` (first exposure ms), ``n_variants`` (more than
    one means the user was switched: excluded from the comparison and reported)."""
    g = exposures.groupby("user_id", sort=True)
    out = pd.DataFrame({"t0": g["ts"].min(), "n_variants": g["variant"].nunique()})
    first = exposures.loc[exposures.groupby("user_id")["ts"].idxmin(), ["user_id", "variant"]]
    return out.join(first.set_index("user_id"))


def _count(events: pd.DataFrame, users: pd.Index, action: str) -> pd.Series:
    hit = events.loc[events["action"] == action, "user_id"]
    return hit.value_counts().reindex(users, fill_value=0).astype(np.float64)


def sessions(users: pd.Index, *timestamps: pd.DataFrame) -> pd.Series:
    """Sessions per user over the (``user_id``, ``ts``) rows of every frame given."""
    both = pd.concat([t[["user_id", "ts"]] for t in timestamps], ignore_index=True)
    both = both.sort_values(["user_id", "ts"], kind="stable")
    uid, ts = both["user_id"].to_numpy(), both["ts"].to_numpy()
    new = np.ones(len(both), bool)
    new[1:] = (uid[1:] != uid[:-1]) | (ts[1:] - ts[:-1] > SESSION_GAP_MS)
    return pd.Series(uid[new]).value_counts().reindex(users, fill_value=0).astype(np.float64)


def per_user(users: pd.DataFrame, interactions: pd.DataFrame,
             exposures: pd.DataFrame | None, end_ms: int) -> pd.DataFrame:
    """The metrics of :data:`PER_USER` per user of ``users`` (index ``user_id``, column
    ``t0``: where each user's window starts); events from ``t0`` to ``end_ms`` count."""
    idx = users.index
    t0 = users["t0"]

    def window(frame: pd.DataFrame) -> pd.DataFrame:
        start = t0.reindex(frame["user_id"]).to_numpy()
        ts = frame["ts"].to_numpy()
        return frame[(ts >= start) & (ts < end_ms)]

    inter = window(interactions)
    out = pd.DataFrame(index=idx)
    watch = inter["watch_ms"].fillna(0).to_numpy(np.float64)
    out["watch_time_per_user"] = (pd.Series(watch / MINUTE_MS).groupby(
        inter["user_id"].to_numpy()).sum().reindex(idx, fill_value=0.0))
    known = (watch > 0) & (inter["duration_ms"].fillna(0).to_numpy() > 0)
    done = watch[known] >= COMPLETE * inter["duration_ms"].to_numpy()[known]
    out["completion_rate"] = pd.Series(done.astype(np.float64)).groupby(
        inter["user_id"].to_numpy()[known]).mean().reindex(idx)
    frames = [inter] if exposures is None else [inter, window(exposures)]
    n_sessions = sessions(idx, *frames)
    for action, name in (("like", "likes_per_session"), ("share", "shares_per_session"),
                         ("follow", "follows_per_session")):
        out[name] = (_count(inter, idx, action) / n_sessions.where(n_sessions > 0)).fillna(0.0)
    out["return_d1"] = _return_d1(users, frames, end_ms)
    out["topic_diversity"] = _diversity(inter[(watch > 0) & inter["topic"].notna().to_numpy()],
                                        idx)
    out["report_rate"] = _count(inter, idx, "report")
    return out


def _return_d1(users: pd.DataFrame, frames: list[pd.DataFrame], end_ms: int) -> pd.Series:
    both = pd.concat([f[["user_id", "ts"]] for f in frames], ignore_index=True)
    start = users["t0"].reindex(both["user_id"]).to_numpy()
    age = both["ts"].to_numpy() - start
    back = both.loc[(age >= DAY_MS) & (age < 2 * DAY_MS), "user_id"].unique()
    out = pd.Series(users.index.isin(back).astype(np.float64), index=users.index)
    return out.where(users["t0"] + 2 * DAY_MS <= end_ms)  # not yet eligible: undefined


def _diversity(watched: pd.DataFrame, idx: pd.Index) -> pd.Series:
    counts = watched.groupby(["user_id", "topic"]).size()
    share = counts / counts.groupby(level=0).transform("sum")
    return (1.0 - (share ** 2).groupby(level=0).sum()).reindex(idx)


def page_guardrails(exposures: pd.DataFrame) -> pd.DataFrame:
    """Per variant: pages, latency p99 (ms) and the share of pages served degraded."""
    g = exposures.groupby("variant")
    return pd.DataFrame({"pages": g.size(),
                         "latency_p99_ms": g["latency_ms"].quantile(0.99),
                         "error_rate": g["degraded"].mean()})


def day_ends(start_ms: int, end_ms: int, days: int | None = None) -> np.ndarray:
    """The end of each day of the experiment (ms): ``start + k days``, the last one capped at
    ``end_ms``; ``days`` defaults to the days from start to end (at least one)."""
    if days is None:
        days = max(1, int(np.ceil((end_ms - start_ms) / DAY_MS)))
    return np.minimum(start_ms + DAY_MS * np.arange(1, days + 1), end_ms)


def daily_minutes(users: pd.DataFrame, interactions: pd.DataFrame,
                  ends: np.ndarray) -> np.ndarray:
    """Watch minutes per user (rows in ``users`` order) per day ending at ``ends`` (columns),
    counted from each user's first exposure ``t0``; later than the last end: not counted."""
    days = len(ends)
    pos = pd.Series(np.arange(len(users)), index=users.index)
    inter = interactions[interactions["watch_ms"].fillna(0) > 0]
    row = pos.reindex(inter["user_id"]).to_numpy()
    t0 = users["t0"].to_numpy()
    ts = inter["ts"].to_numpy()
    keep = ~np.isnan(row)
    row, ts, minutes = row[keep].astype(int), ts[keep], inter["watch_ms"].to_numpy()[keep]
    keep = ts >= t0[row]
    day = np.clip(np.searchsorted(ends, ts[keep], side="right"), 0, days)
    grid = np.zeros((len(users), days + 1))
    np.add.at(grid, (row[keep], day), minutes[keep] / MINUTE_MS)
    return grid[:, :days]


def cumulate(t0: np.ndarray, minutes: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Daily minutes -> minutes accumulated to each day's end, NaN before the user's first
    exposure (those users were not in the experiment yet that day)."""
    values = np.cumsum(minutes, axis=1)
    values[t0[:, None] >= ends[None, :]] = np.nan
    return values


def daily_cumulative(users: pd.DataFrame, interactions: pd.DataFrame, start_ms: int,
                     end_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """Watch minutes per user accumulated to the end of each day of the experiment:
    ``(day_ends_ms [D], values [users, D])``, NaN before a user's first exposure (the
    sequential test and the cumulative-lift plot look at each day)."""
    ends = day_ends(start_ms, end_ms)
    return ends, cumulate(users["t0"].to_numpy(), daily_minutes(users, interactions, ends), ends)
