"""What a first page needs to know about its viewer, read once at the start of the request.

- :func:`read_viewer`: the user row, follows and blocks, in one database session;
- :func:`read_user_state`: everything the viewer has seen (the feed's exposures, the videos the
  event stream saw them watch) and their online features, in **one** Redis round trip when the
  online store is the feed's Redis (the default, and production's Feast-on-Redis), two
  otherwise;
- :class:`TrendingCache`: the trending lists the trending source reads, kept in the process
  for a few seconds (the counters behind them are a 30 s union already), so a request does
  not ask Redis for them at all.

A dependency that fails is recorded in the request's trace and its part comes back empty.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import redis
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from core.clock import now_ms
from core.metrics import cache_lookups
from features.online import Raw
from platform_services import trending
from platform_services.storage.models import User
from serving.feed import page_cache
from serving.feed.degrade import Trace
from serving.feed.filters import Viewer, load_viewer
from serving.feed.services import FeedServices

TRENDING_TTL_S = 5.0


class UnknownUser(LookupError):
    """A valid token for a user that no longer exists (or whose account was deleted): 401."""


# The columns a feed needs of its viewer, as a Core row: the ORM's load of the whole user row
# was most of the viewer read (345 -> 130 us CPU with the social statement's union, SQLite).
_VIEWER = select(User.id, User.region).where(User.id == bindparam("user"),
                                             User.deleted_at.is_(None))


def read_viewer(session: Session, user_id: int) -> Viewer:
    """The user (region) and their social context; the session's connection is released
    after. An unknown or deleted account (a token that outlived it): :class:`UnknownUser`."""
    user = session.connection().execute(_VIEWER, {"user": user_id}).first()
    if user is None:
        session.rollback()
        raise UnknownUser(user_id)
    viewer = load_viewer(session, user)
    session.commit()  # no connection held while sources, features and ranking run
    return viewer


@dataclass(frozen=True)
class UserState:
    seen: np.ndarray  # every video the viewer has been shown or watched (unsorted, int64)
    features: Raw | None  # the user's raw online features; None: unavailable (degraded)


def read_user_state(svc: FeedServices, user_id: int, trace: Trace) -> UserState:
    """The seen set and the user's features, in one round trip where they share a Redis."""
    reader = svc.features
    shared = reader is not None and reader.direct is not None and svc.features_share_redis
    exposures = np.zeros(0, np.int64)
    feats: Raw | None = None
    if shared:
        assert reader is not None and reader.direct is not None
        try:
            (feats,), (members,) = reader.direct.read_with(
                [reader.user_request(user_id)], [page_cache.seen_command(user_id)])
            exposures = page_cache.parse_seen(members)
        except redis.RedisError as exc:
            trace.degrade("cache", exc)
            trace.degrade("features", exc)
    else:
        try:
            exposures = page_cache.read_seen(svc.redis, user_id)
        except redis.RedisError as exc:
            trace.degrade("cache", exc)
        if reader is None:
            trace.degrade("features", "no online feature reader")
        else:
            try:
                feats = reader.read_user(user_id)
            except Exception as exc:
                trace.degrade("features", exc)
    watched = reader.seen(feats) if reader is not None and feats is not None else exposures[:0]
    return UserState(np.concatenate([exposures, watched]), feats)


class TrendingCache:
    """``ids(window, region, n)``: the top trending videos, at most ``ttl_s`` old."""

    def __init__(self, r: redis.Redis, ttl_s: float = TRENDING_TTL_S) -> None:
        self.r, self.ttl_s = r, ttl_s
        self._lists: dict[tuple[str, str | None], tuple[float, int, np.ndarray]] = {}
        self._lock = threading.Lock()

    def ids(self, window: str, region: str | None, n: int) -> np.ndarray:
        """Raises ``redis.RedisError`` when the list is stale and Redis cannot be read."""
        key = (window, region)
        hit = self._lists.get(key)
        if hit is not None and hit[0] > time.monotonic() and hit[1] >= n:
            cache_lookups("feed_trending_list", 1, 0)
            return hit[2][:n]
        cache_lookups("feed_trending_list", 0, 1)
        got = trending.top(self.r, window, region, None, max(n, 1), now_ms=now_ms())
        ids = np.fromiter((v for v, _ in got), np.int64, len(got))
        with self._lock:
            if len(self._lists) > 1024:  # regions are few; bound it anyway
                self._lists.clear()
            self._lists[key] = (time.monotonic() + self.ttl_s, n, ids)
        return ids
