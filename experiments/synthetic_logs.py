"""Synthetic experiment logs with a known truth, for the tests, the analysis benchmark and the
notebooks' small runs: users assigned by the real assignment, each with a latent activity
level that drives both the pre-period and the experiment-period behaviour (so CUPED has
something to remove), and a chosen multiplicative effect on how much the treatment arms watch.

It writes the same rows the ``exposures`` worker writes (``experiment_exposures``,
``interaction_log``, ``experiment_user_metrics``), plus a small catalog of videos with
topics, straight into the database. This is a stand-in for traffic, not a model of it: the
simulator fitted to real logs is ``reelrank experiment simulate``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from core.clock import DAY_MS, HOUR_MS
from experiments import aggregates
from experiments.assignment import assign_user, live
from experiments.models import Experiment, Exposure, Interaction
from platform_services.storage.models import User, Video

TOPICS = ("music", "comedy", "sports", "food", "travel", "pets", "tech", "beauty")
CHUNK = 50_000


@dataclass(frozen=True)
class SyntheticConfig:
    users: int = 2_000
    days: int = 7
    pre_days: int = 14
    pages_per_day: float = 2.0  # per unit of activity
    # Relative change of the treatment arms' pages beyond the first, so of their watches and
    # watch time: (1 + p (1 + effect)) / (1 + p) - 1 with p = pages_per_day * days.
    effect: float = 0.0
    videos: int = 200
    latency_ms: float = 40.0
    degraded_rate: float = 0.01
    seed: int = 0


def _dt(ms: np.ndarray) -> list[datetime]:
    return [datetime.fromtimestamp(v / 1000, UTC) for v in ms.tolist()]


def _insert(session: Session, table: type, rows: dict[str, list]) -> int:
    keys = list(rows)
    n = len(rows[keys[0]])
    for start in range(0, n, CHUNK):
        session.execute(insert(table), [
            {k: rows[k][i] for k in keys} for i in range(start, min(n, start + CHUNK))])
    return n


def _videos(session: Session, cfg: SyntheticConfig, rng: np.random.Generator,
            ) -> tuple[np.ndarray, np.ndarray]:
    """A small catalog with topics and durations; (ids, durations_ms)."""
    owner = User(username=f"synth-{uuid.uuid4().hex[:12]}",
                 email=f"{uuid.uuid4().hex[:12]}@synthetic.invalid", password_hash="!")
    session.add(owner)
    session.flush()
    durations = rng.integers(5_000, 60_000, cfg.videos)
    session.execute(insert(Video), [
        {"owner_id": owner.id, "title": f"synthetic {i}", "status": "ready",
         "duration_ms": int(durations[i]), "category": TOPICS[i % len(TOPICS)]}
        for i in range(cfg.videos)])
    ids = np.array(session.scalars(select(Video.id).where(Video.owner_id == owner.id)
                                   .order_by(Video.id)).all())
    return ids, durations


def generate(session: Session, exp: Experiment, cfg: SyntheticConfig,
             tamper: float = 0.0) -> dict[str, int]:
    """Fill the experiment's logs; ``exp`` must be started (its ``started_at`` is day 0).
    ``tamper`` drops that share of the treatment arms' users (a broken assignment or logging,
    which the SRM check must flag). Returns the rows written per table."""
    assert exp.started_at is not None, "start the experiment first"
    rng = np.random.default_rng(cfg.seed)
    start = int(exp.started_at.timestamp() * 1000)
    control = exp.variants[0].name
    arms = live(exp)
    video_ids, durations = _videos(session, cfg, rng)
    user_ids = np.arange(1, cfg.users + 1) + 10_000_000 * (cfg.seed + 1)
    variant = np.array([assign_user([arms], int(u)).variant or "" for u in user_ids])
    keep = variant != ""
    if tamper:
        keep &= ~((variant != control) & (rng.random(len(user_ids)) < tamper))
    user_ids, variant = user_ids[keep], variant[keep]
    n = len(user_ids)
    activity = rng.gamma(2.0, 0.5, n)
    lift = np.where(variant == control, 1.0, 1.0 + cfg.effect)
    taste = rng.integers(0, len(TOPICS), n)

    # Experiment period: first exposure somewhere in the first half, pages after it.
    t0 = start + rng.integers(0, max(1, cfg.days * DAY_MS // 2), n)
    pages = 1 + rng.poisson(cfg.pages_per_day * cfg.days * activity * lift)
    page_user = np.repeat(np.arange(n), pages)
    span = start + cfg.days * DAY_MS - t0[page_user]
    ts = t0[page_user] + (rng.random(len(page_user)) * span).astype(np.int64)
    ts[np.r_[0, np.cumsum(pages)[:-1]]] = t0  # each user's first page is their t0
    exposures = {
        "event_id": [str(uuid.uuid4()) for _ in range(len(ts))],
        "experiment_id": [exp.id] * len(ts), "variant": variant[page_user].tolist(),
        "user_id": user_ids[page_user].tolist(), "request_id": ["synthetic"] * len(ts),
        "occurred_at": _dt(ts), "n_items": [20] * len(ts), "first_position": [0] * len(ts),
        "latency_ms": rng.gamma(4.0, cfg.latency_ms / 4, len(ts)).round(3).tolist(),
        "degraded": np.where(rng.random(len(ts)) < cfg.degraded_rate, "ranker", "").tolist()}

    # One watch per page (the experiment period) and per pre-period visit; likes etc. on top.
    pre_visits = rng.poisson(cfg.pages_per_day * cfg.pre_days * activity)
    pre_user = np.repeat(np.arange(n), pre_visits)
    pre_ts = start - (rng.random(len(pre_user)) * cfg.pre_days * DAY_MS).astype(np.int64) - 1
    who = np.r_[page_user, pre_user]
    when = np.r_[ts + rng.integers(1_000, HOUR_MS // 4, len(ts)), pre_ts]
    topic_pick = np.where(rng.random(len(who)) < 0.6, taste[who],
                          rng.integers(0, len(TOPICS), len(who)))
    vid = rng.integers(0, cfg.videos // len(TOPICS), len(who)) * len(TOPICS) + topic_pick
    ratio = rng.gamma(2.0, 0.35 * activity[who])
    watch = np.minimum(ratio, 1.0) * durations[vid]
    actions = ["watch"] * len(who)
    extra = {"like": 0.08, "share": 0.02, "follow": 0.01, "report": 0.002}
    rows_user, rows_vid, rows_ts, rows_action, rows_watch = [who], [vid], [when], [actions], \
        [watch.astype(np.int64).tolist()]
    for action, p in extra.items():
        hit = rng.random(len(who)) < p * np.minimum(ratio * 2, 1.5)
        rows_user.append(who[hit])
        rows_vid.append(vid[hit])
        rows_ts.append(when[hit] + 500)
        rows_action.append([action] * int(hit.sum()))
        rows_watch.append([None] * int(hit.sum()))
    users_all, vids_all = np.concatenate(rows_user), np.concatenate(rows_vid)
    interactions = {
        "event_id": [str(uuid.uuid4()) for _ in range(len(users_all))],
        "user_id": user_ids[users_all].tolist(), "action": sum(rows_action, []),
        "video_id": video_ids[vids_all].tolist(), "author_id": [None] * len(users_all),
        "watch_ms": sum(rows_watch, []), "duration_ms": [None] * len(users_all),
        "occurred_at": _dt(np.concatenate(rows_ts))}
    written = {"experiment_exposures": _insert(session, Exposure, exposures),
               "interaction_log": _insert(session, Interaction, interactions)}
    aggregates.recompute(session, exp)  # what the exposures worker keeps for the analysis
    return written
