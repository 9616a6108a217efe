"""Trending counters on a real Redis: windows, regions, topics, expiry of old buckets."""

from __future__ import annotations

import redis

from core.clock import DAY_MS, HOUR_MS
from platform_services.trending import Hit, add_counts, top


def test_windows_regions_and_topics(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url + "?db=3")
    r.flushdb()
    now = 1_800_000_000_000
    add_counts(r, [
        Hit(now - 1 * HOUR_MS, 1, "north", "pets", 5.0),  # recent, north, pets
        Hit(now - 2 * HOUR_MS, 2, "south", "cars", 3.0),
        Hit(now - 3 * DAY_MS, 3, "north", "cars", 50.0),  # in 7d, not in 24h
        Hit(now - 20 * DAY_MS, 4, "north", "pets", 80.0),  # only in 30d
        Hit(now - 40 * DAY_MS, 5, "north", "pets", 99.0),  # too old for any window
    ], now_ms=now)
    ids = lambda *a, **k: [v for v, _ in top(r, *a, now_ms=now, cache_s=0.001, **k)]  # noqa: E731
    assert ids("24h") == [1, 2]
    assert ids("7d") == [3, 1, 2]
    assert ids("30d") == [4, 3, 1, 2]
    assert ids("30d", region="north") == [4, 3, 1]
    assert ids("30d", category="cars") == [3, 2]
    assert ids("7d", region="north", category="pets") == [1]
    assert ids("24h", region="east") == []
    # Increments add up; the union is recomputed once its cache slot passes.
    add_counts(r, [Hit(now - HOUR_MS, 2, "south", "cars", 10.0)], now_ms=now)
    assert top(r, "24h", now_ms=now + 10, cache_s=0.001)[0] == (2, 13.0)
    buckets = r.keys("trend:h:*") + r.keys("trend:d:*")
    assert buckets and all(r.ttl(k) > 0 for k in buckets), "every bucket expires"
