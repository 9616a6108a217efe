"""Trending counters: engagement per video in time buckets, by viewer region and video topic.

Each interaction adds its weight to one hourly and one daily Redis sorted set for each of
(region, topic), (region, all), (all, topic) and (all, all), so any window is the union of a
few buckets: 24h = the last 25 hourly buckets, 7d / 30d = the last 8 / 31 daily ones. Buckets
expire on their own. A union is computed at most once per ``cache_s`` per (window, region,
topic) and kept under a few replica keys, and each process keeps its own copy for a couple of
seconds, so a viral list is never one hot Redis key (see :func:`top`).

The ``trending`` worker applies ``user.interaction`` events; the world loader seeds counters
from a data set's log with the same :func:`add_counts`. Redis writes are not part of the
worker's DB transaction, so a crash between the two can count an event twice: tolerable for
a popularity signal.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from core import clock
from core.clock import DAY_MS, HOUR_MS
from core.config import Settings
from core.events import Action, Event, UserInteraction
from core.metrics import cache_lookups

ALL = "all"
WINDOWS: dict[str, tuple[str, int, int]] = {  # name -> (granularity, bucket ms, buckets)
    "24h": ("h", HOUR_MS, 25),
    "7d": ("d", DAY_MS, 8),
    "30d": ("d", DAY_MS, 31),
}
_KEEP_MS = {"h": 26 * HOUR_MS, "d": 32 * DAY_MS}
WEIGHTS = {Action.VIEW: 1.0, Action.WATCH: 1.0, Action.COMMENT: 2.0, Action.LIKE: 3.0,
           Action.SHARE: 5.0}
PREFIX = "trend"


@dataclass(frozen=True)
class Hit:
    """One weighted engagement: when, which video, the viewer's region, the video's topic."""

    ts_ms: int
    video_id: int
    region: str | None
    category: str | None
    weight: float = 1.0


def _key(gran: str, bucket: int, region: str, category: str) -> str:
    return f"{PREFIX}:{gran}:{bucket}:{region}:{category}"


def add_counts(r: redis.Redis, hits: Iterable[Hit], now_ms: int | None = None) -> int:
    """Add hits to their buckets (one pipelined round trip); hits too old to matter are
    dropped. Returns how many sorted-set increments were sent."""
    now_ms = now_ms or clock.now_ms()
    sums: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    expiry: dict[str, int] = {}
    for h in hits:
        for gran, size in (("h", HOUR_MS), ("d", DAY_MS)):
            if h.ts_ms < now_ms - _KEEP_MS[gran]:
                continue
            bucket = h.ts_ms // size
            for region in {h.region or ALL, ALL}:
                for category in {h.category or ALL, ALL}:
                    key = _key(gran, bucket, region, category)
                    sums[key][h.video_id] += h.weight
                    expiry[key] = (bucket + 1) * size + _KEEP_MS[gran]
    pipe = r.pipeline(transaction=False)
    n = 0
    for key, videos in sums.items():
        for video_id, weight in videos.items():
            pipe.zincrby(key, weight, video_id)
            n += 1
        pipe.pexpireat(key, expiry[key])
    pipe.execute()
    return n


# Hot-key safety (the design's "hot partition" concern): every feed request of every user
# reads the same few trending lists. Each process keeps its own copy of a list for
# ``LOCAL_TTL_S`` (one thread refreshes it while the others wait for that one answer: single
# flight), so N API processes cost at most N reads of a list per period whatever the request
# rate; and each union is stored under ``REPLICAS`` keys that readers pick at random, so on a
# Redis Cluster the reads of one viral list spread over several slots instead of one node.
LOCAL_TTL_S = 2.0
REPLICAS = 4


@dataclass
class _Entry:
    expires: float
    value: list[tuple[int, float]]


class _LocalCache:
    def __init__(self) -> None:
        self.entries: dict[tuple, _Entry] = {}
        self.locks: dict[tuple, threading.Lock] = defaultdict(threading.Lock)
        self.guard = threading.Lock()

    def get(self, key: tuple, ttl_s: float,
            load: Callable[[], list[tuple[int, float]]]) -> list[tuple[int, float]]:
        hit = self.entries.get(key)
        if hit is not None and hit.expires > time.monotonic():
            cache_lookups("trending_local", 1, 0)
            return hit.value
        cache_lookups("trending_local", 0, 1)  # this thread loads or waits for the one that does
        with self.guard:
            lock = self.locks[key]
        with lock:  # single flight: the first loads, the rest get its answer
            hit = self.entries.get(key)
            if hit is not None and hit.expires > time.monotonic():
                return hit.value
            value = load()
            if len(self.entries) > 10_000:
                self.entries.clear()
            self.entries[key] = _Entry(time.monotonic() + ttl_s, value)
            return value


_local = _LocalCache()


def top(r: redis.Redis, window: str, region: str | None = None, category: str | None = None,
        n: int = 100, now_ms: int | None = None, cache_s: float = 30.0,
        local_ttl_s: float = LOCAL_TTL_S) -> list[tuple[int, float]]:
    """The ``n`` videos with the most weighted engagement in ``window`` as (id, score); at
    most ``min(local_ttl_s, cache_s)`` old in this process, ``cache_s`` in Redis."""
    ttl = min(local_ttl_s, cache_s)
    if ttl <= 0.01:
        return _top(r, window, region, category, n, now_ms, cache_s)
    key = (id(r.connection_pool), window, region, category, n, cache_s)
    return _local.get(key, ttl, lambda: _top(r, window, region, category, n, now_ms, cache_s))


def _top(r: redis.Redis, window: str, region: str | None, category: str | None, n: int,
         now_ms: int | None, cache_s: float) -> list[tuple[int, float]]:
    gran, size, count = WINDOWS[window]
    now_ms = now_ms or clock.now_ms()
    region, category = region or ALL, category or ALL
    latest = now_ms // size
    # The cache key moves with a slice of time, so a union is at most ``cache_s`` old.
    slot = now_ms // max(1, int(cache_s * 1000))
    base = f"{PREFIX}:u:{window}:{region}:{category}:{slot}"
    replica = f"{base}:r{random.randrange(REPLICAS)}"
    pipe = r.pipeline(transaction=False)
    pipe.exists(replica)
    pipe.zrevrange(replica, 0, n - 1, withscores=True)
    exists, got = pipe.execute()
    cache_lookups("trending_union", bool(exists), not exists)
    if not exists:
        keys = [_key(gran, b, region, category) for b in range(latest - count + 1, latest + 1)]
        keys.append(f"{PREFIX}:empty")  # a union of nothing still leaves a key behind
        ttl_ms = max(1, int(cache_s * 2000))
        pipe = r.pipeline(transaction=False)
        for k in range(REPLICAS):
            pipe.zunionstore(f"{base}:r{k}", keys)
            pipe.zadd(f"{base}:r{k}", {"-1": float("-inf")})  # marks "computed", never shown
            pipe.pexpire(f"{base}:r{k}", ttl_ms)
        pipe.zrevrange(replica, 0, n, withscores=True)
        got = pipe.execute()[-1]
    return [(int(v), float(s)) for v, s in got if v != b"-1"][:n]


# --- the worker ------------------------------------------------------------------------------


def hits_from_events(session: Session, events: list[Event]) -> list[Hit]:
    """Weighted hits of a batch of interactions, with regions and topics from the DB."""
    from platform_services.storage.models import User, Video

    acts = [e for e in events if isinstance(e, UserInteraction) and e.video_id is not None
            and e.action in WEIGHTS]
    if not acts:
        return []
    users = {e.user_id for e in acts}
    videos = {e.video_id for e in acts}
    region = dict(session.execute(select(User.id, User.region).where(User.id.in_(users))).all())
    topic = dict(session.execute(select(Video.id, Video.category).where(Video.id.in_(videos)))
                 .all())
    return [Hit(int(e.occurred_at.timestamp() * 1000), int(e.video_id), region.get(e.user_id),
                topic.get(e.video_id), WEIGHTS[e.action]) for e in acts]


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """``reelrank worker trending``: keep the counters from ``user.interaction``."""
    from platform_services.bus.worker import Worker, WorkerConfig
    from platform_services.runtime import Runtime
    from platform_services.storage.cache import redis_client

    rt = Runtime.from_settings(settings)
    r = redis_client(settings.redis_url)

    def handle(session: Session, events: list[Event]) -> None:
        add_counts(r, hits_from_events(session, events))

    worker = Worker("trending", ("user.interaction",), handle, rt.bus, rt.sessions,
                    WorkerConfig(session_timeout_ms=settings.bus_session_timeout_ms))
    try:
        await worker.run(stop)
    finally:
        r.close()
        await rt.close()
