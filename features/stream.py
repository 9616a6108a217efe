"""``reelrank worker features``: real-time features from the event stream, pushed through Feast.

Consumes ``user.interaction`` and ``video.processed`` (consumer group ``features``) and keeps
three push views fresh within about a second:

- ``video_realtime``: per-minute views/likes of the last hour (see :mod:`features.windows`);
- ``user_realtime``: the last :data:`LAST_WATCHED` watched videos, the seen set (videos of the
  newest :data:`RECENT_CAP` events), the current session's start, size and topics;
- ``video_fresh``: a new upload's creator, duration and readiness before any batch build.

Correctness under at-least-once delivery: the counters and the recent-event lists are state
tables (:mod:`features.stream_state`) updated in the worker's transaction together with the
processed event ids, so a redelivered event is skipped; what is pushed is recomputed from that
state (absolute values), so a push repeated after a crash is harmless. An interaction counts in
the minute it *happened* if it is at most ``feature_lateness_s`` late (older ones only reach
the batch features); one stamped more than ``feature_max_future_s`` ahead is dead-lettered.
Pushes (``write_to_online_store`` of the view each push source feeds) happen inside the
transaction, so a newer state of an entity is always written after an older one. If the
online store is down the batch fails and the framework retries it, and after
``max_attempts`` dead-letters it (replayable from the DLQ).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
from prometheus_client import Counter
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.config import Settings
from core.events import Action, Event, UserInteraction, VideoProcessed
from features.online import FeastBackend, RedisBackend, open_backend
from features.repo import TS_FIELD
from features.store import apply_repo, open_store, repo_dir
from features.stream_state import UserRecent, VideoMinute
from features.windows import BUCKET_S, N_BUCKETS, SESSION_GAP_S, minute_of, pack
from platform_services.bus.worker import Worker, WorkerConfig
from platform_services.runtime import Runtime
from platform_services.storage.db import upsert_insert

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)

TOPICS = ("user.interaction", "video.processed")
GROUP = "features"
WATCH_ACTIONS = frozenset({Action.VIEW, Action.WATCH})
LAST_WATCHED = 20
RECENT_CAP = 200
SESSION_TOPICS = 5
TOPIC_TTL_S = 600.0

LATE = Counter("reelrank_feature_late_events", "Interactions too late for the real-time windows")
PUSHED = Counter("reelrank_feature_rows_pushed", "Rows pushed to the online store", ["view"])


def user_features(events: list[list[Any]]) -> dict[str, Any]:
    """The ``user_realtime`` fields from recent events ``[ts_ms, video_id, action, topic]``."""
    newest_first = sorted(events, key=lambda e: e[0], reverse=True)
    watched = [e[1] for e in newest_first if e[1] is not None and e[2] in WATCH_ACTIONS]
    seen = [e[1] for e in newest_first if e[1] is not None]
    session = newest_first[:1]
    for prev, cur in zip(newest_first, newest_first[1:], strict=False):
        if prev[0] - cur[0] > SESSION_GAP_S * 1000:
            break
        session.append(cur)
    topics = list(dict.fromkeys(e[3] for e in session if e[3]))
    return {
        "last_watched": list(dict.fromkeys(watched))[:LAST_WATCHED],
        "seen": list(dict.fromkeys(seen)),
        "session_topics": topics[:SESSION_TOPICS],
        "session_start_s": session[-1][0] // 1000 if session else 0,
        "session_events": len(session),
        "last_event_s": newest_first[0][0] // 1000 if newest_first else 0,
    }


class TopicCache:
    """Video id -> topic (``video_stats:topic`` in the online store), cached for a while."""

    def __init__(self, backend: FeastBackend | RedisBackend, ttl_s: float = TOPIC_TTL_S) -> None:
        self.backend, self.ttl_s = backend, ttl_s
        self._cache: dict[int, tuple[str, float]] = {}

    def get(self, video_ids: Iterable[int]) -> dict[int, str]:
        now = time.monotonic()
        wanted = set(video_ids)
        stale = [v for v in wanted if v not in self._cache or self._cache[v][1] < now]
        if stale:
            (raw,) = self.backend.read([(["video_stats:topic"], {"video_id": stale})])
            for v, topic in zip(stale, raw["video_stats:topic"], strict=True):
                self._cache[v] = (topic or "", now + self.ttl_s)
            if len(self._cache) > 500_000:
                self._cache = {v: self._cache[v] for v in wanted}
        return {v: self._cache[v][0] for v in wanted}


class FeatureStream:
    """The ``features`` consumer: :meth:`admit` screens events, :meth:`apply` is the handler."""

    def __init__(
        self,
        store: FeatureStore,
        backend: FeastBackend | RedisBackend,
        lateness_s: int,
        max_future_s: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.lateness_s = lateness_s
        self.max_future_s = max_future_s
        self.clock = clock
        self.topics = TopicCache(backend)
        self._next_prune = 0.0

    def admit(self, event: Event) -> str | None:
        ahead = (event.occurred_at - self.clock()).total_seconds()
        if ahead > self.max_future_s:
            return (
                f"occurred_at {event.occurred_at.isoformat()} is {ahead:.0f} s in the future "
                f"(limit {self.max_future_s} s)"
            )
        return None

    def apply(self, session: Session, events: list[Event]) -> None:
        now = self.clock()
        interactions = [e for e in events if isinstance(e, UserInteraction)]
        processed = [e for e in events if isinstance(e, VideoProcessed)]
        pushes = {
            "video_realtime": self._videos(session, interactions, now),
            "user_realtime": self._users(session, interactions, now),
            "video_fresh": self._fresh(processed, now),
        }
        for view, df in pushes.items():
            if df is not None and len(df):
                # What push(<view>_push) does for the one view that push source feeds, without
                # push()'s rescan of every view in the registry (35 ms a call).
                self.store.write_to_online_store(view, df)
                PUSHED.labels(view).inc(len(df))

    def _videos(
        self, session: Session, events: list[UserInteraction], now: datetime
    ) -> pd.DataFrame | None:
        now_minute = minute_of(now.timestamp())
        oldest = now.timestamp() - self.lateness_s
        deltas: dict[tuple[int, int], list[int]] = {}
        for e in events:
            if e.video_id is None:
                continue
            if e.occurred_at.timestamp() < oldest:
                LATE.inc()
                continue
            likes = {Action.LIKE: 1, Action.UNLIKE: -1}.get(e.action, 0)
            views = int(e.action in WATCH_ACTIONS)
            if likes or views:
                key = (e.video_id, min(minute_of(e.occurred_at.timestamp()), now_minute))
                d = deltas.setdefault(key, [0, 0])
                d[0] += views
                d[1] += likes
        if not deltas:
            return None
        rows = [
            {"video_id": v, "minute": m, "views": d[0], "likes": d[1]}
            for (v, m), d in sorted(deltas.items())  # one lock order for concurrent members
        ]
        stmt = upsert_insert(session, VideoMinute)
        stmt = stmt.on_conflict_do_update(
            index_elements=["video_id", "minute"],
            set_={
                "views": VideoMinute.views + stmt.excluded.views,
                "likes": VideoMinute.likes + stmt.excluded.likes,
            },
        )
        session.execute(stmt, rows)
        self._prune(session, now_minute)
        videos = sorted({v for v, _ in deltas})
        first = now_minute - N_BUCKETS + 1
        buckets = {v: ([0] * N_BUCKETS, [0] * N_BUCKETS) for v in videos}
        for v, minute, views, likes in session.execute(
            select(
                VideoMinute.video_id, VideoMinute.minute, VideoMinute.views, VideoMinute.likes
            ).where(VideoMinute.video_id.in_(videos), VideoMinute.minute >= first)
        ):
            buckets[v][0][now_minute - minute] = views
            buckets[v][1][now_minute - minute] = likes
        return pd.DataFrame(
            {
                "video_id": videos,
                TS_FIELD: now,
                "view_buckets": [pack(buckets[v][0]) for v in videos],
                "like_buckets": [pack(buckets[v][1]) for v in videos],
                "head_minute": now_minute,
            }
        )

    def _prune(self, session: Session, now_minute: int) -> None:
        """Drop minutes that left every window (about once a minute: the table stays small)."""
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + BUCKET_S
            session.execute(delete(VideoMinute).where(VideoMinute.minute <= now_minute - N_BUCKETS))

    def _users(
        self, session: Session, events: list[UserInteraction], now: datetime
    ) -> pd.DataFrame | None:
        if not events:
            return None
        topics = self.topics.get(e.video_id for e in events if e.video_id is not None)
        new: dict[int, list[list[Any]]] = {}
        for e in events:
            ts_ms = int(e.occurred_at.timestamp() * 1000)
            topic = topics.get(e.video_id, "") if e.video_id is not None else ""
            new.setdefault(e.user_id, []).append([ts_ms, e.video_id, e.action.value, topic])
        users = sorted(new)
        state = {
            r.user_id: r
            for r in session.scalars(
                select(UserRecent).where(UserRecent.user_id.in_(users)).with_for_update()
            )
        }
        features = []
        for u in users:
            row = state.get(u)
            if row is None:
                row = UserRecent(user_id=u, events="[]")
                session.add(row)
            merged = sorted(json.loads(row.events) + new[u], key=lambda e: e[0])[-RECENT_CAP:]
            row.events = json.dumps(merged, separators=(",", ":"))
            features.append(user_features(merged))
        return pd.DataFrame({"user_id": users, TS_FIELD: now, **pd.DataFrame(features)})

    @staticmethod
    def _fresh(events: list[VideoProcessed], now: datetime) -> pd.DataFrame | None:
        if not events:
            return None
        latest = {e.video_id: e for e in sorted(events, key=lambda e: e.occurred_at)}
        return pd.DataFrame(
            {
                "video_id": list(latest),
                TS_FIELD: now,
                "creator_id": [e.owner_id for e in latest.values()],
                "duration_ms": [e.duration_ms or 0 for e in latest.values()],
                "ready": [int(e.status == "ready") for e in latest.values()],
                "upload_ts_s": [int(e.occurred_at.timestamp()) for e in latest.values()],
            }
        )


def open_stream(settings: Settings) -> FeatureStream:
    """The handler on the configured store (the repo is applied first if it never was)."""
    if not (repo_dir(settings) / "registry.db").exists():
        apply_repo(settings)
    return FeatureStream(
        open_store(settings),
        open_backend(settings),
        settings.feature_lateness_s,
        settings.feature_max_future_s,
    )


async def run(settings: Settings, stop: asyncio.Event, config: WorkerConfig | None = None) -> None:
    """Entry point of ``reelrank worker features``."""
    stream = open_stream(settings)
    rt = Runtime.from_settings(settings)
    worker = Worker(
        GROUP,
        TOPICS,
        stream.apply,
        rt.bus,
        rt.sessions,
        config or WorkerConfig(session_timeout_ms=settings.bus_session_timeout_ms),
        admit=stream.admit,
    )
    try:
        await worker.run(stop)
    finally:
        await rt.close()
