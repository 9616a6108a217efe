"""What the ranker is given, and what the feed falls back to when it cannot rank.

The ranker gets one row per candidate: the candidate's online features, the user's scalar
features (sent once), and the ids. Without the feature store the row holds only what the catalog
knows (creator, duration, age, request time); the ranker's featurizer treats every absent
column as unknown / average, which is exactly "defaults". :func:`cheap_scores` orders
candidates without any model: engagement quality and popularity from the catalog's counters,
a freshness bonus, and a bonus for followed creators.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from candidate_gen.catalog import Snapshot
from candidate_gen.sources import CODE
from core.clock import HOUR_MS
from features.ranking_read import CandidateFeatures
from serving.ranking.backends import RankRequest


def _z(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return (x - x.mean()) / (x.std() + 1e-9) if len(x) else x


def age_hours(snap: Snapshot, ids: np.ndarray, now_ms: int) -> np.ndarray:
    return (now_ms - snap.created_ms[ids]) / HOUR_MS


def cheap_scores(snap: Snapshot, ids: np.ndarray, sources: np.ndarray, now_ms: int,
                 fresh_hours: float) -> np.ndarray:
    fresh = np.exp(-np.clip(age_hours(snap, ids, now_ms), 0, None) / fresh_hours)
    return (_z(snap.quality[ids]) + 0.5 * _z(np.log1p(snap.views[ids])) + fresh
            + 0.5 * (sources == CODE["following"]))


def rank_request(user_id: int, ids: np.ndarray, snap: Snapshot, now_ms: int,
                 feats: CandidateFeatures | None) -> RankRequest:
    """The ranker's input for the candidates ``ids`` (in order): the feature read's arrays
    as they are."""
    items: dict[str, np.ndarray] = {"video_id": np.asarray(ids, np.int64)}
    user: dict[str, object] = {"user_id": user_id}
    if feats is not None:
        items |= feats.items
        user |= feats.user
    else:
        when = datetime.fromtimestamp(now_ms / 1000, UTC)
        dur = snap.duration_ms[ids]
        items |= {"v_creator_id": snap.owner[ids],
                  "v_duration_ms": np.where(dur >= 0, dur, np.nan),
                  "v_age_hours": age_hours(snap, ids, now_ms)}
        user |= {"ctx_hour": when.hour, "ctx_weekday": when.weekday()}
    return RankRequest(items, user)
