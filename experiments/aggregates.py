"""Per-user metrics of each experiment, kept as the logs grow, so the analysis reads about one
row per user instead of every exposure and interaction.

Exactness rather than approximation: a user's row (:class:`~experiments.models.UserMetrics`)
is always *recomputed* from that user's log rows with the analysis's own functions
(:func:`compute`, :mod:`experiments.metrics`), never incremented. The ``exposures`` worker
calls :func:`refresh` in the transaction that writes a batch, for every (experiment, user) the
batch can change, so a redelivered or late event just recomputes the same row. A row's window
ends at the experiment's stop (or at the newest event while it runs).

The analysis (:func:`read`) takes the per-user facts that come from the exposure log itself
(arm, first exposure, arms seen, pages) fresh from a covering index, and uses a stored row only
if its stamp (first exposure, number of exposures) still matches; other users are recomputed
from their log rows there and then. The page-level guardrails read counts and the highest
latencies from their own indexes (:func:`page_stats`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import func, literal_column, select
from sqlalchemy.orm import Session

from core.clock import DAY_MS, utcnow
from experiments import metrics as m
from experiments.logs import PRE_PERIOD_DAYS, frame, load, start_ms, to_ms
from experiments.models import Experiment, Exposure, UserMetrics
from experiments.stats import quantile_ci_first_index
from platform_services.storage.db import upsert_insert

NO_END = int(np.iinfo(np.int64).max)  # a running experiment's rows: up to the newest event
COVARIATE = "{}__pre"
LATENCY_Q = 0.99
_CHUNK = 2_000


@dataclass
class PageStats:
    """One arm's pages as the guardrails see them: latencies (NaN-free; only the highest may
    be real values, the rest ``-inf``, which the 99th percentile and its interval never
    reach) and degraded flags (0/1)."""

    pages: int
    latency: np.ndarray
    degraded: np.ndarray


def _stored_end(exp: Experiment) -> int:
    return int(exp.stopped_at.timestamp() * 1000) if exp.stopped_at else NO_END


def compute(start: int, exposures: pd.DataFrame, interactions: pd.DataFrame,
            end_ms: int, ends: np.ndarray | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Per user of ``exposures``: ``variant`` (first), ``n_variants``, ``t0``, ``n_exposures``,
    the metrics of :data:`~experiments.metrics.PER_USER` from ``t0`` to ``end_ms``, their
    pre-period values (:data:`COVARIATE` names), and watch minutes per day ending at ``ends``
    (default: the days through the newest watch) - the rows and the ``[users, days]`` array."""
    users = m.first_exposures(exposures)
    users["n_exposures"] = exposures.groupby("user_id").size()
    post = m.per_user(users, interactions, exposures, end_ms)
    pre_users = pd.DataFrame({"t0": start - PRE_PERIOD_DAYS * DAY_MS}, index=users.index)
    pre = m.per_user(pre_users, interactions, None, start)
    if ends is None:
        watched = interactions.loc[interactions["watch_ms"].fillna(0) > 0, "ts"]
        last = int(watched.max()) if len(watched) else start
        days = None if end_ms != NO_END else max(1, (last - start) // DAY_MS + 1)
        ends = m.day_ends(start, end_ms, days)
    rows = users[["variant", "n_variants", "t0", "n_exposures"]].join(post).join(
        pre.rename(columns=COVARIATE.format))
    return rows, m.daily_minutes(users, interactions, ends)


def _db_rows(exp_id: int, rows: pd.DataFrame, minutes: np.ndarray) -> list[dict]:
    now = utcnow()
    cols = {f"post_{k}": rows[k] for k in m.PER_USER} | {
        f"pre_{k}": rows[COVARIATE.format(k)] for k in m.PER_USER}
    values = {k: [None if np.isnan(x) else float(x) for x in v.to_numpy(np.float64)]
              for k, v in cols.items()}
    return [{"experiment_id": exp_id, "user_id": int(u), "t0_ms": int(t0), "n_exposures": int(n),
             "daily_watch": [float(x) for x in minutes[j]], "updated_at": now,
             **{k: v[j] for k, v in values.items()}}
            for j, (u, t0, n) in enumerate(zip(rows.index, rows["t0"], rows["n_exposures"],
                                                strict=True))]


def _upsert(session: Session, rows: list[dict]) -> None:
    for s in range(0, len(rows), _CHUNK):
        stmt = upsert_insert(session, UserMetrics)
        keys = [k for k in rows[0] if k not in ("experiment_id", "user_id")]
        session.execute(stmt.on_conflict_do_update(
            index_elements=["experiment_id", "user_id"],
            set_={k: getattr(stmt.excluded, k) for k in keys}), rows[s:s + _CHUNK])


def recompute(session: Session, exp: Experiment, users: Collection[int] | None = None) -> int:
    """Recompute and store the rows of ``users`` (all exposed users when ``None``)."""
    end = _stored_end(exp)
    logs = load(session, exp, end, users=users)
    if logs.exposures.empty:
        return 0
    rows, minutes = compute(logs.start_ms, logs.exposures, logs.interactions, end)
    _upsert(session, _db_rows(exp.id, rows, minutes))
    return len(rows)


def refresh(session: Session, earliest: dict[int, int], exposed: set[tuple[int, int]]) -> int:
    """After a batch: recompute every (experiment, user) it can change. ``earliest``: each
    user's earliest event time (ms) in the batch; ``exposed``: its (experiment id, user)
    exposures. A user's stored experiments are affected unless every new event falls after
    the experiment's stop or before its pre-period."""
    pairs = set(exposed)
    if earliest:
        t = UserMetrics.__table__.c
        pairs |= {tuple(r) for r in session.execute(
            select(t.experiment_id, t.user_id).where(t.user_id.in_(list(earliest)))).all()}
    by_exp: dict[int, set[int]] = defaultdict(set)
    for exp_id, user in pairs:
        by_exp[exp_id].add(user)
    done = 0
    for exp in session.scalars(select(Experiment).where(Experiment.id.in_(list(by_exp)))):
        lo, hi = start_ms(exp) - PRE_PERIOD_DAYS * DAY_MS, _stored_end(exp)
        users = [u for u in by_exp[exp.id]
                 if (exp.id, u) in exposed or lo <= earliest.get(u, lo) < hi]
        if users:
            done += recompute(session, exp, users)
    return done


def exposure_summary(session: Session, exp: Experiment) -> tuple[pd.DataFrame, pd.Series]:
    """From the exposure log's covering index: per user ``variant`` (of the first exposure),
    ``n_variants``, ``t0``, ``n_exposures``; and pages per arm."""
    t = Exposure.__table__.c
    rows = frame(session, select(
        t.user_id, t.variant, func.min(literal_column("experiment_exposures.occurred_at"))
        .label("ts"), func.count().label("n"))
        .where(t.experiment_id == exp.id).group_by(t.user_id, t.variant))
    rows["ts"] = to_ms(rows["ts"])
    rows = rows.sort_values(["user_id", "ts"], kind="stable")
    g = rows.groupby("user_id", sort=True)
    users = pd.DataFrame({"variant": g["variant"].first(), "n_variants": g.size(),
                          "t0": g["ts"].min(), "n_exposures": g["n"].sum()})
    return users, rows.groupby("variant")["n"].sum()


def read(session: Session, exp: Experiment, end_ms: int
         ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, pd.Series]:
    """What :func:`compute` returns for the window ending at ``end_ms`` (the stop or now),
    from the stored rows, recomputing those whose stamp no longer matches the exposure log;
    plus the day ends and the pages per arm."""
    users, pages = exposure_summary(session, exp)
    t = UserMetrics.__table__.c
    stored = frame(session, select(t).where(t.experiment_id == exp.id)).set_index("user_id")
    stored = stored.reindex(users.index)
    stale = users.index[(stored["t0_ms"].to_numpy() != users["t0"].to_numpy())
                        | (stored["n_exposures"].to_numpy() != users["n_exposures"].to_numpy())]
    rows = pd.DataFrame({k: stored[f"post_{k}"].astype(np.float64) for k in m.PER_USER}
                        | {COVARIATE.format(k): stored[f"pre_{k}"].astype(np.float64)
                           for k in m.PER_USER}, index=users.index)
    start = start_ms(exp)
    ends = m.day_ends(start, end_ms)
    minutes = np.zeros((len(users), len(ends)))
    for j, daily in enumerate(stored["daily_watch"].to_numpy()):
        if isinstance(daily, str):  # SQLite hands JSON back as text on the raw cursor
            daily = json.loads(daily)
        if isinstance(daily, list) and daily:
            n = min(len(daily), len(ends))
            minutes[j, :n] = daily[:n]
    if len(stale):
        logs = load(session, exp, _stored_end(exp), users=[int(u) for u in stale])
        fresh, fresh_minutes = compute(start, logs.exposures, logs.interactions,
                                       _stored_end(exp), ends)
        rows.loc[fresh.index, rows.columns] = fresh[rows.columns]
        minutes[users.index.get_indexer(fresh.index)] = fresh_minutes
    rows = users.join(rows)
    # D1 return is defined once a user's 48 h have passed by the window's end.
    rows["return_d1"] = rows["return_d1"].where(rows["t0"] + 2 * DAY_MS <= end_ms)
    return rows, minutes, ends, pages


def page_stats(session: Session, exp: Experiment, alpha: float) -> dict[str, PageStats]:
    """Per arm: pages, the latencies the 99th percentile and its interval need (the highest
    ones, by the latency index) and the degraded flags (by their count)."""
    t = Exposure.__table__.c
    counts = session.execute(select(t.variant, func.count(), func.count(t.latency_ms))
                             .where(t.experiment_id == exp.id).group_by(t.variant)).all()
    degraded = dict(session.execute(
        select(t.variant, func.count()).where(t.experiment_id == exp.id, t.degraded != "")
        .group_by(t.variant)).all())
    out = {}
    for variant, pages, n in counts:
        k = n - quantile_ci_first_index(n, LATENCY_Q, alpha) if n else 0
        top = session.scalars(select(t.latency_ms).where(
            t.experiment_id == exp.id, t.variant == variant, t.latency_ms.is_not(None))
            .order_by(t.latency_ms.desc()).limit(k)).all() if k else []
        latency = np.full(n, -np.inf)
        latency[n - len(top):] = np.sort(np.array(top, np.float64))
        bad = degraded.get(variant, 0)
        out[variant] = PageStats(pages, latency, np.r_[np.zeros(pages - bad), np.ones(bad)])
    return out


def page_stats_of(exposures: pd.DataFrame) -> dict[str, PageStats]:
    """The same from exposure rows (the raw path)."""
    out = {}
    for variant, g in exposures.groupby("variant"):
        lat = g["latency_ms"].to_numpy(np.float64)
        out[variant] = PageStats(len(g), lat[~np.isnan(lat)],
                                 g["degraded"].to_numpy(np.float64))
    return out

